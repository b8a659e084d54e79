"""Building blocks of the Qwen2-VL vision tower (attention, MLP, block, merger), from vLLM's layers.

Activations are 2-D: [num_patches, features]. Tensor parallelism splits attention heads (qkv column
parallel per head, proj row parallel), the MLP hidden dim and the merger's hidden dim; every block
output is replicated across ranks. `disable_tp` (vLLM's data-parallel ViT mode) keeps all weights whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from vllm.model_executor.layers.activation import QuickGELU, get_act_fn
from vllm.model_executor.layers.attention import MMEncoderAttention
from vllm.model_executor.layers.linear import ColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig

from .vision_rotary import apply_vision_rotary_


@dataclass
class VisionAttnMeta:
    """Per-forward data shared by all blocks (built once from grid_thw)."""

    cu_seqlens: torch.Tensor  # int32 [num_frames + 1] (FlashInfer: its own layout); CPU for torch SDPA
    max_seqlen: torch.Tensor  # int32 scalar on CPU (the FA wrappers call .item(): no device sync)
    sequence_lengths: torch.Tensor | None  # FlashInfer cuDNN only
    cos: torch.Tensor  # fp32 [N, head_dim/2]
    sin: torch.Tensor  # fp32 [N, head_dim/2]


class VisionActivation(nn.Module):
    """The block MLP's activation. QuickGELU runs vLLM's fused CUDA kernel on GPU tensors whatever the
    custom-op config says (the ViT runs eagerly, where the native form costs three passes over
    [N, 4*embed]), and its native form elsewhere (CPU)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.quick = name == "quick_gelu"
        self.act = QuickGELU() if self.quick else get_act_fn(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quick:
            return self.act.forward_cuda(x) if x.is_cuda else self.act.forward_native(x)
        return self.act(x)


class Qwen2VisionAttention(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        tp_size: int,
        disable_tp: bool,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if num_heads % tp_size:
            raise ValueError(f"num_heads {num_heads} is not divisible by the tensor parallel size {tp_size}")
        self.head_dim = embed_dim // num_heads
        self.local_heads = num_heads // tp_size
        # Output per rank: [q heads of this rank | k heads | v heads], head_dim each.
        self.qkv = QKVParallelLinear(
            hidden_size=embed_dim,
            head_size=self.head_dim,
            total_num_heads=num_heads,
            total_num_kv_heads=num_heads,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.qkv",
            disable_tp=disable_tp,
        )
        self.proj = RowParallelLinear(
            embed_dim,
            embed_dim,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.proj",
            disable_tp=disable_tp,
        )
        self.attn = MMEncoderAttention(
            num_heads=self.local_heads,
            head_size=self.head_dim,
            scale=self.head_dim**-0.5,
            prefix=f"{prefix}.attn",
        )

    def forward(self, x: torch.Tensor, meta: VisionAttnMeta) -> torch.Tensor:
        seqlen = x.shape[0]
        qkv, _ = self.qkv(x)  # [S, 3 * Hl * D]
        heads = qkv.view(seqlen, 3 * self.local_heads, self.head_dim)  # [S, 3Hl, D]
        apply_vision_rotary_(heads[:, : 2 * self.local_heads], meta.cos, meta.sin)  # q|k, in place
        # [S, 3Hl, D] -> 3 x [1, S, Hl, D] strided views (no copies)
        q, k, v = heads.unsqueeze(0).split(self.local_heads, dim=2)
        out = self.attn(
            q,
            k,
            v,
            cu_seqlens=meta.cu_seqlens,
            max_seqlen=meta.max_seqlen,
            sequence_lengths=meta.sequence_lengths,
        )  # [1, S, Hl, D]
        out, _ = self.proj(out.reshape(seqlen, self.local_heads * self.head_dim))
        return out


class Qwen2VisionMLP(nn.Module):
    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        hidden_act: str,
        disable_tp: bool,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.fc1 = ColumnParallelLinear(
            dim,
            hidden_dim,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.fc1",
            disable_tp=disable_tp,
        )
        self.act = VisionActivation(hidden_act)
        self.fc2 = RowParallelLinear(
            hidden_dim,
            dim,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.fc2",
            disable_tp=disable_tp,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.fc1(x)
        x, _ = self.fc2(self.act(x))
        return x


class Qwen2VisionBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden_dim: int,
        hidden_act: str,
        norm_eps: float,
        tp_size: int,
        disable_tp: bool,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Qwen2VisionAttention(
            dim, num_heads, tp_size, disable_tp, quant_config=quant_config, prefix=f"{prefix}.attn"
        )
        self.mlp = Qwen2VisionMLP(
            dim, mlp_hidden_dim, hidden_act, disable_tp, quant_config=quant_config, prefix=f"{prefix}.mlp"
        )

    def forward(self, x: torch.Tensor, meta: VisionAttnMeta) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), meta)
        return x + self.mlp(self.norm2(x))


class Qwen2VisionPatchMerger(nn.Module):
    """LayerNorm each patch, concatenate each merge window's patches (consecutive in the input),
    then Linear -> GELU -> Linear to the LLM hidden size. Submodule names match the checkpoint
    (ln_q, mlp.0, mlp.2)."""

    def __init__(
        self,
        out_dim: int,
        context_dim: int,
        merge_size: int,
        norm_eps: float,
        disable_tp: bool,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.hidden_size = context_dim * merge_size**2
        self.ln_q = nn.LayerNorm(context_dim, eps=norm_eps)
        self.mlp = nn.ModuleList(
            [
                ColumnParallelLinear(
                    self.hidden_size,
                    self.hidden_size,
                    bias=True,
                    quant_config=quant_config,
                    prefix=f"{prefix}.mlp.0",
                    disable_tp=disable_tp,
                ),
                nn.GELU(),
                RowParallelLinear(
                    self.hidden_size,
                    out_dim,
                    bias=True,
                    quant_config=quant_config,
                    prefix=f"{prefix}.mlp.2",
                    disable_tp=disable_tp,
                ),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_q(x).view(-1, self.hidden_size)  # [N, E] -> [N / m^2, m^2 * E]
        fc1, act, fc2 = self.mlp
        x, _ = fc1(x)
        x, _ = fc2(act(x))
        return x

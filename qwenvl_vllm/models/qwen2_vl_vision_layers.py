"""Building blocks of the Qwen2-VL vision tower (attention, MLP, block, merger), from vLLM's layers.

Activations are 2-D: [num_patches, features]. Tensor parallelism splits attention heads (qkv column
parallel per head, proj row parallel), the MLP hidden dim and the merger's hidden dim; every block
output is replicated across ranks. `use_data_parallel` (vLLM's data-parallel ViT mode) keeps all
weights whole.

The residual stream is fused: each block takes the residual `x` and its first norm's output `h`, and
returns the next pair, normalised with the following module's norm (next block's norm1, or the
merger's ln_q) in the same pass as the residual add (`kernels.layernorm.add_layernorm`).

With fp8 on, the block linears hold e4m3 weights (`quantize_fp8_`) and read `Fp8Rows` activations
that the fused norm / QuickGELU kernels emit directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from vllm.distributed import parallel_state
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.attention import MMEncoderAttention
from vllm.model_executor.layers.linear import ColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig

from ..kernels.fp8 import Fp8Rows, fp8_linear, quantize_rows, quantize_weight
from ..kernels.layernorm import add_layernorm
from ..kernels.quick_gelu import quick_gelu
from .vision_rotary import apply_vision_rotary_

Activation = torch.Tensor | Fp8Rows


@dataclass
class VisionAttnMeta:
    """Per-forward data shared by all blocks (built once from grid_thw)."""

    cu_seqlens: torch.Tensor  # int32 [num_frames + 1] (FlashInfer: its own layout); CPU for torch SDPA
    max_seqlen: torch.Tensor  # int32 scalar on CPU (the FA wrappers call .item(): no device sync)
    sequence_lengths: torch.Tensor | None  # FlashInfer cuDNN only
    cos: torch.Tensor  # fp32 [N, head_dim/2]
    sin: torch.Tensor  # fp32 [N, head_dim/2]


def vision_tp_size(use_data_parallel: bool) -> int:
    """Ranks the tower's weights are split over: 1 in vLLM's data-parallel ViT mode."""
    return 1 if use_data_parallel else parallel_state.get_tensor_model_parallel_world_size()


def frame_seqlens(grid: list[tuple[int, int, int]]) -> list[int]:
    """Attention sequence lengths of a grid: one sequence per frame, h * w patches each."""
    return [h * w for t, h, w in grid for _ in range(t)]


def linear(layer: nn.Module, x: Activation) -> torch.Tensor:
    """A vLLM linear layer on a bf16/fp16 activation, or its fp8 twin (after `quantize_fp8_`) on fp8 rows."""
    if isinstance(x, Fp8Rows):
        return fp8_linear(x, layer.fp8_weight, layer.fp8_scale, layer.bias, layer.bias.dtype)
    out, _ = layer(x)
    return out


def quantize_fp8_(layer: nn.Module) -> None:
    """Give a loaded linear e4m3 weights with per-output-channel scales and drop its 16-bit weight."""
    q, scale = quantize_weight(layer.weight.data)
    layer.register_buffer("fp8_weight", q, persistent=False)
    layer.register_buffer("fp8_scale", scale, persistent=False)
    layer.weight.data = layer.weight.data.new_empty(0)


class VisionActivation(nn.Module):
    """The block MLP's activation; QuickGELU (Qwen2-VL's) goes through our kernel, which can also write
    fp8 rows for fc2 directly."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.quick = name == "quick_gelu"
        self.act = None if self.quick else get_act_fn(name)

    def forward(self, x: torch.Tensor, fp8: bool = False) -> Activation:
        if self.quick:
            return quick_gelu(x, fp8)
        y = self.act(x)
        return quantize_rows(y) if fp8 else y


class Qwen2VisionAttention(nn.Module):
    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        use_data_parallel: bool = False,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        tp_size = vision_tp_size(use_data_parallel)
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
            disable_tp=use_data_parallel,
        )
        self.proj = RowParallelLinear(
            embed_dim,
            embed_dim,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.proj",
            disable_tp=use_data_parallel,
        )
        self.attn = MMEncoderAttention(
            num_heads=self.local_heads,
            head_size=self.head_dim,
            scale=self.head_dim**-0.5,
            prefix=f"{prefix}.attn",
        )

    def forward(self, x: Activation, meta: VisionAttnMeta) -> torch.Tensor:
        qkv = linear(self.qkv, x)  # [S, 3 * Hl * D]
        seqlen = qkv.shape[0]
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
        out = out.reshape(seqlen, self.local_heads * self.head_dim)
        return linear(self.proj, quantize_rows(out) if isinstance(x, Fp8Rows) else out)


class Qwen2VisionMLP(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        hidden_dim: int,
        hidden_act: str,
        use_data_parallel: bool = False,
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
            disable_tp=use_data_parallel,
        )
        self.act = VisionActivation(hidden_act)
        self.fc2 = RowParallelLinear(
            hidden_dim,
            dim,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.fc2",
            disable_tp=use_data_parallel,
        )

    def forward(self, x: Activation) -> torch.Tensor:
        hidden = linear(self.fc1, x)
        return linear(self.fc2, self.act(hidden, fp8=isinstance(x, Fp8Rows)))


class Qwen2VisionBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)); see the module docstring for the
    fused residual stream."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_hidden_dim: int,
        hidden_act: str,
        norm_eps: float,
        use_data_parallel: bool = False,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Qwen2VisionAttention(
            embed_dim=dim,
            num_heads=num_heads,
            use_data_parallel=use_data_parallel,
            quant_config=quant_config,
            prefix=f"{prefix}.attn",
        )
        self.mlp = Qwen2VisionMLP(
            dim=dim,
            hidden_dim=mlp_hidden_dim,
            hidden_act=hidden_act,
            use_data_parallel=use_data_parallel,
            quant_config=quant_config,
            prefix=f"{prefix}.mlp",
        )

    def quantize_fp8_(self) -> None:
        for layer in (self.attn.qkv, self.attn.proj, self.mlp.fc1, self.mlp.fc2):
            quantize_fp8_(layer)

    def forward(
        self, x: torch.Tensor, h: Activation, meta: VisionAttnMeta, next_norm: nn.LayerNorm, fp8_next: bool
    ) -> tuple[torch.Tensor, Activation]:
        """(x, norm1(x)) -> (x', next_norm(x')); `h` is fp8 rows when this block runs in fp8."""
        fp8 = isinstance(h, Fp8Rows)
        n2 = self.norm2
        x, h = add_layernorm(x, self.attn(h, meta), n2.weight, n2.bias, n2.eps, fp8)
        return add_layernorm(x, self.mlp(h), next_norm.weight, next_norm.bias, next_norm.eps, fp8_next)


class Qwen2VisionPatchMerger(nn.Module):
    """Concatenate each merge window's normalised patches (consecutive in the input), then
    Linear -> GELU -> Linear to the LLM hidden size. Its LayerNorm `ln_q` is applied by the last block
    (fused with the residual add): forward takes ln_q(x). Submodule names match the checkpoint
    (ln_q, mlp.0, mlp.2)."""

    def __init__(
        self,
        *,
        d_model: int,
        context_dim: int,
        spatial_merge_size: int,
        norm_eps: float,
        use_data_parallel: bool = False,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.hidden_size = context_dim * spatial_merge_size**2
        self.ln_q = nn.LayerNorm(context_dim, eps=norm_eps)
        self.mlp = nn.ModuleList(
            [
                ColumnParallelLinear(
                    self.hidden_size,
                    self.hidden_size,
                    bias=True,
                    quant_config=quant_config,
                    prefix=f"{prefix}.mlp.0",
                    disable_tp=use_data_parallel,
                ),
                nn.GELU(),
                RowParallelLinear(
                    self.hidden_size,
                    d_model,
                    bias=True,
                    quant_config=quant_config,
                    prefix=f"{prefix}.mlp.2",
                    disable_tp=use_data_parallel,
                ),
            ]
        )

    def forward(self, normed: torch.Tensor) -> torch.Tensor:
        x = normed.view(-1, self.hidden_size)  # [N, E] -> [N / m^2, m^2 * E]
        fc1, act, fc2 = self.mlp
        x, _ = fc1(x)
        x, _ = fc2(act(x))
        return x

"""Qwen-VL v1 vision tower on vLLM layers: OpenCLIP ViT-bigG (448 px, patch 14) + one-layer resampler.

Checkpoint names (under `transformer.visual.`): conv1, positional_embedding, ln_pre,
transformer.resblocks.N.{ln_1, attn.in_proj, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj},
attn_pool.{query, pos_embed, kv_proj, attn.in_proj_weight/bias, attn.out_proj, ln_q, ln_kv}, ln_post, proj.
The tower is never quantized (Qwen-VL-Chat-Int4 keeps it in fp16), so no quant_config reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn
from vllm.distributed import divide, get_tensor_model_parallel_world_size
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.attention import MMEncoderAttention
from vllm.model_executor.layers.conv import Conv2dLayer
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.resampler import Resampler2, get_abs_pos

from qwenvl_vllm.constants import QWEN_VL_POS_EMBED_ROWS, QWEN_VL_QUERIES

LAYER_NORM_EPS = 1e-6


def resampler_num_heads(output_dim: int) -> int:
    """Heads of the resampler's attention: output_dim // 128 as in the release (4096 -> 32).

    Tiny test configs (output_dim < 128) get one head so that the same rule builds them.
    """
    return max(1, output_dim // 128)


def vision_n_queries(visual: Mapping[str, Any]) -> int:
    return int(visual.get("n_queries", QWEN_VL_QUERIES))


class QwenVLVisualAttention(nn.Module):
    """Self-attention whose fused `in_proj` is laid out per head as [q | k | v] (head_dim each).

    That layout (Qwen-VL's VisualAttention, unlike nn.MultiheadAttention's [Q; K; V]) means a column
    split of the output keeps whole heads on each tensor-parallel rank.
    """

    def __init__(self, width: int, num_heads: int, *, prefix: str = "") -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"visual width {width} is not divisible by heads {num_heads}")
        self.head_dim = width // num_heads
        self.num_heads = divide(num_heads, get_tensor_model_parallel_world_size())
        self.in_proj = ColumnParallelLinear(
            width, 3 * width, bias=True, quant_config=None, prefix=f"{prefix}.in_proj"
        )
        self.out_proj = RowParallelLinear(
            width, width, bias=True, quant_config=None, prefix=f"{prefix}.out_proj"
        )
        self.attn = MMEncoderAttention(
            self.num_heads, self.head_dim, scale=self.head_dim**-0.5, prefix=f"{prefix}.attn"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        qkv, _ = self.in_proj(x)  # [B, S, heads_local * 3 * head_dim]
        qkv = qkv.view(batch, seq, self.num_heads, 3, self.head_dim)
        q, k, v = (t.contiguous() for t in qkv.unbind(dim=3))  # each [B, S, heads_local, head_dim]
        out = self.attn(q, k, v)  # [B, S, heads_local, head_dim]
        out, _ = self.out_proj(out.reshape(batch, seq, -1))
        return out


class QwenVLVisualMLP(nn.Module):
    def __init__(self, width: int, mlp_width: int, *, prefix: str = "") -> None:
        super().__init__()
        self.c_fc = ColumnParallelLinear(
            width, mlp_width, bias=True, quant_config=None, prefix=f"{prefix}.c_fc"
        )
        self.act = get_act_fn("gelu")  # exact (erf) GELU, as nn.GELU() in the release
        self.c_proj = RowParallelLinear(
            mlp_width, width, bias=True, quant_config=None, prefix=f"{prefix}.c_proj"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.c_fc(x)
        x, _ = self.c_proj(self.act(x))
        return x


class QwenVLVisualBlock(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_ratio: float, *, prefix: str = "") -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = QwenVLVisualAttention(width, num_heads, prefix=f"{prefix}.attn")
        self.ln_2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        # int() truncates as the release does: 1664 * 4.9231 -> 8192
        self.mlp = QwenVLVisualMLP(width, int(width * mlp_ratio), prefix=f"{prefix}.mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class QwenVLVisualTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, *, prefix: str = "") -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            QwenVLVisualBlock(width, heads, mlp_ratio, prefix=f"{prefix}.resblocks.{i}")
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


def _load_square_pos_embed(param: nn.Parameter, loaded: torch.Tensor) -> None:
    """Load a learned position table of any square size (the forward pass resizes it to the grid).

    The release stores 256 rows; accepting another square size keeps checkpoints that store the table
    at the patch grid size (1024) loadable too.
    """
    rows = loaded.shape[0]
    if loaded.dim() != 2 or math.isqrt(rows) ** 2 != rows or loaded.shape[1] != param.shape[1]:
        raise ValueError(
            f"positional_embedding must be [square, {param.shape[1]}], got {tuple(loaded.shape)}"
        )
    if loaded.shape != param.shape:
        param.data = torch.empty(loaded.shape, dtype=param.dtype, device=param.device)
    param.data.copy_(loaded)


class QwenVLVisionTransformer(nn.Module):
    """pixel_values [B, 3, S, S] -> image features [B, n_queries, output_dim].

    Keyword arguments are the checkpoint's `visual` config section (unknown keys are ignored).
    """

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        output_dim: int,
        n_queries: int = QWEN_VL_QUERIES,
        prefix: str = "",
        **_: Any,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        grid = math.isqrt(n_queries)
        if grid * grid != n_queries:
            raise ValueError(f"n_queries must be a square number, got {n_queries}")
        self.image_size = image_size
        self.grid_size = image_size // patch_size
        self.n_queries = n_queries
        self.output_dim = output_dim
        norm_layer = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)

        self.conv1 = Conv2dLayer(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        # a 16 x 16 grid of learned positions, resized (bicubic) to the patch grid as in the release
        self.positional_embedding = nn.Parameter(torch.empty(QWEN_VL_POS_EMBED_ROWS, width))
        self.positional_embedding.weight_loader = _load_square_pos_embed  # type: ignore[attr-defined]
        self.ln_pre = norm_layer(width)
        self.transformer = QwenVLVisualTransformer(
            width, layers, heads, mlp_ratio, prefix=f"{prefix}.transformer"
        )
        self.attn_pool = Resampler2(
            grid_size=grid,
            embed_dim=output_dim,
            num_heads=resampler_num_heads(output_dim),
            kv_dim=width,
            norm_layer=norm_layer,
            adaptive=False,  # Qwen-VL resizes its fixed 2-D sin-cos table to the key grid (bicubic)
            do_post_projection=False,  # ln_post / proj live here, named as in the checkpoint
            quant_config=None,
            prefix=f"{prefix}.attn_pool",
        )
        # Resampler2 builds pos_embed on the CPU in fp32 (from numpy); move it to the model's device and
        # dtype, else the query sum promotes to fp32 and nn.MultiheadAttention sees mixed dtypes.
        self.attn_pool.pos_embed.data = self.attn_pool.pos_embed.data.to(
            dtype=torch.get_default_dtype(), device=self.positional_embedding.device
        )
        self.ln_post = norm_layer(output_dim)
        self.proj = nn.Parameter(torch.empty(output_dim, output_dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.to(dtype=self.dtype, device=self.proj.device)
        x = self.conv1(x)  # [B, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [B, grid * grid, width]
        grid = math.isqrt(x.shape[1])
        x = x + get_abs_pos(self.positional_embedding, grid).to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)  # [B, grid * grid, width]
        x = self.attn_pool(x)  # [B, n_queries, output_dim]
        x = self.ln_post(x)
        return x @ self.proj

"""Residual add fused into LayerNorm, optionally emitting fp8 (e4m3) with one scale per row.

The vision tower's residual stream does `x = x + delta; h = norm(x)` twice per block. Done apart, that is
three passes over [N, E] for the add and two for the norm; fused, the sum is rounded to the stream's dtype
once (as the separate add does), normalised from that rounded value and both are written in one pass.
With `fp8=True` the normalised row is written as e4m3 plus a float32 scale per row (absmax / 448), which
is what the next fp8 GEMM reads, so no separate quantization pass exists.

CPU tensors (and `delta=None` with fp8 off) take the plain torch ops, which define the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fp8 import Fp8Rows, quantize_rows_native


def add_layernorm_native(
    x: torch.Tensor,
    delta: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    fp8: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | Fp8Rows]:
    """The unfused reference: (x + delta, layer_norm(x + delta)), the norm as fp8 rows if asked."""
    if delta is not None:
        x = x + delta
    h = F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    return x, (quantize_rows_native(h) if fp8 else h)


def add_layernorm(
    x: torch.Tensor,
    delta: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    fp8: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | Fp8Rows]:
    """(x + delta, LayerNorm of it) for x, delta [N, E]; one Triton pass on CUDA."""
    if not x.is_cuda:
        return add_layernorm_native(x, delta, weight, bias, eps, fp8)
    from ._layernorm_triton import add_layernorm_cuda

    return add_layernorm_cuda(x, delta, weight, bias, eps, fp8)

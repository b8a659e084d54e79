"""Triton kernel behind `layernorm.add_layernorm` (CUDA only; imported lazily)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fp8 import FP8_DTYPE, FP8_MAX, MIN_SCALE, Fp8Rows


@triton.jit
def _add_layernorm_kernel(
    X, D, X_OUT, Y, W, B, Q, S,
    stride_x, stride_d, stride_xo, stride_y, stride_q,
    n_cols, eps,
    HAS_DELTA: tl.constexpr, FP8: tl.constexpr, FP8_MAX_C: tl.constexpr, MIN_SCALE_C: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_DELTA:
        d = tl.load(D + row * stride_d + cols, mask=mask, other=0.0)
        # Rounded to the stream dtype before the norm reads it, exactly as a separate add would.
        x = (x.to(tl.float32) + d.to(tl.float32)).to(X_OUT.dtype.element_ty)
        tl.store(X_OUT + row * stride_xo + cols, x, mask=mask)
    xf = x.to(tl.float32)
    mean = tl.sum(xf, axis=0) / n_cols
    xc = tl.where(mask, xf - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    y = xc * rstd * w + b
    if FP8:
        # Quantize the value the unfused norm would have returned (rounded to the stream dtype).
        y = tl.where(mask, y.to(X_OUT.dtype.element_ty).to(tl.float32), 0.0)
        scale = tl.maximum(tl.max(tl.abs(y), axis=0) / FP8_MAX_C, MIN_SCALE_C)
        q = tl.clamp(y / scale, -FP8_MAX_C, FP8_MAX_C)
        tl.store(Q + row * stride_q + cols, q.to(Q.dtype.element_ty), mask=mask)
        tl.store(S + row, scale)
    else:
        tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


def add_layernorm_cuda(
    x: torch.Tensor,
    delta: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    fp8: bool,
) -> tuple[torch.Tensor, torch.Tensor | Fp8Rows]:
    n, e = x.shape
    if x.stride(1) != 1 or (delta is not None and (delta.shape != x.shape or delta.stride(1) != 1)):
        raise ValueError("add_layernorm wants row-contiguous [N, E] x and delta of the same shape")
    x_out = torch.empty_like(x) if delta is not None else x
    y = torch.empty_like(x) if not fp8 else x  # x: an unused placeholder pointer
    q = torch.empty((n, e), dtype=FP8_DTYPE, device=x.device) if fp8 else x
    s = torch.empty((n, 1), dtype=torch.float32, device=x.device) if fp8 else x
    block = triton.next_power_of_2(e)
    _add_layernorm_kernel[(n,)](
        x, delta if delta is not None else x, x_out, y, weight, bias, q, s,
        x.stride(0), delta.stride(0) if delta is not None else 0, x_out.stride(0), y.stride(0), q.stride(0),
        e, eps,
        HAS_DELTA=delta is not None, FP8=fp8, FP8_MAX_C=FP8_MAX, MIN_SCALE_C=MIN_SCALE,
        BLOCK=block, num_warps=4 if block <= 2048 else 8,
    )  # fmt: skip
    return x_out, (Fp8Rows(q, s) if fp8 else y)

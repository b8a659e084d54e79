"""Triton kernel behind `quick_gelu.quick_gelu(x, fp8=True)` (CUDA only; imported lazily)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fp8 import FP8_DTYPE, FP8_MAX, MIN_SCALE, Fp8Rows


@triton.jit
def _quick_gelu_fp8_kernel(
    X, Q, S, stride_x, stride_q, n_cols,
    FP8_MAX_C: tl.constexpr, MIN_SCALE_C: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    xf = x.to(tl.float32)
    # Rounded to the input dtype first: the value the bf16 activation would have held.
    y = (xf / (1.0 + tl.exp(-1.702 * xf))).to(x.dtype).to(tl.float32)
    y = tl.where(mask, y, 0.0)
    scale = tl.maximum(tl.max(tl.abs(y), axis=0) / FP8_MAX_C, MIN_SCALE_C)
    q = tl.clamp(y / scale, -FP8_MAX_C, FP8_MAX_C)
    tl.store(Q + row * stride_q + cols, q.to(Q.dtype.element_ty), mask=mask)
    tl.store(S + row, scale)


def quick_gelu_fp8_cuda(x: torch.Tensor) -> Fp8Rows:
    n, k = x.shape
    if x.stride(1) != 1:
        raise ValueError("quick_gelu fp8 wants a row-contiguous [N, K] input")
    q = torch.empty((n, k), dtype=FP8_DTYPE, device=x.device)
    s = torch.empty((n, 1), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(k)
    _quick_gelu_fp8_kernel[(n,)](
        x, q, s, x.stride(0), q.stride(0), k,
        FP8_MAX_C=FP8_MAX, MIN_SCALE_C=MIN_SCALE, BLOCK=block, num_warps=8 if block <= 8192 else 16,
    )  # fmt: skip
    return Fp8Rows(q, s)

"""QuickGELU (x * sigmoid(1.702 x)) of the vision MLP, optionally emitting fp8 rows for the next GEMM.

bf16/fp16 output runs vLLM's fused CUDA kernel on GPU tensors (our tower runs eagerly, where the native
form costs three passes over [N, 4 * E]). The fp8 output comes from one Triton pass that also finds each
row's scale, so the fc2 input is never written in bf16.
"""

from __future__ import annotations

import functools

import torch
from vllm.model_executor.layers.activation import QuickGELU

from .fp8 import Fp8Rows, quantize_rows_native


@functools.cache
def _op() -> QuickGELU:
    # A CustomOp reads vLLM's current config when built: build it on first use, not at import.
    return QuickGELU()


def quick_gelu_native(x: torch.Tensor, fp8: bool = False) -> torch.Tensor | Fp8Rows:
    y = _op().forward_native(x)
    return quantize_rows_native(y) if fp8 else y


def quick_gelu(x: torch.Tensor, fp8: bool = False) -> torch.Tensor | Fp8Rows:
    if not x.is_cuda:
        return quick_gelu_native(x, fp8)
    if not fp8:
        return _op().forward_cuda(x)
    from ._quick_gelu_triton import quick_gelu_fp8_cuda

    return quick_gelu_fp8_cuda(x)

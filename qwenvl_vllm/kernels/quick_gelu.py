"""QuickGELU (x * sigmoid(1.702 x)) of the vision MLP, optionally emitting fp8 rows for the next GEMM.

bf16/fp16 output runs vLLM's fused CUDA kernel (`_C.gelu_quick`, what its QuickGELU op launches) on GPU
tensors: our tower runs eagerly, where the native form costs three passes over [N, 4 * E]. We call the
kernel, not vLLM's CustomOp: a CustomOp may only be built while a vLLM config is current, which is not the
case at forward time in the engine. The fp8 output comes from one Triton pass that also finds each row's
scale, so the fc2 input is never written in bf16.
"""

from __future__ import annotations

import torch

from .fp8 import Fp8Rows, quantize_rows_native


def quick_gelu_native(x: torch.Tensor, fp8: bool = False) -> torch.Tensor | Fp8Rows:
    y = x * torch.sigmoid(1.702 * x)  # vLLM's QuickGELU.forward_native
    return quantize_rows_native(y) if fp8 else y


def quick_gelu(x: torch.Tensor, fp8: bool = False) -> torch.Tensor | Fp8Rows:
    if not x.is_cuda:
        return quick_gelu_native(x, fp8)
    if fp8:
        from ._quick_gelu_triton import quick_gelu_fp8_cuda

        return quick_gelu_fp8_cuda(x)
    import vllm._custom_ops  # noqa: F401  (registers torch.ops._C)

    out = torch.empty_like(x)
    torch.ops._C.gelu_quick(out, x)
    return out

"""fp8 (e4m3) building blocks of the vision tower's optional fp8 path.

Weights: one scale per output channel, quantized once after loading. Activations: one scale per row
(token), produced by the kernel that computes the activation (fused LayerNorm, fused QuickGELU) or, for
the attention output, by vLLM's dynamic per-token quantization kernel. GEMMs: vLLM's CUTLASS
`cutlass_scaled_mm` (per-row x per-column scales, bf16 out, bias in the epilogue).

The `*_native` functions are the definitions, used on CPU and as the GPU tests' reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value
# Rows of zeros would get scale 0; any positive floor keeps q = 0 for them.
MIN_SCALE = 1.0 / (FP8_MAX * 512.0)


@dataclass
class Fp8Rows:
    """Dimensions: q [N, K] fp8 e4m3, scale [N, 1] float32; value = q * scale."""

    q: torch.Tensor
    scale: torch.Tensor

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.q.float() * self.scale).to(dtype)


def quantize_rows_native(x: torch.Tensor) -> Fp8Rows:
    """Per-row absmax scaling of [N, K] to e4m3."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp_min(MIN_SCALE)
    return Fp8Rows((xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale)


def quantize_rows(x: torch.Tensor) -> Fp8Rows:
    """Per-row quantization of an activation no kernel of ours produces (the attention output)."""
    if not x.is_cuda:
        return quantize_rows_native(x)
    from vllm import _custom_ops as ops

    q, scale = ops.scaled_fp8_quant(x.contiguous(), use_per_token_if_dynamic=True)
    return Fp8Rows(q, scale)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q [out, in] e4m3, scale [1, out] float32) with one scale per output channel."""
    rows = quantize_rows_native(weight)
    return rows.q, rows.scale.view(1, -1).contiguous()


def fp8_linear_native(
    x: Fp8Rows, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """x @ w.T + bias from dequantized operands in float32 (what the fp8 GEMM computes, up to order)."""
    w = w_q.float() * w_scale.view(-1, 1)
    out = x.dequantize() @ w.t()
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def fp8_linear(
    x: Fp8Rows, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """[N, in] fp8 rows x [out, in] fp8 weight -> [N, out] in out_dtype."""
    if not x.q.is_cuda:
        return fp8_linear_native(x, w_q, w_scale, bias, out_dtype)
    from vllm import _custom_ops as ops

    # CUTLASS wants b as [in, out] column-major: the transpose view of the row-major weight.
    w_t = w_q.t()
    return ops.cutlass_scaled_mm(x.q, w_t, out_dtype=out_dtype, scale_a=x.scale, scale_b=w_scale, bias=bias)

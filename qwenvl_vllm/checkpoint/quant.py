"""GPTQ (AutoGPTQ layout) and AWQ (AutoAWQ GEMM layout) weight packing, in pure torch.

Conventions (checked against vLLM 0.26's auto_gptq.py / auto_awq.py / utils/quant_utils.py):
- codes `q` and zero points live in the kernels' [in, out] (K x N) orientation; torch weights are [out, in].
- GPTQ: qweight int32 [K / pack, N], input row r*pack + j at bits j*b; qzeros int32 [K / group, N / pack],
  column c*pack + j at bits j*b, storing zero - 1 (AutoGPTQ's old convention; sym 4-bit stores 7);
  scales fp16 [K / group, N]; g_idx int32 [K] = k // group (desc_act false). Symmetric: zero = 2^(b-1).
- AWQ: qweight int32 [K, N / 8], qzeros int32 [K / group, N / 8] storing the true zero, both with AWQ's
  interleave (nibble slot j holds column 8c + [0, 2, 4, 6, 1, 3, 5, 7][j]); scales fp16 [K / group, N].
- dequantized weight = (q - zero) * scale.

Scales are rounded up to a short significand (4 bits for 4-bit codes, a power of two for 8-bit codes) so
that every product code * scale, and so every dequantized weight, is exact in fp16 and bf16: the bf16
"dequantized" reference checkpoint then holds exactly the weights the quantized kernels compute with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP_SIZE = 128
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # column offset stored in nibble slot j
_MIN_SCALE = 2.0**-14  # smallest normal fp16: keeps scales and products exact in fp16


@dataclass(frozen=True)
class QuantScheme:
    method: str  # "gptq" | "awq"
    bits: int
    group_size: int = GROUP_SIZE

    @property
    def pack(self) -> int:
        return 32 // self.bits

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1


SCHEMES = {
    "gptq-int4": QuantScheme("gptq", 4),
    "gptq-int8": QuantScheme("gptq", 8),
    "awq": QuantScheme("awq", 4),
}


@dataclass
class Codes:
    """Unpacked quantization of one linear: q int32 [K, N], zeros int32 [K/g, N], scales fp16 [K/g, N]."""

    q: torch.Tensor
    zeros: torch.Tensor
    scales: torch.Tensor


def _check_shape(out_features: int, in_features: int, scheme: QuantScheme) -> None:
    if in_features % scheme.group_size or in_features % scheme.pack:
        raise ValueError(f"in_features {in_features} must be a multiple of group size {scheme.group_size}")
    if out_features % scheme.pack:
        raise ValueError(f"out_features {out_features} must be a multiple of the pack factor {scheme.pack}")


def _round_up_significand(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Smallest value >= x whose binary significand has `bits` bits (x > 0, float32)."""
    mant, exp = torch.frexp(x)  # x = mant * 2^exp, mant in [0.5, 1)
    mant = torch.ceil(mant * (1 << bits)) / (1 << bits)
    return torch.ldexp(mant, exp)


def _div(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """x / divisor, correctly rounded on every device: with a Python-number divisor CUDA multiplies by its
    reciprocal (one ulp off at times), which moved scales across _round_up_significand's steps."""
    return x / torch.full_like(x, divisor)


def _grouped(w_kn: torch.Tensor, group: int) -> torch.Tensor:
    k, n = w_kn.shape
    return w_kn.reshape(k // group, group, n)  # [K/g, g, N]


def quantize(weight: torch.Tensor, scheme: QuantScheme) -> Codes:
    """Round-to-nearest group quantization of a torch-layout weight [out, in] (GPTQ sym / AWQ asym)."""
    out_features, in_features = weight.shape
    _check_shape(out_features, in_features, scheme)
    w = _grouped(weight.float().t(), scheme.group_size)
    sig_bits = 4 if scheme.bits == 4 else 1
    if scheme.method == "gptq":
        amax = w.abs().amax(dim=1)
        scales = _round_up_significand(_div(2 * amax, scheme.maxq).clamp(min=_MIN_SCALE), sig_bits)
        zeros = torch.full_like(scales, 1 << (scheme.bits - 1), dtype=torch.int32)
    elif scheme.method == "awq":
        # The range always includes 0 (like GPTQ's asymmetric quantizer) so the zero point stays in [0, maxq]
        # and no group pays a clamping error (AutoAWQ clamps the zero point of all-positive groups instead).
        wmax, wmin = w.amax(dim=1).clamp(min=0), w.amin(dim=1).clamp(max=0)
        scales = _round_up_significand(_div(wmax - wmin, scheme.maxq).clamp(min=_MIN_SCALE), sig_bits)
        zeros = torch.clamp(-torch.round(wmin / scales), 0, scheme.maxq).to(torch.int32)
    else:
        raise ValueError(f"unknown quantization method {scheme.method!r}")
    q = torch.round(w / scales[:, None, :]) + zeros[:, None, :]
    q = q.clamp(0, scheme.maxq).to(torch.int32).reshape(in_features, out_features)
    return Codes(q=q, zeros=zeros, scales=scales.to(torch.float16))


def dequantize(codes: Codes, group_size: int = GROUP_SIZE) -> torch.Tensor:
    """(q - zero) * scale as a float32 torch-layout weight [out, in]; exact by construction of the scales."""
    q = _grouped(codes.q, group_size).float()
    w = (q - codes.zeros[:, None, :].float()) * codes.scales[:, None, :].float()
    return w.reshape(codes.q.shape).t().contiguous()


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    """Reinterpret non-negative int64 values < 2^32 as int32 bit patterns (two's complement wrap)."""
    return torch.where(x >= 1 << 31, x - (1 << 32), x).to(torch.int32)


def _pack_last(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[..., pack] small ints -> [...] int32; element j at bits j*b."""
    shifts = torch.arange(values.shape[-1], dtype=torch.int64, device=values.device) * bits
    return _to_int32((values.to(torch.int64) << shifts).sum(dim=-1))


def _unpack_last(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """[...] int32 -> [..., 32/b] small ints; inverse of _pack_last."""
    shifts = torch.arange(32 // bits, dtype=torch.int64, device=packed.device) * bits
    unsigned = packed.to(torch.int64) & 0xFFFFFFFF
    return ((unsigned[..., None] >> shifts) & ((1 << bits) - 1)).to(torch.int32)


def pack_gptq(codes: Codes, scheme: QuantScheme) -> dict[str, torch.Tensor]:
    k, n = codes.q.shape
    p = scheme.pack
    qweight = _pack_last(codes.q.reshape(k // p, p, n).transpose(1, 2), scheme.bits)  # [K/p, N]
    stored_zeros = (codes.zeros - 1).reshape(-1, n // p, p)  # AutoGPTQ stores zero - 1
    return {
        "qweight": qweight,
        "qzeros": _pack_last(stored_zeros, scheme.bits),  # [K/g, N/p]
        "scales": codes.scales.contiguous(),
        "g_idx": (torch.arange(k, dtype=torch.int32, device=codes.q.device) // scheme.group_size).to(
            torch.int32
        ),
    }


def unpack_gptq(tensors: dict[str, torch.Tensor], scheme: QuantScheme) -> Codes:
    qweight, qzeros = tensors["qweight"], tensors["qzeros"]
    kp, n = qweight.shape
    q = _unpack_last(qweight, scheme.bits).transpose(1, 2).reshape(kp * scheme.pack, n)
    zeros = _unpack_last(qzeros, scheme.bits).reshape(qzeros.shape[0], n) + 1
    return Codes(q=q.contiguous(), zeros=zeros, scales=tensors["scales"])


def _awq_interleave(x: torch.Tensor) -> torch.Tensor:
    """[R, N] -> [R, N/8, 8] with slot j holding column 8c + AWQ_ORDER[j]."""
    return x.reshape(x.shape[0], -1, 8)[:, :, list(AWQ_ORDER)]


def _awq_deinterleave(slots: torch.Tensor) -> torch.Tensor:
    """[R, N/8, 8] slots -> [R, N] columns (inverse of _awq_interleave)."""
    out = torch.empty_like(slots)
    out[:, :, list(AWQ_ORDER)] = slots
    return out.reshape(slots.shape[0], -1)


def pack_awq(codes: Codes, scheme: QuantScheme) -> dict[str, torch.Tensor]:
    if scheme.bits != 4:
        raise ValueError("AWQ (GEMM) checkpoints are 4-bit only")
    return {
        "qweight": _pack_last(_awq_interleave(codes.q), 4),  # [K, N/8]
        "qzeros": _pack_last(_awq_interleave(codes.zeros), 4),  # [K/g, N/8]
        "scales": codes.scales.contiguous(),
    }


def unpack_awq(tensors: dict[str, torch.Tensor]) -> Codes:
    q = _awq_deinterleave(_unpack_last(tensors["qweight"], 4))
    zeros = _awq_deinterleave(_unpack_last(tensors["qzeros"], 4))
    return Codes(q=q, zeros=zeros, scales=tensors["scales"])


def pack(codes: Codes, scheme: QuantScheme) -> dict[str, torch.Tensor]:
    return pack_gptq(codes, scheme) if scheme.method == "gptq" else pack_awq(codes, scheme)


def unpack(tensors: dict[str, torch.Tensor], scheme: QuantScheme) -> Codes:
    return unpack_gptq(tensors, scheme) if scheme.method == "gptq" else unpack_awq(tensors)


def dequantize_packed(tensors: dict[str, torch.Tensor], scheme: QuantScheme) -> torch.Tensor:
    """Packed checkpoint tensors of one linear -> float32 torch-layout weight [out, in]."""
    return dequantize(unpack(tensors, scheme), scheme.group_size)


def packed_shapes(out_features: int, in_features: int, scheme: QuantScheme) -> dict[str, tuple]:
    """Shapes and dtypes of the packed tensors of one linear, for shard planning."""
    _check_shape(out_features, in_features, scheme)
    k, n, g, p = in_features, out_features, scheme.group_size, scheme.pack
    if scheme.method == "gptq":
        return {
            "qweight": ((k // p, n), torch.int32),
            "qzeros": ((k // g, n // p), torch.int32),
            "scales": ((k // g, n), torch.float16),
            "g_idx": ((k,), torch.int32),
        }
    return {
        "qweight": ((k, n // 8), torch.int32),
        "qzeros": ((k // g, n // 8), torch.int32),
        "scales": ((k // g, n), torch.float16),
    }


def quantization_config(scheme: QuantScheme) -> dict:
    """The `quantization_config` block of config.json, as the Qwen releases write it."""
    if scheme.method == "awq":
        return {
            "bits": scheme.bits,
            "group_size": scheme.group_size,
            "modules_to_not_convert": ["visual"],
            "quant_method": "awq",
            "version": "gemm",
            "zero_point": True,
        }
    return {
        "bits": scheme.bits,
        "group_size": scheme.group_size,
        "damp_percent": 0.01,
        "desc_act": False,
        "static_groups": False,
        "sym": True,
        "true_sequential": True,
        "model_name_or_path": None,
        "model_file_base_name": "model",
        "quant_method": "gptq",
    }

"""GPTQ / AWQ packing: round trips, exactness of the dequantized weights, and layout against the spec.

All comparisons are exact (torch.equal): packing is integer bit manipulation and the scales are chosen so that
every dequantized weight is exactly representable, so any tolerance would only hide a layout bug.
"""

from __future__ import annotations

import pytest
import torch

from qwenvl_vllm.checkpoint import quant as Q

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ GEMM: nibble slot j of each int32 holds column 8c + order[j]


def _weight(out_f: int = 192, in_f: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.02
    w[3, :128] += 0.2  # an outlier group, so groups get different scales
    w[5, 128:] = w[5, 128:].abs()  # an all-positive group: AWQ's zero point is 0
    return w.to(torch.bfloat16)


def _u32(x: int) -> int:
    return x & 0xFFFFFFFF


@pytest.mark.parametrize("name", ["gptq-int4", "gptq-int8", "awq"])
def test_pack_unpack_dequantize_round_trip(name: str) -> None:
    scheme = Q.SCHEMES[name]
    w = _weight()
    codes = Q.quantize(w, scheme)
    fake = Q.dequantize(codes, scheme.group_size)  # the fake-quantized weights
    packed = Q.pack(codes, scheme)
    back = Q.unpack(packed, scheme)
    assert torch.equal(back.q, codes.q) and torch.equal(back.zeros, codes.zeros)
    assert torch.equal(back.scales, codes.scales)
    assert torch.equal(Q.dequantize_packed(packed, scheme), fake)
    # Exact in both half types, so a bf16 reference checkpoint holds exactly what fp16/bf16 kernels compute.
    assert torch.equal(fake.to(torch.bfloat16).float(), fake)
    assert torch.equal(fake.half().float(), fake)
    # Products q * scale (kernels may compute q*s - z*s) are exact in bf16 as well.
    scales = codes.scales.float().repeat_interleave(scheme.group_size, dim=0)
    prod = codes.q.float() * scales
    assert torch.equal(prod.to(torch.bfloat16).float(), prod)
    # Round-to-nearest error is at most half a step (the 1e-6 only absorbs float32 rounding of w / s).
    bound = scales.t() * 0.5 * (1 + 1e-6)
    assert torch.all((w.float() - fake).abs() <= bound)
    assert ((w.float() - fake).norm() / w.float().norm()) < (0.15 if scheme.bits == 4 else 0.01)


@pytest.mark.parametrize("name", ["gptq-int4", "gptq-int8", "awq"])
def test_packed_shapes_and_dtypes(name: str) -> None:
    scheme = Q.SCHEMES[name]
    packed = Q.pack(Q.quantize(_weight(), scheme), scheme)
    expected = Q.packed_shapes(192, 256, scheme)
    assert set(packed) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(packed[key].shape) == shape and packed[key].dtype == dtype, key


@pytest.mark.parametrize("name,bits", [("gptq-int4", 4), ("gptq-int8", 8)])
def test_gptq_layout_from_spec(name: str, bits: int) -> None:
    """AutoGPTQ: qweight [K/p, N], input row r*p + j at bits j*b; qzeros store zero - 1; g_idx = k // 128."""
    scheme = Q.SCHEMES[name]
    codes = Q.quantize(_weight(), scheme)
    packed = Q.pack(codes, scheme)
    p, mask = 32 // bits, (1 << bits) - 1
    qw = packed["qweight"]
    for r, c in [(0, 0), (1, 7), (5, 100), (qw.shape[0] - 1, 191)]:
        word = _u32(int(qw[r, c]))
        assert [(word >> (bits * j)) & mask for j in range(p)] == codes.q[r * p : (r + 1) * p, c].tolist()
    # Symmetric: zero 2^(b-1), stored as zero - 1 in every field (7 -> 0x77777777, 127 -> 0x7F7F7F7F).
    stored = (1 << (bits - 1)) - 1
    word = sum(stored << (bits * j) for j in range(p))
    assert all(_u32(int(v)) == word for v in packed["qzeros"].flatten())
    assert packed["g_idx"].tolist() == [k // 128 for k in range(256)]


def test_awq_layout_from_spec() -> None:
    """Independent unpacking of AWQ GEMM tensors written from the format description."""
    scheme = Q.SCHEMES["awq"]
    codes = Q.quantize(_weight(), scheme)
    packed = Q.pack(codes, scheme)

    def unpack(t: torch.Tensor) -> list[list[int]]:
        rows = []
        for row in t.tolist():
            vals = [0] * (8 * len(row))
            for c, v in enumerate(row):
                word = _u32(v)
                for j in range(8):
                    vals[8 * c + AWQ_ORDER[j]] = (word >> (4 * j)) & 0xF
            rows.append(vals)
        return rows

    assert unpack(packed["qweight"]) == codes.q.tolist()
    assert unpack(packed["qzeros"]) == codes.zeros.tolist()
    assert codes.zeros[1, 5] == 0  # the all-positive group of row 5 (second input group)
    q = torch.tensor(unpack(packed["qweight"]), dtype=torch.float32).reshape(2, 128, 192)
    z = torch.tensor(unpack(packed["qzeros"]), dtype=torch.float32)[:, None, :]
    ref = ((q - z) * packed["scales"].float()[:, None, :]).reshape(256, 192).t()
    assert torch.equal(ref, Q.dequantize_packed(packed, scheme))


@pytest.mark.parametrize("name", ["gptq-int4", "gptq-int8", "awq"])
def test_matches_vllm_pack_helpers(name: str) -> None:
    """vLLM's reference packers (utils/quant_utils.py) produce the same int32 words from the same codes."""
    quant_utils = pytest.importorskip("vllm.model_executor.layers.quantization.utils.quant_utils")
    scheme = Q.SCHEMES[name]
    codes = Q.quantize(_weight(), scheme)
    packed = Q.pack(codes, scheme)
    k, n = codes.q.shape
    if scheme.method == "gptq":
        assert torch.equal(quant_utils.gptq_pack(codes.q, scheme.bits, k, n), packed["qweight"])
        zeros = codes.zeros - 1
        assert torch.equal(quant_utils.pack_cols(zeros, scheme.bits, zeros.shape[0], n), packed["qzeros"])
    else:
        assert torch.equal(quant_utils.awq_pack(codes.q, 4, k, n), packed["qweight"])
        assert torch.equal(quant_utils.awq_pack(codes.zeros, 4, codes.zeros.shape[0], n), packed["qzeros"])


def test_chunked_rows_equal_whole() -> None:
    """Quantization is per output row, so the writer may quantize blocks of rows and concatenate."""
    scheme = Q.SCHEMES["gptq-int4"]
    w = _weight()
    whole = Q.pack(Q.quantize(w, scheme), scheme)
    parts = [Q.pack(Q.quantize(b, scheme), scheme) for b in (w[:64], w[64:])]
    for key in ("qweight", "qzeros", "scales"):
        assert torch.equal(torch.cat([p[key] for p in parts], dim=1), whole[key])


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="group size"):
        Q.quantize(torch.zeros(64, 100), Q.SCHEMES["gptq-int4"])
    with pytest.raises(ValueError, match="pack factor"):
        Q.quantize(torch.zeros(60, 128), Q.SCHEMES["awq"])
    with pytest.raises(ValueError, match="4-bit"):
        Q.pack_awq(Q.quantize(torch.ones(8, 128), Q.SCHEMES["gptq-int8"]), Q.QuantScheme("awq", 8))

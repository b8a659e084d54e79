"""The vision tower's fused / fp8 building blocks on CPU (their native definitions), and the fp8 tower
against the bf16 one. The CUDA kernels are checked against these on the GPU (tests/gpu)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenvl_vllm.kernels.fp8 import FP8_MAX, fp8_linear_native, quantize_rows_native, quantize_weight
from qwenvl_vllm.kernels.layernorm import add_layernorm


def test_quantize_rows_uses_the_fp8_range_per_row():
    x = torch.randn(16, 64) * torch.logspace(-3, 3, 16)[:, None]
    rows = quantize_rows_native(x)
    assert rows.q.dtype == torch.float8_e4m3fn and rows.scale.shape == (16, 1)
    assert torch.allclose(rows.q.float().abs().amax(dim=1), torch.full((16,), FP8_MAX))
    rel = (rows.dequantize() - x).abs() / x.abs().amax(dim=1, keepdim=True)
    assert rel.max().item() <= 2**-4  # half an e4m3 step at the row's largest value


def test_zero_rows_quantize_to_zero():
    rows = quantize_rows_native(torch.zeros(3, 8))
    assert torch.equal(rows.dequantize(), torch.zeros(3, 8))


def test_fp8_linear_native_tracks_the_float_matmul():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(32, 128, generator=gen), torch.randn(64, 128, generator=gen), torch.randn(64)
    w_q, w_s = quantize_weight(w)
    got = fp8_linear_native(quantize_rows_native(x), w_q, w_s, b, torch.float32)
    want = x @ w.t() + b
    assert ((got - want).norm() / want.norm()).item() < 0.05  # two e4m3 roundings per product


def test_add_layernorm_on_cpu_is_the_separate_add_then_norm():
    x, d = torch.randn(5, 32, dtype=torch.bfloat16), torch.randn(5, 32, dtype=torch.bfloat16)
    w, b = torch.rand(32, dtype=torch.bfloat16), torch.rand(32, dtype=torch.bfloat16)
    x2, h = add_layernorm(x, d, w, b, 1e-6)
    assert torch.equal(x2, x + d)
    assert torch.equal(h, F.layer_norm(x + d, (32,), w, b, 1e-6))


@pytest.mark.parametrize("fp8", [True])
def test_fp8_tower_close_to_16bit_tower_on_cpu(vllm_cpu, fp8):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower, hf_weight_shapes

    cfg = Qwen2VLVisionConfig(depth=2, embed_dim=64, hidden_size=48, num_heads=4, mlp_ratio=4)
    gen = torch.Generator().manual_seed(0)
    weights = [(k, torch.randn(s, generator=gen) * (s[-1] ** -0.5 if len(s) > 1 else 0.1))
               for k, s in hf_weight_shapes(cfg).items()]  # fmt: skip
    towers = {f: Qwen2VisionTower(cfg, use_fp8=f, prefix="visual") for f in (False, fp8)}
    for tower in towers.values():
        tower.load_weights(iter(weights))
    assert towers[True].blocks[0].attn.qkv.fp8_weight.dtype == torch.float8_e4m3fn
    grids = [[1, 4, 6], [2, 2, 2]]
    pixels = torch.randn(sum(t * h * w for t, h, w in grids), 3 * 2 * 14 * 14, generator=gen)
    with torch.inference_mode():
        ref, got = (towers[f](pixels, grids) for f in (False, True))
    rel = ((got - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.1


def test_quick_gelu_needs_no_vllm_config():
    # The engine calls the tower's forward with no vLLM config current: building a CustomOp there fails.
    import subprocess
    import sys

    code = (
        "import torch; from qwenvl_vllm.kernels.quick_gelu import quick_gelu; "
        "x = torch.randn(4, 8); assert torch.equal(quick_gelu(x), x * torch.sigmoid(1.702 * x)); "
        "quick_gelu(x, fp8=True)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

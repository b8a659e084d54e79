"""Our fused vision-tower kernels on the GPU against the unfused torch / vLLM paths they replace.

Run on the GPU machine: `python -m pytest tests/gpu/test_vision_kernels_gpu.py -q`.
"""

from __future__ import annotations

import pytest
import torch
from helpers import cuda_tower

pytestmark = pytest.mark.gpu

BF16_ULP = 2**-7  # relative spacing of bf16 at 1.0
FP8_ULP = 2**-3  # relative spacing of e4m3 (3 mantissa bits)


def _rows(n: int, e: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator("cuda").manual_seed(seed)
    return (torch.randn(n, e, device="cuda", generator=gen) * scale).to(torch.bfloat16)


def _assert_fp8_close(got, want) -> None:
    torch.testing.assert_close(got.scale, want.scale, rtol=BF16_ULP, atol=0)
    a, b = got.dequantize(), want.dequantize()
    # Inputs may differ by one bf16 rounding, which can move a value to the neighbouring fp8 step.
    assert ((a - b).abs() <= FP8_ULP * b.abs() + want.scale * 2**-6).all()
    assert (got.q.float() != want.q.float()).float().mean().item() < 0.01


@pytest.mark.parametrize("n,e", [(4044, 1280), (7, 96), (1, 5000)])
@pytest.mark.parametrize("with_delta", [True, False])
def test_add_layernorm_matches_unfused(vllm_cuda, n, e, with_delta):
    from qwenvl_vllm.kernels.layernorm import add_layernorm, add_layernorm_native

    x, d = _rows(n, e, 0, 3.0), _rows(n, e, 1) if with_delta else None
    w, b = 1 + 0.1 * _rows(1, e, 2)[0], 0.1 * _rows(1, e, 3)[0]
    x_got, h_got = add_layernorm(x, d, w, b, 1e-6)
    x_want, h_want = add_layernorm_native(x, d, w, b, 1e-6)
    assert torch.equal(x_got, x_want)  # the sum is rounded once, as the separate add rounds it
    # Mean/variance reduce in another order than ATen's Welford: at most one bf16 step apart.
    torch.testing.assert_close(h_got.float(), h_want.float(), rtol=BF16_ULP, atol=BF16_ULP)
    _, q_got = add_layernorm(x, d, w, b, 1e-6, fp8=True)
    _, q_want = add_layernorm_native(x, d, w, b, 1e-6, fp8=True)
    _assert_fp8_close(q_got, q_want)


def test_quick_gelu_fp8_matches_unfused(vllm_cuda):
    from qwenvl_vllm.kernels.fp8 import quantize_rows_native
    from qwenvl_vllm.kernels.quick_gelu import quick_gelu

    x = _rows(4044, 5120, 4, 2.0)
    bf16 = quick_gelu(x)  # vLLM's CUDA kernel: the unfused path's activation
    _assert_fp8_close(quick_gelu(x, fp8=True), quantize_rows_native(bf16))


def test_fp8_linear_matches_dequantized_matmul(vllm_cuda):
    from qwenvl_vllm.kernels.fp8 import fp8_linear, fp8_linear_native, quantize_rows, quantize_weight

    x = quantize_rows(_rows(4044, 1280, 5))
    w_q, w_s = quantize_weight(_rows(5120, 1280, 6, 1280**-0.5))
    bias = _rows(1, 5120, 7)[0]
    got = fp8_linear(x, w_q, w_s, bias, torch.bfloat16).float()
    want = fp8_linear_native(x, w_q, w_s, bias, torch.float32)
    # Same products of fp8 operands, fp32 accumulation in another order, one bf16 rounding of the output.
    torch.testing.assert_close(got, want, rtol=2 * BF16_ULP, atol=1e-2 * want.abs().max().item())


def test_fp8_tower_close_to_bf16_tower(vllm_cuda):
    towers = {fp8: cuda_tower(use_fp8=fp8) for fp8 in (False, True)}
    grids = [[1, 54, 74], [2, 8, 12]]
    pixels = torch.randn(sum(t * h * w for t, h, w in grids), 1176, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        ref, got = (towers[f](pixels, grids).float() for f in (False, True))
    rel = ((got - ref).norm() / ref.norm()).item()
    print(f"\nfp8 tower (depth 4) relative error vs bf16: {rel:.4f}")
    assert rel < 0.1


def test_cuda_graph_replays_match_eager(vllm_cuda):
    tower = cuda_tower(graph_max_patches=16384)
    # Same bucket twice with other contents (stale pad rows / positions), an exact bucket size, a video.
    batches = [[(1, 54, 74)], [(1, 32, 32), (1, 40, 60), (1, 4, 4)], [(1, 32, 32)], [(4, 26, 46), (1, 2, 2)]]
    with torch.inference_mode():
        for grid in batches:
            n = sum(t * h * w for t, h, w in grid)
            pixels = torch.randn(n, 1176, device="cuda", dtype=torch.bfloat16)
            got = tower(pixels, grid).float()
            want = tower.encode(pixels, tower.prepare_metadata(grid, tower.device)).float()
            rel = ((got - want).norm() / want.norm()).item()
            assert got.shape == want.shape
            assert rel < 1e-2, (grid, rel)  # cuBLAS may pick other kernels for the padded row count
    # keyed by (padded patches, longest frame rounded up to 1024)
    assert sorted(tower.graphs.graphs) == [(1024, 1024), (4096, 3072), (4096, 4096), (5120, 2048)]


def test_sliced_graph_replays_equal_the_whole_graph(vllm_cuda):
    """The slicing scheduler's encode: one graph per slice of blocks, continued from the previous slice's
    outputs across other GPU work (here a whole-tower replay of another bucket between slices), gives the
    whole-tower graph's bytes (same kernels on the same padded shapes)."""
    from qwenvl_vllm.models.tower_slices import run_to_end

    tower = cuda_tower(graph_max_patches=16384)
    grid, other = [(1, 54, 74)], [(1, 40, 60)]
    gen = torch.Generator("cuda").manual_seed(3)
    pixels = torch.randn(3996, 1176, device="cuda", dtype=torch.bfloat16, generator=gen)
    others = torch.randn(2400, 1176, device="cuda", dtype=torch.bfloat16, generator=gen)
    with torch.inference_mode():
        want, want_other = tower(pixels, grid).clone(), tower(others, other).clone()
        for blocks in (1, 2, 3):  # slices of 1, 2, and 3 + 1 blocks (a fifth of the step budget each)
            slices, cost = tower.forward_slices(pixels, grid, 5 * blocks * 4096)
            next(slices)
            between = tower(others, other)  # the whole-tower graph of another bucket, mid-encode
            got = run_to_end(slices)
            assert cost == blocks * 4096 and torch.equal(got, want), blocks
            assert torch.equal(between, want_other)
    assert sorted(tower.slice_graphs.graphs) == [(4096, 4096, 1), (4096, 4096, 2), (4096, 4096, 3)]


def test_a_new_slice_graph_key_leaves_an_encode_under_way_alone(vllm_cuda):
    """A video's encode is half done when an image of the same padded size but another max_seqlen is
    queued: the image's graphs are captured only when its encode starts (a capture writes the size's input
    buffers), so both equal their whole-tower graphs."""
    from qwenvl_vllm.models.tower_slices import run_to_end

    tower = cuda_tower(graph_max_patches=16384)
    video, image = [(4, 26, 46)], [(1, 64, 76)]  # 4784 / 4864 patches: both pad to 5120
    gen = torch.Generator("cuda").manual_seed(4)
    pv = torch.randn(4784, 1176, device="cuda", dtype=torch.bfloat16, generator=gen)
    pi = torch.randn(4864, 1176, device="cuda", dtype=torch.bfloat16, generator=gen)
    with torch.inference_mode():
        want_video, want_image = tower(pv, video).clone(), tower(pi, image).clone()
        first, _ = tower.forward_slices(pv, video, 5 * 5120)  # one block per slice
        next(first)
        second, _ = tower.forward_slices(pi, image, 5 * 5120)
        assert torch.equal(run_to_end(first), want_video)
        assert torch.equal(run_to_end(second), want_image)
    assert sorted(tower.slice_graphs.graphs) == [(5120, 2048, 1), (5120, 5120, 1)]

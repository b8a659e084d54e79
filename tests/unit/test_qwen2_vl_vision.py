"""Parity of our Qwen2-VL vision tower (vLLM layers) with transformers 5.17's, on CPU in fp32."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_VISION as TINY

GRIDS = [[1, 4, 6], [2, 4, 4], [1, 2, 2]]  # image, 2-frame video, small image (patches)


def _config():
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    return Qwen2VLVisionConfig(**TINY)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    # O(1) activations everywhere (HF's init gives tiny weights and unit norms, which would hide errors).
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() > 1:
                p.copy_(noise * (p[0].numel() ** -0.5))
            elif "norm" in name or "ln_q" in name:
                p.copy_(1.0 + 0.1 * noise) if name.endswith("weight") else p.copy_(0.1 * noise)
            else:
                p.copy_(0.1 * noise)


@pytest.fixture(scope="module")
def models(vllm_cpu):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    torch.manual_seed(0)
    cfg = _config()
    ref = Qwen2VisionTransformerPretrainedModel(cfg).eval()
    _randomize(ref)
    ours = Qwen2VisionTower(cfg, prefix="visual").eval()
    loaded = ours.load_weights(ref.state_dict().items())
    return ref, ours, loaded


def _pixels(grids, seed=1) -> torch.Tensor:
    n = sum(t * h * w for t, h, w in grids)
    return torch.randn(n, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(seed))


def test_parity_with_transformers_fp32(models):
    ref, ours, _ = models
    pixels = _pixels(GRIDS)
    with torch.no_grad():
        want = ref(pixels, grid_thw=torch.tensor(GRIDS)).pooler_output
        got = ours(pixels, GRIDS)
    assert got.shape == (sum(t * h * w for t, h, w in GRIDS) // 4, 64)
    # fp32 on both sides; only the summation order differs (GEMM vs Conv3d patch embed, per-frame
    # SDPA splits), which moves results by ~1e-6 relative. 1e-4 rel / 1e-5 abs leaves margin while
    # any real error (rotary order, merge order, frame boundaries) moves outputs by O(1e-1).
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # Grid as a tensor gives the same result.
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels, torch.tensor(GRIDS)), got, rtol=0, atol=0)


def test_parity_is_sensitive_to_positions(models):
    # The same pixels under a transposed first grid (4x6 -> 6x4) must give clearly different outputs:
    # shows the comparison above would catch a wrong rotary / position layout.
    ref, ours, _ = models
    pixels = _pixels(GRIDS)
    swapped = [[1, 6, 4]] + GRIDS[1:]
    with torch.no_grad():
        a = ours(pixels, GRIDS)
        b = ours(pixels, swapped)
        want_b = ref(pixels, grid_thw=torch.tensor(swapped)).pooler_output
    assert (a[:6] - b[:6]).abs().max() > 1e-2
    torch.testing.assert_close(b, want_b, rtol=1e-4, atol=1e-5)


def test_video_frames_attend_separately(models):
    # Each frame of a video is its own attention sequence: the 2-frame video equals its frames run as
    # two 1-frame items only if frames don't attend across each other. Temporal patches mix 2 frames
    # already in the pixels, so use the same pixels split as items (1,4,4) + (1,4,4).
    _, ours, _ = models
    pixels = _pixels([[2, 4, 4]], seed=3)
    with torch.no_grad():
        video = ours(pixels, [[2, 4, 4]])
        frames = ours(pixels, [[1, 4, 4], [1, 4, 4]])
    torch.testing.assert_close(video, frames, rtol=0, atol=1e-6)


def test_load_weights_reports_every_param(models):
    from qwenvl_vllm.models.qwen2_vl_vision import hf_weight_shapes

    ref, ours, loaded = models
    assert loaded == {n for n, _ in ours.named_parameters()}
    assert loaded == set(ref.state_dict()) == set(hf_weight_shapes(_config()))


def test_load_weights_rejects_bad_weights(models):
    _, ours, _ = models
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight.*shape"):
        ours.load_weights([("blocks.0.attn.qkv.weight", torch.zeros(32, 32))])
    with pytest.raises(ValueError, match="unexpected"):
        ours.load_weights([("visual.blocks.0.norm1.weight", torch.zeros(32))])


@pytest.mark.parametrize(
    "pixels_rows, grid, match",
    [
        (24, [[1, 4, 5]], "divisible"),
        (23, [[1, 4, 6]], "sums to 24"),
        (24, [], "non-empty"),
        (24, [[1, 4]], "non-empty"),
    ],
)
def test_bad_inputs_raise(models, pixels_rows, grid, match):
    _, ours, _ = models
    with pytest.raises(ValueError, match=match):
        ours(torch.zeros(pixels_rows, 3 * 2 * 14 * 14), grid)


def test_bad_pixel_width_raises(models):
    _, ours, _ = models
    with pytest.raises(ValueError, match="pixel_values must be"):
        ours(torch.zeros(24, 100), [[1, 4, 6]])


_TRITON_INTERPRETER_CHECK = r"""
import contextlib, importlib.util, pathlib, sys, types
import torch, vllm
# vllm.vllm_flash_attn's __init__ needs the CUDA extensions; load only its pure-Triton rotary module.
name = "vllm.vllm_flash_attn.ops.triton.rotary"
for parent in ("vllm.vllm_flash_attn", "vllm.vllm_flash_attn.ops", "vllm.vllm_flash_attn.ops.triton"):
    sys.modules[parent] = types.ModuleType(parent)
path = pathlib.Path(vllm.__file__).parent / "vllm_flash_attn/ops/triton/rotary.py"
spec = importlib.util.spec_from_file_location(name, path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
sys.modules[name] = mod
torch.cuda.device = lambda d: contextlib.nullcontext()  # the interpreter runs on CPU tensors
from qwenvl_vllm.models import vision_rotary as R

S, H, D = 37, 3, 80  # head_dim 80 as in Qwen2-VL: BLOCK_K 128 with masking
torch.manual_seed(0)
qkv = torch.randn(S, 3 * H, D)
pos = torch.randint(0, 9, (S, 2), dtype=torch.int32)
cos, sin = R.rotary_cos_sin(pos, R.axial_inv_freq(D, 10000.0), 9)
a, b = qkv.clone(), qkv.clone()
R._rotate_native_(a[:, : 2 * H], cos, sin)
R._rotate_triton_(b[:, : 2 * H], cos, sin)  # in place on the strided q|k heads
assert torch.equal(b[:, 2 * H :], qkv[:, 2 * H :]), "v heads were touched"
assert not torch.equal(b, qkv), "nothing was rotated"
assert torch.equal(a, b), (a - b).abs().max()
print("OK")
"""


def test_triton_rotary_launch_matches_native_in_interpreter():
    # The GPU path launches vLLM's Triton rotary kernel directly (fp32 cos/sin, in place on a strided
    # view). Triton's interpreter runs that exact launch on CPU tensors, in fp32 where both paths do
    # identical arithmetic, so they must agree bit for bit. bf16 rounding is left to the GPU test.
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_INTERPRETER_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def _tp_worker(rank: int, world: int, port: int, results) -> None:
    # One tensor-parallel rank on CPU (gloo): builds vLLM's distributed state itself, since the
    # session fixture is world size 1 and lives in the parent process.
    from helpers import vllm_env
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    with vllm_env("cpu", world_size=world, rank=rank, port=port):
        torch.manual_seed(0)
        ref = Qwen2VisionTransformerPretrainedModel(_config()).eval()
        _randomize(ref)
        ours = Qwen2VisionTower(_config()).eval()
        loaded = ours.load_weights(ref.state_dict().items())
        pixels = _pixels(GRIDS)
        with torch.no_grad():
            want = ref(pixels, grid_thw=torch.tensor(GRIDS)).pooler_output
            got = ours(pixels, GRIDS)
        attn = ours.blocks[0].attn
        results.put(
            (
                rank,
                attn.local_heads,
                tuple(attn.qkv.weight.shape),
                len(loaded),
                (got - want).abs().max().item(),
            )
        )


def test_tensor_parallel_2_ranks_matches_transformers():
    # Real TP=2 on CPU (two processes, gloo): heads, MLP and merger are sharded by vLLM's loaders and
    # the row-parallel all-reduces put the pieces back; each rank must reproduce the reference.
    import torch.multiprocessing as mp
    from helpers import free_port

    port = free_port()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_tp_worker, args=(rank, 2, port, results)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = sorted(results.get(timeout=10) for _ in procs)
    from qwenvl_vllm.models.qwen2_vl_vision import hf_weight_shapes

    n_params = len(hf_weight_shapes(_config()))
    for rank, local_heads, qkv_shape, n_loaded, err in rows:
        assert local_heads == 1 and qkv_shape == (3 * 16, 32), (rank, local_heads, qkv_shape)
        assert n_loaded == n_params
        assert err < 1e-5, (rank, err)  # same fp32 tolerance reasoning as the TP=1 parity test

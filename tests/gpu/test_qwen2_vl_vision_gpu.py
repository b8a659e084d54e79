"""GPU checks of our Qwen2-VL vision tower: Triton rotary vs native, bf16 parity vs transformers (fp32)
and vs vLLM's in-tree tower on Qwen2-VL-2B vision shapes (speed: benchmarks/vision_tower.py).

Run on the GPU machine: `python -m pytest tests/gpu/test_qwen2_vl_vision_gpu.py -q -s`.
Set QWENVL_VISION_BENCH_OUT=<file.json> to record the numbers.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

pytestmark = pytest.mark.gpu

# Qwen2-VL-2B vision tower (config.json of the release); depth is cut for the parity tests only.
VISION_2B = dict(
    depth=32,
    embed_dim=1280,
    hidden_size=1536,
    num_heads=16,
    mlp_ratio=4,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    in_channels=3,
    hidden_act="quick_gelu",
)
IMAGE_1024x768 = [1, 54, 74]  # 1036x756 after smart_resize: 3996 patches, 999 LLM tokens
_RESULTS: dict[str, object] = {}


def _config(**overrides):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    return Qwen2VLVisionConfig(**{**VISION_2B, **overrides})


@pytest.fixture(scope="module")
def vllm_gpu(vllm_cuda):
    yield vllm_cuda
    out = os.environ.get("QWENVL_VISION_BENCH_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(_RESULTS, f, indent=2)


def _build(cls, cfg, dtype, weights):
    from vllm.utils.torch_utils import set_default_torch_dtype

    with set_default_torch_dtype(dtype), torch.device("cuda"):
        model = cls(cfg, norm_eps=1e-6, prefix="visual")
    model.load_weights(iter(weights))
    return model.eval()


def _reference(cfg, seed=0):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    torch.manual_seed(seed)
    model = Qwen2VisionTransformerPretrainedModel(cfg)
    # O(1) activations and sharp attention (HF's init, std 0.02, makes attention nearly uniform,
    # which would hide rotary and attention-kernel differences).
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn_like(p)
            if p.dim() > 1:
                p.copy_(noise * p[0].numel() ** -0.5)
            elif name.endswith("weight"):  # LayerNorm scales
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model.to("cuda", torch.float32).eval()


def test_triton_rotary_matches_native_bf16(vllm_gpu):
    from qwenvl_vllm.models import vision_rotary as R

    pos = torch.from_numpy(R.patch_positions([(1, 54, 74), (2, 4, 6)], 2)).cuda()
    S, H, D = pos.shape[0], 16, 80  # 4044 patches, odd number of row blocks
    qkv = torch.randn(S, 3 * H, D, device="cuda", dtype=torch.bfloat16)
    cos, sin = R.rotary_cos_sin(pos, R.axial_inv_freq(D, 10000.0).cuda(), 74)
    a, b = qkv.clone(), qkv.clone()
    R._rotate_native_(a[:, : 2 * H], cos, sin)
    R._rotate_triton_(b[:, : 2 * H], cos, sin)
    assert torch.equal(b[:, 2 * H :], qkv[:, 2 * H :])
    # Both compute in fp32 and round to bf16 once; allow 1 bf16 ulp for FMA contraction.
    diff = (a.float() - b.float()).abs() / a.float().abs().clamp_min(1e-2)
    _RESULTS["rotary_bf16_max_rel_diff"] = diff.max().item()
    assert diff.max().item() <= 2**-7 + 1e-6  # 1 ulp at 1.0 is exactly 2**-7


@pytest.mark.parametrize("depth", [4])
def test_bf16_parity_vs_transformers_and_intree(vllm_gpu, depth):
    from vllm.model_executor.models.qwen2_vl import Qwen2VisionTransformer

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    cfg = _config(depth=depth)
    ref = _reference(cfg)
    weights = [(k, v.detach().clone()) for k, v in ref.state_dict().items()]
    ours = _build(Qwen2VisionTower, cfg, torch.bfloat16, weights)
    intree = _build(Qwen2VisionTransformer, cfg, torch.bfloat16, weights)
    grids = [IMAGE_1024x768, [2, 16, 20], [1, 2, 2]]
    n = sum(t * h * w for t, h, w in grids)
    pixels = torch.randn(n, 3 * 2 * 14 * 14, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.inference_mode():
        want = ref(pixels, grid_thw=torch.tensor(grids, device="cuda")).pooler_output.float()
        got = ours(pixels, grids).float()
        base = intree(pixels, torch.tensor(grids)).float()
    scale = want.abs().max().item()
    err_ours = (got - want).abs().max().item() / scale
    err_intree = (base - want).abs().max().item() / scale
    _RESULTS[f"bf16_depth{depth}_rel_err"] = {"ours": err_ours, "intree": err_intree}
    print(f"\nbf16 depth {depth}, max rel err vs fp32 HF: ours {err_ours:.3e}, in-tree {err_intree:.3e}")
    # bf16 weights/activations: ~1e-2 relative is the bf16 floor after a few blocks; ours must be no
    # worse than vLLM's in-tree tower (10% slack for rounding luck).
    assert err_ours < 5e-2
    assert err_ours <= 1.1 * err_intree + 1e-4


def test_fp32_parity_vs_transformers(vllm_gpu):
    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    cfg = _config(depth=2)
    ref = _reference(cfg)
    ours = _build(Qwen2VisionTower, cfg, torch.float32, list(ref.state_dict().items()))
    grids = [[1, 8, 12], [2, 4, 4]]
    n = sum(t * h * w for t, h, w in grids)
    pixels = torch.randn(n, 3 * 2 * 14 * 14, device="cuda")
    with torch.inference_mode():
        want = ref(pixels, grid_thw=torch.tensor(grids, device="cuda")).pooler_output
        got = ours(pixels, grids)
    _RESULTS["fp32_backend"] = str(ours.attn_backend)
    # TF32 may be on for matmuls on either side: 1e-3 relative.
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())


@pytest.mark.parametrize("backend", ["TORCH_SDPA", "TRITON_ATTN", "FLASHINFER"])
def test_other_attention_backends_match_flash_attn(vllm_gpu, backend):
    # Each backend wants its own cu_seqlens layout (CPU for torch SDPA, FlashInfer's strided offsets);
    # force it on every block after construction and compare with the default (FlashAttention) run.
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    if backend == "FLASHINFER":
        prefill = pytest.importorskip("flashinfer.cudnn.prefill")
        if not getattr(prefill, "CUDNN_AVAILABLE", False):
            pytest.skip("FlashInfer's ViT path needs cuDNN (cudnn frontend), absent here")
    cfg = _config(depth=2)
    ref = _reference(cfg)
    ours = _build(Qwen2VisionTower, cfg, torch.bfloat16, list(ref.state_dict().items()))
    # A 3996-patch image spans several key blocks of every kernel (short sequences fit in one block,
    # where FlashAttention and the Triton kernel happen to compute bit-identical results).
    grids = [IMAGE_1024x768, [2, 8, 12], [1, 2, 2]]
    pixels = torch.randn(sum(t * h * w for t, h, w in grids), 1176, device="cuda")
    with torch.inference_mode():
        want = ours(pixels, grids).float()
        for block in ours.blocks:
            block.attn.attn.attn_backend = AttentionBackendEnum[backend]
            block.attn.attn.is_flash_attn_backend = False
        got = ours(pixels, grids).float()
    rel = (got - want).abs().max().item() / want.abs().max().item()
    _RESULTS[f"backend_{backend}_rel_diff_vs_fa"] = rel
    assert rel < 2e-2  # bf16 attention kernels differ in rounding only


def test_side_stream_tower_equals_main_stream(vllm_gpu):
    """The encode-ahead path: the tower on its own stream, read on the main stream right after wait_for
    (without the wait the copy would race the encode), gives the main-stream tower's bytes."""
    from qwenvl_vllm.geometry import grid_tokens
    from qwenvl_vllm.models.encoder_stream import PROGRESS, EncoderStream
    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    cfg = _config(depth=8)
    ref = _reference(cfg)
    ours = _build(Qwen2VisionTower, cfg, torch.bfloat16, list(ref.state_dict().items()))
    grids = [IMAGE_1024x768] * 4
    n = sum(t * h * w for t, h, w in grids)
    pixels = torch.randn(n, 3 * 2 * 14 * 14, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    sizes = [grid_tokens(g, 2) for g in grids]
    before = torch.cuda.current_stream()
    stream = EncoderStream(torch.device("cuda"))
    # the language model's stream (this thread's current one from now on) outranks the tower's
    assert torch.cuda.current_stream().priority < stream.stream.priority == 0
    PROGRESS.reset()
    with torch.inference_mode():
        want = ours(pixels, grids).clone()
        torch.cuda.synchronize()
        outputs = stream.run(lambda: list(ours(pixels, grids).split(sizes)), [pixels])
        stream.wait_for(outputs[1:])
        got = torch.cat(outputs)  # on the main stream
    torch.cuda.synchronize()
    torch.cuda.set_stream(before)
    assert torch.equal(got, want)
    assert PROGRESS.launched == 4 and PROGRESS.finished_items() == 4


def test_equal_stream_priorities_when_turned_off(vllm_gpu, monkeypatch):
    from qwenvl_vllm.models.encoder_stream import EncoderStream

    monkeypatch.setenv("QWENVL_VLLM_LM_STREAM_PRIORITY", "0")
    before = torch.cuda.current_stream()
    stream = EncoderStream(torch.device("cuda"))
    assert torch.cuda.current_stream() == before and stream.stream.priority == before.priority == 0


def test_waits_on_unfinished_encodes_are_counted(vllm_gpu, monkeypatch):
    """The LM's stream waiting for a side-stream encode is what encode ahead avoids; each such wait is
    counted (and logged) so a serve log can show it beside a latency tail."""
    from qwenvl_vllm.models.encoder_stream import EncoderStream

    monkeypatch.setenv("QWENVL_VLLM_LM_STREAM_PRIORITY", "0")  # keep this thread's stream
    stream = EncoderStream(torch.device("cuda"))

    def slow_encode() -> list[torch.Tensor]:
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on the side stream
        return [torch.ones(4, device="cuda")]

    outputs = stream.run(slow_encode, [])
    stream.wait_for(outputs)  # still sleeping: a wait on an unfinished encode
    assert stream.waits_on_unfinished.count == 1
    torch.cuda.synchronize()
    stream.wait_for(outputs)  # finished: no wait to count
    assert stream.waits_on_unfinished.count == 1


def test_side_stream_encode_never_blocks_the_host(vllm_gpu):
    """Encode ahead only helps if launching a batch's encodes returns at once: a host sync inside (a pageable
    copy, `.item()`, an allocation that synchronises) would make the LM's next step wait for the tower.
    The GPU sleeps ~1 s first; the launch must end before the sleep does, with no sync torch can flag."""
    from qwenvl_vllm.geometry import VisionGeometry
    from qwenvl_vllm.models.encoder_stream import PROGRESS, EncoderStream
    from qwenvl_vllm.models.qwen2_vl_device_pixels import uint8_rows
    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    cfg = _config(depth=4)
    ours = _build(Qwen2VisionTower, cfg, torch.bfloat16, list(_reference(cfg).state_dict().items()))
    geometry = VisionGeometry(14, 2, 2)
    gen = torch.Generator("cuda").manual_seed(3)
    images = [torch.randint(0, 256, (768, 1024, 3), dtype=torch.uint8, device="cuda", generator=gen)] * 8

    def encode() -> list[torch.Tensor]:  # as the model's side-stream path: device pixels, one item per call
        return [
            ours(uint8_rows(im, IMAGE_1024x768, geometry, im.device, torch.bfloat16), [IMAGE_1024x768])
            for im in images
        ]

    before = torch.cuda.current_stream()
    stream = EncoderStream(torch.device("cuda"))
    try:
        with torch.inference_mode():
            stream.run(encode, images)  # first use: graph capture and resize tables, which may synchronise
            torch.cuda.synchronize()
            torch.cuda._sleep(2_000_000_000)  # ~1 s on the LM's stream; the side stream waits behind it
            sleeping = torch.cuda.Event()
            sleeping.record()
            torch.cuda.set_sync_debug_mode("error")
            try:
                stream.run(encode, images)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            assert not sleeping.query(), (
                "the launch waited for the GPU: a host sync in the side-stream encode"
            )
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_stream(before)
        PROGRESS.reset()

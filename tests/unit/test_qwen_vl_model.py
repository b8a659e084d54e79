"""Qwen-VL v1 model class on CPU: parity with the plain-PyTorch reference on identical weights.

Weights come from the project's checkpoint writer (tiny-qwen-vl: LLM hidden 128, 2 layers, 4 heads;
ViT width 32, 2 layers, 2 heads, 448 px / patch 14, 256 queries, real vocab and tokenizer), loaded by
name into both our vLLM model and tests/reference/qwen_vl_ref.py.

Everything runs in fp32: both sides compute the same math with different kernels (SDPA vs explicit
softmax, nn.MultiheadAttention vs explicit heads, unfold+matmul vs conv2d, fused residual RMSNorm vs
plain), so differences are float32 rounding, ~1e-6 relative; rtol/atol 1e-4 leaves margin while any
real mistake (weight order, rotary layout, gate/up swap, position table) moves outputs by O(1).

vLLM's paged `Attention` cannot be built without a GPU backend, so the LLM test swaps it for a plain causal
SDPA (same constructor signature). Verified here: embedding, fused c_attn split, rotary, gate/up order,
norms, lm_head, image-feature merge, weight loading, processor. Left for the GPU script: the paged kernel,
KV cache / decode steps, torch.compile + CUDA graphs, GPTQ kernels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from reference.qwen_vl_ref import (  # tests/ is on sys.path (pythonpath in pyproject.toml)
    QwenVLReference,
    RefVisionTransformer,
    read_checkpoint,
    sincos_2d,
)

TOL = dict(rtol=1e-4, atol=1e-4)
IMG_START, IMG_END, IMG_PAD = 151857, 151858, 151859


# ---- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qwenvl_vllm.checkpoint.writer import write_checkpoint

    return write_checkpoint(
        "tiny-qwen-vl", "bf16", tmp_path_factory.mktemp("qwen_vl") / "tiny-qwen-vl", seed=3
    )


@pytest.fixture(scope="module")
def text_only_ckpt(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same LLM as a Qwen-7B-style checkpoint: no `visual` config section, no transformer.visual.*."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("qwen_text")
    for f in tiny_ckpt.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy(f, out / f.name)
    config = json.loads((tiny_ckpt / "config.json").read_text())
    del config["visual"]
    (out / "config.json").write_text(json.dumps(config))
    state = {}
    for f in tiny_ckpt.glob("*.safetensors"):
        state.update({k: v for k, v in load_file(str(f)).items() if not k.startswith("transformer.visual.")})
    save_file(state, str(out / "model.safetensors"))
    return out


def _register() -> None:
    """What the plugin hook does in every vLLM process: our architectures, QWenConfig, QWenTokenizer."""
    from qwenvl_vllm.model_registry import register
    from qwenvl_vllm.tokenizers import register_qwen_vl

    register()
    register_qwen_vl()


def _vllm_config(base, model_dir: Path, max_model_len: int | None = None):
    from vllm.config import ModelConfig, VllmConfig

    _register()
    model_config = ModelConfig(
        model=str(model_dir), dtype="float32", limit_mm_per_prompt={"image": 2}, max_model_len=max_model_len
    )
    return VllmConfig(
        model_config=model_config,
        device_config=base.device_config,
        compilation_config=base.compilation_config,
    )


class CausalSDPA(torch.nn.Module):
    """Stand-in for vLLM's paged Attention on CPU: plain causal attention over one sequence."""

    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int | None = None, **_):
        super().__init__()
        self.num_heads, self.head_size, self.scale = num_heads, head_size, scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t = q.shape[0]
        q, k, v = (x.view(t, self.num_heads, self.head_size).transpose(0, 1) for x in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return out.transpose(0, 1).reshape(t, -1)


def _build_model(
    vllm_cpu, model_dir: Path, monkeypatch: pytest.MonkeyPatch, max_model_len: int | None = None
):
    from vllm.config import set_current_vllm_config

    import qwenvl_vllm.models.qwen_vl as qwen_vl

    cfg = _vllm_config(vllm_cpu, model_dir, max_model_len)
    monkeypatch.setattr(qwen_vl, "Attention", CausalSDPA)
    with set_current_vllm_config(cfg), torch.device("cpu"):
        model = qwen_vl.QwenVLForConditionalGeneration(vllm_config=cfg).eval()
    _, state = read_checkpoint(model_dir)
    loaded = model.load_weights((name, t.float()) for name, t in state.items())
    return model, loaded, cfg


def _reference(model_dir: Path) -> QwenVLReference:
    config, state = read_checkpoint(model_dir)
    ref = QwenVLReference(config)
    ref.load_checkpoint_state({k: v.float() for k, v in state.items()})
    return ref.float().eval()


@pytest.fixture(scope="module")
def vl_model(vllm_cpu, tiny_ckpt: Path):
    with pytest.MonkeyPatch.context() as mp:
        yield _build_model(vllm_cpu, tiny_ckpt, mp)


def _images() -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    arrays = [
        torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8) for h, w in ((300, 500), (64, 64))
    ]
    return [Image.fromarray(a.numpy()) for a in arrays]


def _processor(model_dir: Path):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    _register()
    return MULTIMODAL_REGISTRY.create_processor(
        ModelConfig(model=str(model_dir), limit_mm_per_prompt={"image": 2})
    )


def _process(processor, prompt: str | list[int], images: list[Image.Image] | torch.Tensor):
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    items = processor.info.parse_mm_data({"image": images} if len(images) else {})
    return processor.apply(ProcessorInputs(prompt, items), TimingContext(enabled=False))


# ---- (1) vision tower ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pos_rows", [256, 1024])
def test_visual_matches_reference(vllm_cpu, tiny_ckpt: Path, pos_rows: int) -> None:
    """ViT + resampler vs the reference; also with a position table stored at the 32x32 patch grid."""
    from vllm.model_executor.models.utils import AutoWeightsLoader

    from qwenvl_vllm.models.qwen_vl_visual import QwenVLVisionTransformer

    config, state = read_checkpoint(tiny_ckpt)
    prefix = "transformer.visual."
    visual_state = {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}
    if pos_rows != 256:
        g = torch.Generator().manual_seed(1)
        visual_state["positional_embedding"] = torch.randn(pos_rows, config["visual"]["width"], generator=g)

    ours = QwenVLVisionTransformer(**config["visual"], prefix="visual").eval()
    loaded = AutoWeightsLoader(ours).load_weights(visual_state.items())
    assert loaded == {n for n, _ in ours.named_parameters()}

    ref = RefVisionTransformer(config["visual"])
    if pos_rows != 256:
        ref.positional_embedding = torch.nn.Parameter(torch.empty(pos_rows, config["visual"]["width"]))
    ref.load_state_dict(visual_state, strict=True)
    ref.eval()

    pixels = torch.randn(2, 3, 448, 448, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got, want = ours(pixels), ref(pixels)
    assert got.shape == (2, 256, config["hidden_size"])
    assert want.std() > 0.1  # features carry signal, so a match is meaningful
    torch.testing.assert_close(got, want, **TOL)


def test_resampler_sincos_table_matches_release_formula(vllm_cpu) -> None:
    """vLLM's Resampler2 init table == the MAE 2-D sin-cos of the reference (written independently)."""
    from qwenvl_vllm.models.qwen_vl_visual import QwenVLVisionTransformer

    vis = QwenVLVisionTransformer(
        image_size=448, patch_size=14, width=32, layers=1, heads=2, mlp_ratio=4.0, output_dim=128
    )
    torch.testing.assert_close(vis.attn_pool.pos_embed.float(), sincos_2d(128, 16), rtol=0, atol=1e-5)


# ---- (2) LLM + merge -----------------------------------------------------------------------------------


def _ours_logits(model, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
    mm = model.embed_multimodal(pixel_values=pixel_values) if pixel_values is not None else None
    embeds = model.embed_input_ids(input_ids, mm, is_multimodal=input_ids == IMG_PAD)
    positions = torch.arange(input_ids.shape[0])
    hidden = model(input_ids, positions, inputs_embeds=embeds)
    return model.compute_logits(hidden)


def test_image_prompt_logits_match_reference(vl_model, tiny_ckpt: Path, cpu_pixels) -> None:
    model, _, _ = vl_model
    processor = _processor(tiny_ckpt)
    images = _images()
    prompt = "<|im_start|>user\nPicture 1: <img>a.jpg</img>\nPicture 2: <img></img>\nCompare.<|im_end|>\n"
    out = _process(processor, prompt, images)
    ids = torch.tensor(out["prompt_token_ids"])
    pixel_values = torch.stack([item["pixel_values"].data for item in out["mm_kwargs"]["image"]])
    ref = _reference(tiny_ckpt)
    with torch.inference_mode():
        got, want = _ours_logits(model, ids, pixel_values), ref(ids, pixel_values)
        text_only = ref(ids)  # the same ids with the <imgpad> embeddings left in place
    assert got.shape == (ids.shape[0], 151936)
    torch.testing.assert_close(got, want, **TOL)
    # the image features matter: without them the logits after the first image differ by O(1)
    assert (want - text_only)[10:].abs().max() > 1e-2


def test_encode_ahead_path_gives_the_same_logits(vl_model, tiny_ckpt: Path, cpu_pixels, monkeypatch) -> None:
    """With an EncoderStream (what the model gets under the encode-ahead scheduler; inline on CPU) it encodes
    through it and waits in embed_input_ids: the same logits, and the scheduler's counter sees the images."""
    from qwenvl_vllm.models.encoder_stream import PROGRESS, EncoderStream

    model, _, _ = vl_model
    prompt = "<|im_start|>user\nPicture 1: <img>a.jpg</img>\nPicture 2: <img></img>\nCompare.<|im_end|>\n"
    out = _process(_processor(tiny_ckpt), prompt, _images())
    ids = torch.tensor(out["prompt_token_ids"])
    pixel_values = torch.stack([item["pixel_values"].data for item in out["mm_kwargs"]["image"]])
    with torch.inference_mode():
        want = _ours_logits(model, ids, pixel_values)
        monkeypatch.setattr(model, "_encoder_stream", EncoderStream(torch.device("cpu")))
        PROGRESS.reset()
        got = _ours_logits(model, ids, pixel_values)
    assert PROGRESS.launched == pixel_values.shape[0]
    assert torch.equal(got, want)


def test_text_prompt_logits_match_reference(vl_model, tiny_ckpt: Path) -> None:
    model, _, _ = vl_model
    ids = torch.tensor([151644, 872, 198, 9707, 11, 1879, 0, 151645, 198, 151644, 77091, 198])
    with torch.inference_mode():
        torch.testing.assert_close(_ours_logits(model, ids, None), _reference(tiny_ckpt)(ids), **TOL)


def test_reference_gptq_dequantization_matches_writer(tmp_path: Path) -> None:
    """The reference's own AutoGPTQ decoder (used for Int4 parity on the GPU) reproduces the writer's
    exactly-dequantized twin, so both GPU comparisons rest on the same weights."""
    from qwenvl_vllm.checkpoint.writer import write_checkpoint

    gptq = write_checkpoint("tiny-qwen-vl", "gptq-int4", tmp_path / "gptq", seed=4)
    twin = write_checkpoint("tiny-qwen-vl", "gptq-int4", tmp_path / "deq", seed=4, dequantized=True)
    _, ours = read_checkpoint(gptq)
    _, want = read_checkpoint(twin)
    assert ours.keys() == want.keys()
    linears = [
        k for k in want if k.startswith("transformer.h.") and ".ln_" not in k and not k.endswith(".bias")
    ]
    assert len(linears) == 2 * 5  # quantized: c_attn, attn.c_proj, w1, w2, mlp.c_proj per layer
    assert all(ours[k].dtype == torch.float32 for k in linears)  # decoded here, not stored
    for name in want:  # the other tensors are the same values stored as fp16 vs bf16
        torch.testing.assert_close(ours[name].float(), want[name].float(), rtol=0, atol=0, msg=name)


def test_parity_script_compare_on_cpu(vl_model, tiny_ckpt: Path, cpu_pixels) -> None:
    """The GPU parity script's bookkeeping (tests/reference/qwen_vl_compare.py: which logprob position belongs
    to which token), fed with our model's logprobs computed the way vLLM reports them; the reference side is
    the script's own code, on CPU."""
    from reference import qwen_vl_compare as parity

    model, _, _ = vl_model
    processor = _processor(tiny_ckpt)
    reqs = [r for r in parity.parity_requests(has_visual=True) if r["name"] in ("one_image", "text")]
    got = []
    for req in reqs:
        out = _process(processor, req["prompt"], req["images"])
        ids, gen_ids = out["prompt_token_ids"], [9707, 11, 1879]
        pixels = parity_pixels(out) if req["images"] else None
        with torch.inference_mode():
            lp = torch.log_softmax(_ours_logits(model, torch.tensor(ids + gen_ids), pixels), dim=-1)
        t = len(ids)
        top = lp[t - 1].topk(parity.TOP_K)
        got.append(
            {
                "prompt_ids": ids,
                "prompt_lp": [lp[i - 1, ids[i]].item() for i in range(1, t)],
                "gen_ids": gen_ids,
                "decode_lp": [lp[t - 1 + i, tok].item() for i, tok in enumerate(gen_ids)],
                "topk": dict(zip(top.indices.tolist(), top.values.tolist(), strict=True)),
            }
        )
    report = parity.compare(tiny_ckpt, reqs, got, "float32", device="cpu")
    for entry in report:
        for key in ("prompt_logprob_rel_err", "decode_logprob_rel_err", "final_top20_rel_err"):
            assert entry[key] < 1e-5, entry
        assert entry["final_top1_agrees"]
    image_entry = next(e for e in report if e["images"])
    assert image_entry["image_effect_max_abs"] > 100 * image_entry["prompt_logprob_max_abs"]


def parity_pixels(out) -> torch.Tensor:
    return torch.stack([item["pixel_values"].data for item in out["mm_kwargs"]["image"]])


# ---- (3) weight names ----------------------------------------------------------------------------------


def test_all_weights_load_by_name(vl_model) -> None:
    model, loaded, _ = vl_model
    assert loaded == {name for name, _ in model.named_parameters()}


def test_text_only_checkpoint_builds_without_visual(vllm_cpu, text_only_ckpt: Path, monkeypatch) -> None:
    model, loaded, cfg = _build_model(vllm_cpu, text_only_ckpt, monkeypatch)
    assert model.visual is None
    assert loaded == {name for name, _ in model.named_parameters()}
    assert not any(name.startswith("visual") for name in loaded)
    ids = torch.tensor([9707, 11, 1879, 0])
    with torch.inference_mode():
        torch.testing.assert_close(_ours_logits(model, ids, None), _reference(text_only_ckpt)(ids), **TOL)
    from vllm.multimodal import MULTIMODAL_REGISTRY

    assert not MULTIMODAL_REGISTRY.supports_multimodal_inputs(cfg.model_config)  # served as text-only


def test_unknown_weight_name_is_rejected(vl_model) -> None:
    model, _, _ = vl_model
    with pytest.raises(ValueError, match="no module or parameter"):
        model.load_weights([("transformer.h.0.attn.q_proj.weight", torch.zeros(1))])


@pytest.fixture(scope="module")
def short_context_ckpt(text_only_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The text-only checkpoint with seq_length 8, so a 12-token sequence runs past the trained context."""
    out = tmp_path_factory.mktemp("qwen_short")
    for f in text_only_ckpt.iterdir():
        shutil.copy(f, out / f.name)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"seq_length": 8}))
    return out


def test_logn_scale_is_the_release_list() -> None:
    from reference.qwen_vl_ref import logn

    from qwenvl_vllm.models.qwen_vl import logn_scale

    positions = torch.tensor([0, 7, 2047, 2048, 2049, 4095, 8191])
    torch.testing.assert_close(logn_scale(positions, 2048)[:, 0], logn(positions, 2048), rtol=1e-6, atol=0)
    scale = logn_scale(positions, 2048)[:, 0]
    assert scale[:3].eq(1).all() and scale[3:].gt(1).all()  # position 2047 is the 2048th token


def test_generation_past_seq_length_matches_reference(
    vllm_cpu, short_context_ckpt: Path, monkeypatch
) -> None:
    """A 6-token prompt generating 6 more with seq_length 8: logn acts on positions 8..11, NTK stays off."""
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # vLLM derives max_model_len = seq_length
    model, _, _ = _build_model(vllm_cpu, short_context_ckpt, monkeypatch, max_model_len=64)
    ids = torch.tensor([9707, 11, 1879, 0, 151645, 198, 151644, 77091, 198, 9707, 11, 1879])
    ref = _reference(short_context_ckpt)
    with torch.inference_mode():
        got = _ours_logits(model, ids, None)
        torch.testing.assert_close(got, ref(ids, prompt_len=6), **TOL)
        for layer in ref.transformer.h:  # the test can fail: without logn the later positions move
            layer.attn.use_logn = False
        no_logn = ref(ids, prompt_len=6)
    torch.testing.assert_close(got[:8], no_logn[:8], **TOL)
    assert (got[8:] - no_logn[8:]).abs().max() > 1e-3


def test_context_within_seq_length_has_no_logn(vllm_cpu, short_context_ckpt: Path, monkeypatch) -> None:
    from qwenvl_vllm.models.qwen_vl import logn_length

    model, _, _ = _build_model(vllm_cpu, short_context_ckpt, monkeypatch, max_model_len=8)
    assert all(block.attn.logn_seq_length is None for block in model.transformer.h)
    config = json.loads((short_context_ckpt / "config.json").read_text())
    assert logn_length(SimpleNamespace(**config), 64) == 8
    assert logn_length(SimpleNamespace(**config | {"use_logn_attn": False}), 64) is None


# ---- (4) processor -------------------------------------------------------------------------------------


def _expanded(ids: list[int]) -> list[int]:
    out: list[int] = []
    for tok in ids:
        out += [IMG_START, *[IMG_PAD] * 256] if tok == IMG_START else [tok]
    return out


def test_processor_expands_each_image_tag(tiny_ckpt: Path, cpu_pixels) -> None:
    from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values

    processor = _processor(tiny_ckpt)
    tokenizer = processor.info.get_tokenizer()
    images = _images()
    prompt = "Picture 1: <img>https://x/a.jpg</img>\nPicture 2: <img></img>\nWhat differs?"
    empty_tags = tokenizer.encode("Picture 1: <img></img>\nPicture 2: <img></img>\nWhat differs?")
    want = _expanded(empty_tags)

    from_text = _process(processor, prompt, images)
    from_ids = _process(processor, tokenizer.encode(prompt), images)  # vLLM's renderer path: ids first
    for out in (from_text, from_ids):
        assert out["prompt_token_ids"] == want
        ranges = out["mm_placeholders"]["image"]
        assert [(r.offset, r.length) for r in ranges] == [
            (i, 258) for i, t in enumerate(want) if t == IMG_START
        ]
        assert all(r.is_embed.tolist() == [False] + [True] * 256 + [False] for r in ranges)
        pixels = torch.stack([item["pixel_values"].data for item in out["mm_kwargs"]["image"]])
        torch.testing.assert_close(pixels, qwen_vl_pixel_values(images), rtol=0, atol=0)


def test_precomputed_image_embeds(vl_model, tiny_ckpt: Path) -> None:
    """`image_embeds` [N, 256, hidden] skip the tower: same expansion, and the model passes them through."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    model, _, _ = vl_model
    _register()
    processor = MULTIMODAL_REGISTRY.create_processor(
        ModelConfig(model=str(tiny_ckpt), limit_mm_per_prompt={"image": 2}, enable_mm_embeds=True)
    )
    embeds = torch.randn(2, 256, 128)
    out = _process(processor, "Picture 1: <img></img>\nPicture 2: <img></img>\nHi", embeds)
    assert out["prompt_token_ids"].count(IMG_PAD) == 512
    data = torch.stack([item["image_embeds"].data for item in out["mm_kwargs"]["image"]])
    torch.testing.assert_close(model.embed_multimodal(image_embeds=data), embeds, rtol=0, atol=0)
    with pytest.raises(ValueError):  # 255 features per image do not fit the 256-query schema
        model.embed_multimodal(image_embeds=embeds[:, :255])


def test_processor_rejects_missing_placeholders(tiny_ckpt: Path) -> None:
    processor = _processor(tiny_ckpt)
    with pytest.raises(ValueError, match="placeholder"):
        _process(processor, "Picture 1: <img></img>\nno second tag", _images())


def test_processor_dummy_inputs_for_profiling(tiny_ckpt: Path) -> None:
    processor = _processor(tiny_ckpt)
    inputs = processor.dummy_inputs.get_dummy_processor_inputs(2048, {"image": 2}, {})
    from vllm.multimodal.processing import TimingContext

    out = processor.apply(inputs, TimingContext(enabled=False))
    assert out["prompt_token_ids"].count(IMG_PAD) == 512
    assert processor.info.get_mm_max_tokens_per_item(2048, {"image": 1}) == {"image": 256}


def test_device_pixels_give_the_release_transform(vl_model, tiny_ckpt: Path, monkeypatch) -> None:
    """QWENVL_VLLM_DEVICE_PIXELS: the processor ships decoded RGB uint8, the model's own transform of them
    equals the CPU path's pixel values exactly, and so do the image embeddings."""
    from qwenvl_vllm.constants import UINT8_PIXEL_KEYS
    from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values

    model, _, _ = vl_model
    images = [*_images(), _images()[0].convert("L"), Image.new("RGBA", (40, 900), (10, 200, 30, 128))]
    prompt = "".join(f"Picture {i + 1}: <img></img>\n" for i in range(len(images)))
    processor = _processor_with(tiny_ckpt, len(images))
    monkeypatch.setenv("QWENVL_VLLM_DEVICE_PIXELS", "0")
    cpu_out = _process(processor, prompt, images)
    want = torch.stack([item["pixel_values"].data for item in cpu_out["mm_kwargs"]["image"]])
    monkeypatch.setenv("QWENVL_VLLM_DEVICE_PIXELS", "1")
    out = _process(_processor_with(tiny_ckpt, len(images)), prompt, images)
    shipped = [item[UINT8_PIXEL_KEYS["image"]].data for item in out["mm_kwargs"]["image"]]
    assert [(p.dtype, tuple(p.shape)) for p in shipped] == [
        (torch.uint8, (image.height, image.width, 3)) for image in images
    ]
    torch.testing.assert_close(want[:2], qwen_vl_pixel_values(images[:2]), rtol=0, atol=0)
    with torch.inference_mode():
        parsed = model._parse_and_validate_image_input(**{UINT8_PIXEL_KEYS["image"]: shipped})
        assert torch.equal(parsed["data"], want)
        got = model.embed_multimodal(**{UINT8_PIXEL_KEYS["image"]: shipped})
        assert torch.equal(got, model.embed_multimodal(pixel_values=want))


def _processor_with(model_dir: Path, images: int):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    _register()
    return MULTIMODAL_REGISTRY.create_processor(
        ModelConfig(model=str(model_dir), limit_mm_per_prompt={"image": images})
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_pixels": 50_000},
        {"items": {"image": {"0": {"max_pixels": -1}}}},
        {"items": {"image": {"3": {}}}},
    ],
)
def test_qwen_vl_refuses_sizing_options(tiny_ckpt: Path, kwargs: dict) -> None:
    """Every Qwen-VL image is 448x448: a qwen-vl-utils size option must be a 400, not silently ignored."""
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    processor = _processor(tiny_ckpt)
    items = processor.info.parse_mm_data({"image": _images()[:1]})
    inputs = ProcessorInputs("Picture 1: <img></img>\nHi", items, hf_processor_mm_kwargs=kwargs)
    with pytest.raises(ValueError, match="448x448"):
        processor.apply(inputs, TimingContext(enabled=False))
    plain = processor.apply(ProcessorInputs(inputs.prompt, items), TimingContext(enabled=False))
    assert plain["prompt_token_ids"].count(IMG_PAD) == 256


def test_tower_warmup_resizes_one_image_and_runs_the_tower_once(vl_model, monkeypatch) -> None:
    """`QWENVL_VLLM_WARM_TOWER`: the first logits call runs the 448x448 (here the tiny tower's size) resize
    and the tower, so their kernels compile before serving; later calls do not."""
    import qwenvl_vllm.processors.qwen_vl_pixels as pixels_module
    from qwenvl_vllm.models.tower_warmup import WARM_DECODED, TowerWarmup
    from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values

    model, _, _ = vl_model
    monkeypatch.setenv("QWENVL_VLLM_DEVICE_PIXELS", "1")
    resized, towered = [], []
    resize = pixels_module.resize_like_pil
    monkeypatch.setattr(pixels_module, "resize_like_pil", lambda *a: resized.append(a[1:]) or resize(*a))
    forward = model.visual.forward
    monkeypatch.setattr(model.visual, "forward", lambda x: towered.append(x) or forward(x))
    monkeypatch.setattr(model, "tower_warmup", TowerWarmup(enabled=True))
    for _ in range(2):
        model.compute_logits(torch.zeros(1, model.config.hidden_size))
    assert resized == [(model.image_size, model.image_size)]
    black = Image.new("RGB", WARM_DECODED[::-1])
    assert len(towered) == 1 and torch.equal(towered[0], qwen_vl_pixel_values([black], model.image_size))


def test_tower_warmup_needs_a_tower(vllm_cpu, text_only_ckpt: Path, monkeypatch) -> None:
    model, _, _ = _build_model(vllm_cpu, text_only_ckpt, monkeypatch)
    assert model._tower_to_warm() is None and model._tower_warmup() is None

"""Our vLLM multimodal processor for Qwen2-VL on a tiny checkpoint, against the references.

References: qwen-vl-utils 0.0.14 (sizes: fetch_image / fetch_video) and transformers 5.17's Qwen2VLProcessor
run with do_resize=False on qwen-vl-utils' output (token expansion and pixel values). Pixel values are
compared at 1e-6 absolute: both sides use the same float32 normalisation, so they are expected identical.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from qwen_vl_utils import vision_process as qvu

from qwenvl_vllm.models.qwen2_vl_processing import Qwen2VLMultiModalProcessor
from qwenvl_vllm.mrope import get_rope_index
from qwenvl_vllm.synthetic import make_image, write_video

IMAGE_PAD, VIDEO_PAD = 151655, 151656
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
ATOL = 1e-6


def _model_config(ckpt: str, **kwargs):
    from vllm.config import ModelConfig

    kwargs.setdefault("limit_mm_per_prompt", {"image": 3, "video": 2})
    kwargs.setdefault("max_model_len", 8192)
    return ModelConfig(model=ckpt, dtype="float32", **kwargs)


def _processor(ckpt: str, **kwargs):
    from vllm.multimodal import MULTIMODAL_REGISTRY

    return MULTIMODAL_REGISTRY.create_processor(_model_config(ckpt, **kwargs))


def _apply(proc, prompt, mm_data: dict, mm_kwargs: dict | None = None):
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    items = proc.info.parse_mm_data(mm_data)
    inputs = ProcessorInputs(prompt, items, hf_processor_mm_kwargs=mm_kwargs or {})
    return proc.apply(inputs, TimingContext(enabled=False))


def _field(out, modality: str, key: str) -> list[torch.Tensor]:
    return [item[key].data for item in out["mm_kwargs"][modality]]


def _hf(ckpt: str, prompt: str, images=None, videos=None):
    from transformers import AutoProcessor

    hf = AutoProcessor.from_pretrained(ckpt)
    return hf(text=[prompt], images=images, videos=videos, do_resize=False, return_tensors="pt")


def _video_file(tmp_path) -> str:
    return str(write_video(tmp_path / "clip.mp4", n_frames=8, fps=4.0, width=96, height=64, seed=3))


def test_our_processor_is_registered(ckpt: str) -> None:
    assert isinstance(_processor(ckpt), Qwen2VLMultiModalProcessor)


def test_images_match_qwen_vl_utils_and_hf(ckpt: str, cpu_pixels) -> None:
    raw = [make_image(500, 300, seed=1), make_image(97, 61, "RGBA", seed=2), make_image(1000, 40, seed=3)]
    prompt = f"<|im_start|>user\n{IMAGE}a{IMAGE}b{IMAGE}what?<|im_end|>\n<|im_start|>assistant\n"
    out = _apply(_processor(ckpt), prompt, {"image": raw})
    resized = [qvu.fetch_image({"image": image}) for image in raw]  # qwen-vl-utils sizes and pixels
    ref = _hf(ckpt, prompt, images=resized)
    assert out["prompt_token_ids"] == ref["input_ids"][0].tolist()
    grids = torch.stack(_field(out, "image", "image_grid_thw"))
    assert grids.tolist() == ref["image_grid_thw"].tolist()
    assert grids.tolist() == [[1, im.height // 14, im.width // 14] for im in resized]
    pixels = torch.cat(_field(out, "image", "pixel_values"))
    torch.testing.assert_close(pixels, ref["pixel_values"], atol=ATOL, rtol=0)
    lengths = [p.length for p in out["mm_placeholders"]["image"]]
    assert lengths == [(im.height // 28) * (im.width // 28) for im in resized]


def test_video_matches_qwen_vl_utils_and_hf(ckpt: str, tmp_path, cpu_pixels) -> None:
    ele = {"video": _video_file(tmp_path), "nframes": 4}
    raw, _, _ = qvu._read_video_decord(ele)  # the reference's own sampled frames [T, C, H, W] uint8
    expected = qvu.fetch_video(ele)  # resized float frames [T, C, H, W]
    prompt = f"<|im_start|>user\n{VIDEO}describe<|im_end|>\n"
    ref = _hf(ckpt, prompt, videos=[expected])
    proc = _processor(ckpt)
    # raw frames in vLLM's layout [T, H, W, C]; and already-resized frames (uint8, as to_vllm_inputs sends)
    for frames in (
        raw.permute(0, 2, 3, 1).numpy(),
        expected.round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
    ):
        out = _apply(proc, prompt, {"video": [frames]})
        assert out["prompt_token_ids"] == ref["input_ids"][0].tolist()
        assert _field(out, "video", "video_grid_thw")[0].tolist() == ref["video_grid_thw"][0].tolist()
        pixels = _field(out, "video", "pixel_values_videos")[0]
        torch.testing.assert_close(pixels, ref["pixel_values_videos"], atol=ATOL, rtol=0)


def test_odd_frame_count_is_padded(ckpt: str) -> None:
    frames = np.stack([np.asarray(make_image(56, 56, seed=i)) for i in range(3)])  # [3, 56, 56, 3]
    out = _apply(_processor(ckpt), VIDEO, {"video": [frames]}, {"min_pixels": 3136})
    assert _field(out, "video", "video_grid_thw")[0].tolist() == [2, 4, 4]
    assert out["mm_placeholders"]["video"][0].length == 2 * 2 * 2


def test_per_request_size_options(ckpt: str) -> None:
    proc = _processor(ckpt)
    image = make_image(1000, 800, seed=4)

    def grid(kwargs: dict) -> list[int]:
        return _field(_apply(proc, IMAGE, {"image": [image]}, kwargs), "image", "image_grid_thw")[0].tolist()

    def expected(ele: dict) -> list[int]:
        resized = qvu.fetch_image({"image": image, **ele})
        return [1, resized.height // 14, resized.width // 14]

    assert grid({}) == expected({})
    small = {"max_pixels": 256 * 28 * 28}
    assert grid(small) == expected(small) != grid({})
    fixed = {"resized_height": 280, "resized_width": 420}
    assert grid(fixed) == expected(fixed) == [1, 20, 30]
    assert grid({"min_pixels": 4 * 784, "max_pixels": 64 * 784, "fps": 2.0}) == expected(
        {"max_pixels": 64 * 784}
    )
    # engine-level kwargs apply, a request's own kwargs win over them
    engine = _processor(ckpt, mm_processor_kwargs={"max_pixels": 100 * 784})
    engine_grid = _field(_apply(engine, IMAGE, {"image": [image]}), "image", "image_grid_thw")[0].tolist()
    assert engine_grid == expected({"max_pixels": 100 * 784})
    override = _apply(engine, IMAGE, {"image": [image]}, small)
    assert _field(override, "image", "image_grid_thw")[0].tolist() == expected(small)


def test_bad_size_options(ckpt: str) -> None:
    proc = _processor(ckpt)
    image = make_image(100, 100)
    with pytest.raises(ValueError, match="unsupported mm_processor_kwargs"):
        _apply(proc, IMAGE, {"image": [image]}, {"max_pixel": 1000})
    with pytest.raises(ValueError, match="positive number"):
        _apply(proc, IMAGE, {"image": [image]}, {"max_pixels": -1})
    with pytest.raises(ValueError, match="resized_height and resized_width"):
        _apply(proc, IMAGE, {"image": [image]}, {"resized_height": 280})
    with pytest.raises(ValueError, match="multiples of 28"):
        _apply(proc, IMAGE, {"image": [image]}, {"do_resize": False})


def test_do_resize_false_keeps_given_size(ckpt: str) -> None:
    image = make_image(28 * 200, 56, seed=5)  # far outside the default pixel range
    out = _apply(_processor(ckpt), IMAGE, {"image": [image]}, {"do_resize": False})
    assert _field(out, "image", "image_grid_thw")[0].tolist() == [1, 4, 400]


def test_profiling_respects_max_pixels(ckpt: str) -> None:
    from vllm.multimodal import MULTIMODAL_REGISTRY

    counts = {"image": 1, "video": 1}
    small = _model_config(ckpt, mm_processor_kwargs={"max_pixels": 512 * 784})
    proc = MULTIMODAL_REGISTRY.create_processor(small)
    max_tokens = proc.info.get_mm_max_tokens_per_item(small.max_model_len, counts)
    assert max_tokens["image"] == 512
    assert max_tokens["video"] <= small.max_model_len
    for modality in ("image", "video"):
        dummy = MULTIMODAL_REGISTRY.get_dummy_mm_inputs(small, {modality: 1}, processor=proc)
        assert dummy["mm_placeholders"][modality][0].length == max_tokens[modality]
    # default max_pixels (16384 tokens) is capped by the sequence length
    short = _model_config(ckpt, max_model_len=1024)
    proc = MULTIMODAL_REGISTRY.create_processor(short)
    assert proc.info.get_mm_max_tokens_per_item(1024, counts)["image"] == 1024
    dummy = MULTIMODAL_REGISTRY.get_dummy_mm_inputs(short, {"image": 1}, processor=proc)
    assert dummy["mm_placeholders"]["image"][0].length == 1024


def test_precomputed_image_embeddings(ckpt: str) -> None:
    proc = _processor(ckpt, enable_mm_embeds=True)
    embeds = torch.randn(6 + 4, 128)
    data = {"image": {"image_embeds": embeds, "image_grid_thw": torch.tensor([[1, 4, 6], [1, 4, 4]])}}
    out = _apply(proc, f"{IMAGE}x{IMAGE}", data)
    assert [p.length for p in out["mm_placeholders"]["image"]] == [6, 4]
    assert out["prompt_token_ids"].count(IMAGE_PAD) == 10
    got = _field(out, "image", "image_embeds")
    assert torch.equal(torch.cat(got), embeds) and [g.shape[0] for g in got] == [6, 4]


def test_mrope_positions_from_processor_output(ckpt: str) -> None:
    from vllm.multimodal.inputs import MultiModalFeatureSpec

    from qwenvl_vllm.models.qwen2_vl import Qwen2VLForConditionalGeneration

    frames = np.stack([np.asarray(make_image(112, 84, seed=i)) for i in range(6)])
    prompt = f"a{IMAGE}b{VIDEO}c{IMAGE}d"
    out = _apply(
        _processor(ckpt), prompt, {"image": [make_image(60, 90), make_image(200, 50)], "video": [frames]}
    )
    features = [
        MultiModalFeatureSpec(data=item, modality=m, identifier=f"{m}{i}", mm_position=pos)
        for m in ("image", "video")
        for i, (item, pos) in enumerate(zip(out["mm_kwargs"][m], out["mm_placeholders"][m], strict=True))
    ]
    model = SimpleNamespace(merge_size=2)
    positions, delta = Qwen2VLForConditionalGeneration.get_mrope_input_positions(
        model, out["prompt_token_ids"], features
    )
    ids = torch.tensor([out["prompt_token_ids"]])
    image_grid = torch.stack(_field(out, "image", "image_grid_thw"))
    video_grid = torch.stack(_field(out, "video", "video_grid_thw"))
    expected, deltas = get_rope_index(ids, image_grid, video_grid)
    assert torch.equal(positions, expected[:, 0]) and delta == int(deltas[0, 0])

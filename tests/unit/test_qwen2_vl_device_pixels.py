"""QWENVL_VLLM_DEVICE_PIXELS: the processor ships decoded uint8 pixels and the model's conversion
(`uint8_rows`, run here on the CPU: the same code and kernels' torch paths) gives exactly the patch rows of
the processor's own CPU path, for images (resized up, down, kept) and videos (odd frame counts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwenvl_vllm.constants import UINT8_PIXEL_KEYS
from qwenvl_vllm.geometry import QWEN2_VL
from qwenvl_vllm.models.qwen2_vl_device_pixels import rows_match_cpu_path, uint8_rows
from qwenvl_vllm.processors.rgbx import mark_unshared
from qwenvl_vllm.synthetic import make_image

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def _apply(ckpt: str, dtype: str, prompt: str, mm_data: dict, mm_kwargs: dict | None = None):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    config = ModelConfig(
        model=ckpt, dtype=dtype, max_model_len=8192, limit_mm_per_prompt={"image": 3, "video": 2}
    )
    proc = MULTIMODAL_REGISTRY.create_processor(config)
    inputs = ProcessorInputs(prompt, proc.info.parse_mm_data(mm_data), hf_processor_mm_kwargs=mm_kwargs or {})
    return proc.apply(inputs, TimingContext(enabled=False))


def _items(out, modality: str, key: str) -> list[torch.Tensor]:
    return [item[key].data for item in out["mm_kwargs"][modality]]


def _both(ckpt, monkeypatch, dtype, prompt, mm_data, mm_kwargs=None):
    monkeypatch.setenv("QWENVL_VLLM_DEVICE_PIXELS", "0")
    cpu = _apply(ckpt, dtype, prompt, mm_data, mm_kwargs)
    monkeypatch.setenv("QWENVL_VLLM_DEVICE_PIXELS", "1")
    return cpu, _apply(ckpt, dtype, prompt, mm_data, mm_kwargs)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_images_give_the_cpu_paths_rows(ckpt, monkeypatch, dtype):
    images = [make_image(300, 200, seed=1), make_image(40, 50, seed=2), make_image(56, 84, seed=3)]
    decoded = [mark_unshared(image.copy()) for image in images]  # as the server's media connector decodes
    prompt = IMAGE * len(images)
    cpu, dev = _both(ckpt, monkeypatch, dtype, prompt, {"image": decoded}, {"max_pixels": 128 * 28 * 28})
    assert dev["prompt_token_ids"] == cpu["prompt_token_ids"]
    shipped = _items(dev, "image", UINT8_PIXEL_KEYS["image"])
    assert [p.dtype for p in shipped] == [torch.uint8] * 3
    # not resized, and Pillow's RGB storage (4 bytes a pixel) shipped as it is
    assert [tuple(p.shape) for p in shipped] == [(200, 300, 4), (50, 40, 4), (84, 56, 4)]
    for pixels, image in zip(shipped, images, strict=True):
        assert torch.equal(pixels[..., :3], torch.from_numpy(np.array(image)))
    grids = _items(dev, "image", "image_grid_thw")
    assert [g.tolist() for g in grids] == [g.tolist() for g in _items(cpu, "image", "image_grid_thw")]
    for pixels, grid, want in zip(shipped, grids, _items(cpu, "image", "pixel_values"), strict=True):
        got = uint8_rows(pixels, grid.tolist(), QWEN2_VL, torch.device("cpu"), getattr(torch, dtype))
        assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("layout", ["thwc", "tchw"])  # vLLM's decoded frames; qwen-vl-utils' tensors
def test_videos_give_the_cpu_paths_rows(ckpt, monkeypatch, layout):
    frames = np.stack([np.asarray(make_image(90, 60, seed=s)) for s in range(5)])  # [5, 60, 90, 3], odd count
    video = frames if layout == "thwc" else torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    cpu, dev = _both(ckpt, monkeypatch, "bfloat16", VIDEO, {"video": [video]}, {"max_pixels": 64 * 28 * 28})
    assert dev["prompt_token_ids"] == cpu["prompt_token_ids"]
    (pixels,) = _items(dev, "video", UINT8_PIXEL_KEYS["video"])
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (5, 60, 90, 3)  # vLLM's layout, either way
    assert torch.equal(pixels, torch.from_numpy(frames))
    (grid,) = _items(dev, "video", "video_grid_thw")
    (want,) = _items(cpu, "video", "pixel_values_videos")
    got = uint8_rows(pixels, grid.tolist(), QWEN2_VL, torch.device("cpu"), torch.bfloat16)
    assert torch.equal(got, want)


def test_only_the_clip_normalisation_ships_uint8():
    from qwenvl_vllm.constants import CLIP_MEAN, CLIP_STD

    assert rows_match_cpu_path(CLIP_MEAN, CLIP_STD, 1 / 255)
    assert not rows_match_cpu_path((0.5, 0.5, 0.5), CLIP_STD, 1 / 255)
    assert not rows_match_cpu_path(CLIP_MEAN, CLIP_STD, None)


def test_a_grid_that_does_not_fit_the_pixels_is_refused():
    pixels = torch.zeros(5, 56, 56, 3, dtype=torch.uint8)  # 5 frames -> 3 temporal groups, not 2
    with pytest.raises(ValueError, match="expected"):
        uint8_rows(pixels, [2, 4, 4], QWEN2_VL, torch.device("cpu"), torch.float32)


def test_model_embeds_uint8_items_as_their_rows(ckpt, build, monkeypatch):
    from safetensors.torch import load_file

    model = build(ckpt)
    model.load_weights(load_file(f"{ckpt}/model.safetensors").items())
    images = [make_image(90, 60, seed=4), make_image(60, 90, seed=5)]
    video = np.stack([np.asarray(make_image(56, 56, seed=s)) for s in range(4)])
    mm_data = {"image": images, "video": [video]}
    cpu, dev = _both(ckpt, monkeypatch, "float32", IMAGE * 2 + VIDEO, mm_data)

    def kwargs(out) -> dict:
        merged: dict = {}
        for modality in ("image", "video"):
            for key in out["mm_kwargs"][modality][0]:
                values = _items(out, modality, key)
                merged[key] = torch.stack(values) if key.endswith("grid_thw") else values
        return merged

    cpu_kwargs, dev_kwargs = kwargs(cpu), kwargs(dev)
    cpu_kwargs = {k: torch.cat(v) if isinstance(v, list) else v for k, v in cpu_kwargs.items()}
    assert set(dev_kwargs) == {"image_pixels_u8", "image_grid_thw", "video_pixels_u8", "video_grid_thw"}
    with torch.inference_mode():
        want = model.embed_multimodal(**cpu_kwargs)
        got = model.embed_multimodal(**dev_kwargs)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)  # identical tower inputs, same (deterministic CPU) tower


def test_side_stream_encodes_item_by_item_with_the_same_embeddings(ckpt, build, monkeypatch):
    """Under encode ahead (an EncoderStream; inline on CPU) the tower runs once per item: the same
    embeddings as one batched call, and the scheduler's counter sees every item."""
    from safetensors.torch import load_file

    from qwenvl_vllm.models.encoder_stream import PROGRESS, EncoderStream

    model = build(ckpt)
    model.load_weights(load_file(f"{ckpt}/model.safetensors").items())
    images = [make_image(90, 60, seed=6), make_image(120, 200, seed=7), make_image(56, 56, seed=8)]
    monkeypatch.setenv("QWENVL_VLLM_DEVICE_PIXELS", "0")
    out = _apply(ckpt, "float32", IMAGE * 3, {"image": images})
    kwargs = {
        "pixel_values": torch.cat(_items(out, "image", "pixel_values")),
        "image_grid_thw": torch.stack(_items(out, "image", "image_grid_thw")),
    }
    calls = []
    tower = model.visual.forward
    monkeypatch.setattr(model.visual, "forward", lambda *a: calls.append(a[1]) or tower(*a))
    with torch.inference_mode():
        want = model.embed_multimodal(**kwargs)
        monkeypatch.setattr(model, "_encoder_stream", EncoderStream(torch.device("cpu")))
        PROGRESS.reset()
        got = model.embed_multimodal(**kwargs)
    assert [len(grid) for grid in calls] == [3, 1, 1, 1]  # one batched call, then one call per image
    assert PROGRESS.launched == 3
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)  # float32 GEMMs of other row counts


def test_packed_and_uncopied_images_mix_in_one_request(ckpt, build, monkeypatch):
    from safetensors.torch import load_file

    model = build(ckpt)
    model.load_weights(load_file(f"{ckpt}/model.safetensors").items())
    # decoded by the server (a view), a caller's image and a caller's array (copies)
    images = [mark_unshared(make_image(90, 60, seed=6)), make_image(50, 40, seed=8)]
    images.append(np.asarray(make_image(60, 90, seed=7)))
    cpu, dev = _both(ckpt, monkeypatch, "float32", IMAGE * 3, {"image": images})
    shipped = _items(dev, "image", UINT8_PIXEL_KEYS["image"])
    assert [p.shape[-1] for p in shipped] == [4, 3, 3]
    grids = torch.stack(_items(dev, "image", "image_grid_thw"))
    with torch.inference_mode():
        want = model.embed_multimodal(
            pixel_values=torch.cat(_items(cpu, "image", "pixel_values")), image_grid_thw=grids
        )
        got = model.embed_multimodal(image_pixels_u8=shipped, image_grid_thw=grids)
    assert len(got) == len(want) == 3
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_an_image_of_other_channel_counts_is_refused():
    for channels in (1, 2, 5):
        with pytest.raises(ValueError, match=r"\[H, W, 3\] or \[H, W, 4\]"):
            uint8_rows(
                torch.zeros(56, 56, channels, dtype=torch.uint8),
                [1, 4, 4],
                QWEN2_VL,
                torch.device("cpu"),
                torch.float32,
            )


@pytest.mark.parametrize("model_copies", ["0", "1"])
def test_model_copies_pixels_keeps_them_on_the_cpu_through_vllms_batching(ckpt, monkeypatch, model_copies):
    """QWENVL_VLLM_MODEL_COPIES_PIXELS=1: vLLM's batching of the items (asked for the `meta` device here, a
    stand-in for CUDA) leaves the uint8 pixels on the CPU for the model to copy; by default it moves them."""
    monkeypatch.setenv("QWENVL_VLLM_MODEL_COPIES_PIXELS", model_copies)
    image = mark_unshared(make_image(300, 200, seed=1).copy())
    _, dev = _both(ckpt, monkeypatch, "bfloat16", IMAGE, {"image": [image]}, {"max_pixels": 128 * 28 * 28})
    batch = dev["mm_kwargs"].get_data(device="meta")
    pixels = batch[UINT8_PIXEL_KEYS["image"]]
    assert pixels.device.type == ("cpu" if model_copies == "1" else "meta")
    assert batch["image_grid_thw"].device.type == "cpu"  # kept on the CPU either way

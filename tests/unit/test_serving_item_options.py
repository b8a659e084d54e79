"""Per-item options (mm_processor_kwargs["items"]) in our Qwen2-VL processor, against qwen-vl-utils.

The same keys on one content item of a qwen-vl-utils message must give the same size and token count, and
vLLM's processor cache must keep items with different options apart (it keys items by content + kwargs).
"""

from __future__ import annotations

import pytest
from qwen_vl_utils import vision_process as qvu

from qwenvl_vllm.checkpoint.writer import write_checkpoint
from qwenvl_vllm.serving.video_loader import QwenVLUtilsVideoLoader
from qwenvl_vllm.synthetic import make_image, write_video

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
SMALL = {"max_pixels": 64 * 28 * 28}


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    from vllm.config import ModelConfig

    from qwenvl_vllm.model_registry import register

    register()
    ckpt = write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path_factory.mktemp("tiny-qwen2-vl"))
    return ModelConfig(
        model=str(ckpt), dtype="float32", max_model_len=16384, limit_mm_per_prompt={"image": 3, "video": 2}
    )


def _processor(model_config, cache: bool = False):
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.cache import MultiModalProcessorOnlyCache

    return MULTIMODAL_REGISTRY.create_processor(
        model_config, cache=MultiModalProcessorOnlyCache(model_config) if cache else None
    )


def _apply(proc, prompt: str, mm_data: dict, mm_kwargs: dict):
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    inputs = ProcessorInputs(prompt, proc.info.parse_mm_data(mm_data), hf_processor_mm_kwargs=mm_kwargs)
    return proc.apply(inputs, TimingContext(enabled=False))


def _grids(out, modality: str) -> list[list[int]]:
    return [item[f"{modality}_grid_thw"].data.tolist() for item in out["mm_kwargs"][modality]]


def _image_grid(ele: dict) -> list[int]:
    resized = qvu.fetch_image(ele)
    return [1, resized.height // 14, resized.width // 14]


IMAGES = [make_image(1000, 800, seed=1), make_image(300, 700, seed=2), make_image(640, 480, seed=3)]


@pytest.mark.parametrize(
    "request_kwargs, items",
    [
        ({}, {"0": SMALL, "2": {"resized_height": 280, "resized_width": 420}}),
        ({"max_pixels": 300 * 784}, {"1": {"min_pixels": 500 * 784, "max_pixels": 600 * 784}}),
        ({"min_pixels": 200 * 784}, {"0": {"max_pixels": 250 * 784}, "1": {}}),
        ({"resized_height": 56, "resized_width": 56}, {"2": {"resized_height": 112, "resized_width": 84}}),
        ({"resized_height": 56, "resized_width": 56}, {"1": SMALL}),  # resized wins, as in qwen-vl-utils
        ({}, {0: {"max_pixels": 5000.5}}),
    ],
)
def test_image_items_size_as_qwen_vl_utils(model_config, request_kwargs: dict, items: dict) -> None:
    prompt = IMAGE * len(IMAGES)
    out = _apply(
        _processor(model_config), prompt, {"image": IMAGES}, {**request_kwargs, "items": {"image": items}}
    )
    own = {int(k): v for k, v in items.items()}
    expected = [_image_grid({"image": im, **request_kwargs, **own.get(i, {})}) for i, im in enumerate(IMAGES)]
    assert _grids(out, "image") == expected
    tokens = [p.length for p in out["mm_placeholders"]["image"]]
    assert tokens == [h * w // 4 for _, h, w in expected]


def test_video_items_size_as_qwen_vl_utils(model_config, tmp_path) -> None:
    paths = [str(write_video(tmp_path / f"v{i}.mp4", 40, 10.0, 96 + 32 * i, 64, seed=i)) for i in range(2)]
    sampling = {"fps": 1.0}
    own = {1: {"total_pixels": 30_000, "min_pixels": 2_000}}
    videos = []
    for path in paths:
        with open(path, "rb") as f:
            videos.append(QwenVLUtilsVideoLoader.load_bytes(f.read(), **sampling))
    items = {"video": {"1": own[1]}}
    out = _apply(
        _processor(model_config), VIDEO * 2, {"video": videos}, {"max_pixels": 200_000, "items": items}
    )
    for i, (path, grid) in enumerate(zip(paths, _grids(out, "video"), strict=True)):
        expected = qvu.fetch_video({"video": path, **sampling, "max_pixels": 200_000, **own.get(i, {})})
        t, _, h, w = expected.shape
        assert grid == [t // 2, h // 14, w // 14]
    plain = qvu.fetch_video({"video": paths[1], **sampling, "max_pixels": 200_000})
    assert _grids(out, "video")[1][1:] != [
        plain.shape[2] // 14,
        plain.shape[3] // 14,
    ]  # the item's keys acted


def test_cache_keeps_items_with_different_options_apart(model_config) -> None:
    proc = _processor(model_config, cache=True)
    a, c = IMAGES[0], IMAGES[2]
    items = {"items": {"image": {"1": SMALL}}}
    first = _apply(proc, IMAGE * 2, {"image": [a, c]}, items)
    assert _grids(first, "image") == [_image_grid({"image": a}), _image_grid({"image": c, **SMALL})]
    # same options, items swapped: each item must get the options of its own position
    second = _apply(proc, IMAGE * 2, {"image": [c, a]}, items)
    assert _grids(second, "image") == [_image_grid({"image": c}), _image_grid({"image": a, **SMALL})]
    same = _apply(proc, IMAGE * 2, {"image": [a, a]}, items)
    assert _grids(same, "image") == [_image_grid({"image": a}), _image_grid({"image": a, **SMALL})]
    hashes = same["mm_hashes"]["image"]
    assert hashes[0] != hashes[1]
    # an item without options of its own shares its cache key with a plain request
    plain = _apply(proc, IMAGE, {"image": [a]}, {})
    assert plain["mm_hashes"]["image"][0] == hashes[0]
    assert _grids(_apply(proc, IMAGE, {"image": [a]}, SMALL), "image") == [_image_grid({"image": a, **SMALL})]


@pytest.mark.parametrize(
    "items, match",
    [
        ([1, 2], "must be an object"),
        ({"audio": {}}, "unknown modality"),
        ({"image": [SMALL]}, "must be an object"),
        ({"image": {"a": SMALL}}, "non-negative integer"),
        ({"image": {"-1": SMALL}}, "non-negative integer"),
        ({"image": {True: SMALL}}, "non-negative integer"),
        ({"image": {"0": 5}}, "must be an object of options"),
        ({"image": {"0": {"max_pixel": 5}}}, "unsupported option"),
        ({"video": {"0": {"fps": 1.0}}}, "media_io_kwargs"),
        ({"image": {"0": {"max_pixels": -5}}}, "positive number"),
        ({"image": {"0": {"max_pixels": "5"}}}, "positive number"),
        ({"image": {"0": {"resized_height": 280}}}, "resized_width"),
        ({"image": {"1": SMALL}}, "request has 1 image"),
        ({"video": {"0": SMALL}}, "request has 0 video"),
    ],
)
def test_bad_items(model_config, items, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _apply(_processor(model_config), IMAGE, {"image": [IMAGES[1]]}, {"items": items})

"""Video parity with qwen-vl-utils 0.0.14 (decord reader): same frame indices, sizes, pixels, fps."""

from __future__ import annotations

import random

import pytest
import qwen_vl_utils
import torch

from qwenvl_vllm import processors
from qwenvl_vllm.synthetic import make_image, write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("videos")
    specs = {"odd": (23, 7.5, 160, 90), "ntsc": (61, 29.97, 128, 96), "long": (150, 25.0, 96, 64)}
    return {
        k: str(write_video(root / f"{k}.mp4", n, fps, w, h, seed=i))
        for i, (k, (n, fps, w, h)) in enumerate(specs.items())
    }


def _both(ele: dict):
    ours = processors.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True)
    ref = qwen_vl_utils.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True)
    return ours, ref


def _assert_same(ours, ref) -> None:
    (video, meta), fps = ours
    (ref_video, ref_meta), ref_fps = ref
    assert video.shape == ref_video.shape and video.dtype == ref_video.dtype
    assert torch.equal(video, ref_video)
    assert fps == pytest.approx(ref_fps, rel=0, abs=0)
    assert list(meta["frames_indices"]) == list(ref_meta["frames_indices"])
    assert meta["total_num_frames"] == ref_meta["total_num_frames"]
    assert meta.get("video_backend") == ref_meta.get("video_backend")


CASES = [
    {},
    {"fps": 1.0},
    {"fps": 4.0, "min_frames": 6, "max_frames": 12},
    {"nframes": 7},
    {"nframes": 4, "max_pixels": 40_000},
    {"min_pixels": 50_000, "total_pixels": 2_000_000},
    {"resized_height": 100, "resized_width": 60},
    {"video_start": 0.5, "video_end": 2.0},
    {"video_start": 1.0, "fps": 3.0},
    {"fps": 0},  # qwen-vl-utils samples min_frames for fps <= 0
    {"fps": -1.0, "min_frames": 6},
    {"min_pixels": 0},
    {"resized_height": 70.2, "resized_width": 98.6},  # floats rounded, not truncated
    {"nframes": 4, "resized_height": 56, "resized_width": 84, "max_pixels": float("inf")},
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("name", ["odd", "ntsc", "long"])
def test_video_files(videos, name: str, case: dict) -> None:
    assert qwen_vl_utils.vision_process.get_video_reader_backend() == "decord"
    ele = {"type": "video", "video": videos[name], **case}
    try:
        ref = qwen_vl_utils.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True)
    except (ValueError, AssertionError):
        with pytest.raises(ValueError):
            processors.fetch_video(ele)
        return
    _assert_same(processors.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True), ref)


def test_random_video_options(videos) -> None:
    rng = random.Random(4)
    for _ in range(12):
        ele: dict = {"video": videos[rng.choice(list(videos))]}
        if rng.random() < 0.5:
            ele["fps"] = rng.choice([0.5, 1.0, 2.0, 3.3])
        else:
            ele["nframes"] = rng.randint(2, 20)
        if rng.random() < 0.5:
            ele["max_pixels"] = rng.randint(10_000, 120_000)
        try:
            ref = _both(ele)[1]
        except (ValueError, AssertionError):
            with pytest.raises(ValueError):
                processors.fetch_video(ele)
            continue
        _assert_same(
            processors.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True), ref
        )


@pytest.mark.parametrize("n", [1, 3, 4])
def test_frame_lists(tmp_path, n: int) -> None:
    frames = [make_image(200, 120, seed=i) for i in range(n)]
    paths = []
    for i, frame in enumerate(frames):
        frame.save(tmp_path / f"f{i}.png")
        paths.append(str(tmp_path / f"f{i}.png"))
    for video in (frames, paths):
        ele = {"type": "video", "video": video, "sample_fps": 1.0, "max_pixels": 150_000}
        _assert_same(*_both(ele))


def test_frame_list_float_resized_size(tmp_path) -> None:
    frames = [make_image(200, 120, seed=i) for i in range(3)]
    ele = {"video": frames, "resized_height": 70.2, "resized_width": 98.6, "raw_fps": 25}
    _assert_same(*_both(ele))


def test_media_field_decides_over_type(videos) -> None:
    # qwen-vl-utils reads {"type": "image", "video": ...} as a video (and the reverse as an image)
    content = [
        {"type": "image", "video": videos["odd"], "nframes": 4},
        {"type": "video", "image": make_image(64, 64)},
    ]
    messages = [{"role": "user", "content": content}]
    images, vids = processors.process_vision_info(messages)
    ref_images, ref_vids = qwen_vl_utils.process_vision_info(messages)
    assert [i.size for i in images] == [i.size for i in ref_images]
    assert len(vids) == len(ref_vids) == 1 and torch.equal(vids[0], ref_vids[0])


def test_process_vision_info_video_kwargs(videos) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": videos["odd"], "fps": 1.0},
                {"type": "image", "image": make_image(64, 64)},
                {"type": "text", "text": "what happens?"},
            ],
        }
    ]
    images, vids, kwargs = processors.process_vision_info(messages, return_video_kwargs=True)
    ref_images, ref_vids, ref_kwargs = qwen_vl_utils.process_vision_info(messages, return_video_kwargs=True)
    assert kwargs == ref_kwargs
    assert [i.size for i in images] == [i.size for i in ref_images]
    assert torch.equal(vids[0], ref_vids[0])


@pytest.mark.parametrize("frames", [1, 2, 5, 16])
def test_chunked_resize_equals_one_batched_call(frames: int) -> None:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    from qwenvl_vllm.processors.video import resize_frames

    video = torch.randint(0, 256, (frames, 3, 90, 160), dtype=torch.uint8)
    batched = tvf.resize(video, [112, 196], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(resize_frames(video, (112, 196)), batched)

"""The video loader `vllm serve` uses for Qwen2-VL, called as vLLM calls it, against qwen-vl-utils + decord.

Reference: qwen-vl-utils 0.0.14's own decord reader (`_read_video_decord`) on the same file: frame indices
and pixels must be identical. Videos are generated here (PyAV), at tiny sizes, fps 1-60, 1-2000 frames.
"""

from __future__ import annotations

import base64
import random

import numpy as np
import pytest
from qwen_vl_utils import vision_process as qvu

from qwenvl_vllm.serving import register_serving
from qwenvl_vllm.serving.connector import QwenVLMediaConnector
from qwenvl_vllm.serving.video_loader import QWEN2_VL_VIDEO_PROCESSOR, QwenVLUtilsVideoLoader
from qwenvl_vllm.synthetic import make_image, write_video

# (frames, fps, width, height): odd sizes, fractional and high fps, long clips at tiny resolution
SPECS = [
    (2, 1.0, 17, 11),
    (9, 7.5, 35, 19),
    (61, 29.97, 48, 36),  # decord 0.6 fails on this width (as for qwen-vl-utils): must be a ValueError
    (120, 24.0, 33, 21),
    (600, 60.0, 20, 14),
    (2000, 60.0, 20, 14),
    (45, 1.0, 23, 31),
]
OPTIONS = [
    {},
    {"fps": 1.0},
    {"fps": 0.5, "min_frames": 2},
    {"fps": 4.0, "min_frames": 6, "max_frames": 12},
    {"nframes": 6},
    {"nframes": 3},
    {"video_start": 0.5, "video_end": 1.7},
    {"video_start": 1.0, "fps": 3.0},
    {"video_end": 4.0, "nframes": 4},
    {"fps": 0},
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("serving_videos")
    return [
        str(write_video(root / f"v{i}.mp4", n, fps, w, h, seed=i)) for i, (n, fps, w, h) in enumerate(SPECS)
    ]


def _reference(path: str, options: dict) -> tuple[np.ndarray, list[int]] | None:
    """qwen-vl-utils' frames [T, H, W, C] and indices, or None where it refuses the options or the video."""
    import decord

    try:
        video, metadata, _ = qvu._read_video_decord({"video": path, **options})
    except (ValueError, AssertionError, ZeroDivisionError, decord.DECORDError):
        return None
    return video.permute(0, 2, 3, 1).numpy(), list(metadata["frames_indices"])


def _load(path: str, options: dict):
    with open(path, "rb") as f:
        # vLLM's VideoMediaIO always adds num_frames (its default 32): it must not change the sampling
        return QwenVLUtilsVideoLoader.load_bytes(f.read(), num_frames=32, **options)


def _assert_parity(path: str, options: dict) -> None:
    ref = _reference(path, options)
    if ref is None:
        with pytest.raises(ValueError):
            _load(path, options)
        return
    frames, metadata = _load(path, options)
    assert metadata["frames_indices"] == ref[1]
    assert frames.dtype == np.uint8 and frames.shape == ref[0].shape
    assert np.array_equal(frames, ref[0])


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
@pytest.mark.parametrize("index", range(len(SPECS)), ids=[f"{n}f@{fps}fps-{w}x{h}" for n, fps, w, h in SPECS])
def test_frames_equal_qwen_vl_utils(videos, index: int, options: dict) -> None:
    _assert_parity(videos[index], options)


def test_random_videos_and_options(tmp_path) -> None:
    """Videos and options drawn at random (seeded), none of them seen above."""
    rng = random.Random(11)
    for i in range(8):
        n, fps = rng.randint(2, 400), rng.choice([1.0, 5.0, 12.5, 23.976, 30.0, 50.0, 60.0])
        size = rng.randint(8, 70), rng.randint(8, 70)
        path = str(write_video(tmp_path / f"r{i}.mp4", n, fps, *size, seed=i))
        duration = n / fps
        options = rng.choice(
            [
                {"fps": rng.uniform(0.2, 8.0)},
                {"nframes": rng.randint(2, n)},
                {
                    "fps": rng.uniform(0.5, 4),
                    "min_frames": rng.randint(2, 8),
                    "max_frames": rng.randint(8, 64),
                },
                {
                    "video_start": rng.uniform(0, duration / 2),
                    "video_end": rng.uniform(duration / 2, duration),
                },
            ]
        )
        _assert_parity(path, options)


def test_one_frame_video_is_a_client_error(tmp_path) -> None:
    path = str(write_video(tmp_path / "one.mp4", 1, 5.0, 16, 16))
    assert _reference(path, {}) is None  # qwen-vl-utils refuses it too (nframes must be >= 2)
    with pytest.raises(ValueError, match="at least 2"):
        _load(path, {})


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is text and not a video\n" * 20, b"\x00" * 4096],
    ids=["empty", "text", "zeros"],
)
def test_bytes_that_are_not_video(data: bytes) -> None:
    with pytest.raises(ValueError):
        QwenVLUtilsVideoLoader.load_bytes(data)


def test_jpeg_as_video(tmp_path) -> None:
    path = tmp_path / "photo.jpg"
    make_image(64, 48).save(path, format="JPEG")
    with pytest.raises(ValueError):
        QwenVLUtilsVideoLoader.load_bytes(path.read_bytes())


def test_truncated_video(videos) -> None:
    with open(videos[2], "rb") as f:
        data = f.read()
    for cut in (len(data) // 2, 200):
        with pytest.raises(ValueError):
            QwenVLUtilsVideoLoader.load_bytes(data[:cut])


def test_frame_pixel_limit_refused_before_decoding(videos, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ValueError, match="over the limit"):
        _load(videos[1], {})


@pytest.mark.parametrize(
    "options, match",
    [
        ({"fps": 1.0, "nframes": 4}, "either"),
        ({"max_pixels": 1000}, "mm_processor_kwargs"),
        ({"total_pixels": 1000}, "mm_processor_kwargs"),
        ({"fsp": 2}, "unsupported"),
        ({"fps": "2"}, "number"),
        ({"video_start": 1.5, "video_end": 1.0}, "range"),
        ({"nframes": 10_000}, "nframes"),
    ],
)
def test_bad_options(videos, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _load(videos[2], options)


def test_registered_for_qwen2_vl_and_used_by_the_connector(videos) -> None:
    """The path `vllm serve` takes: registry lookup by video processor, request media_io_kwargs."""
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, get_video_loader_backend_for_processor

    register_serving()
    backend = get_video_loader_backend_for_processor(QWEN2_VL_VIDEO_PROCESSOR)
    assert isinstance(VIDEO_LOADER_REGISTRY.load(backend), QwenVLUtilsVideoLoader)
    with open(videos[3], "rb") as f:
        url = "data:video/mp4;base64," + base64.b64encode(f.read()).decode()
    options = {"fps": 1.0, "max_frames": 4}
    connector = QwenVLMediaConnector(media_io_kwargs={"video": options})
    frames, metadata = connector.fetch_video(url, video_processor=QWEN2_VL_VIDEO_PROCESSOR)
    ref_frames, ref_indices = _reference(videos[3], options)
    assert metadata["frames_indices"] == ref_indices and np.array_equal(frames, ref_frames)
    # vLLM's own Qwen2-VL loader stays available by name and samples differently
    vllm_frames, vllm_meta = QwenVLMediaConnector(
        media_io_kwargs={"video": {"video_backend": "qwen2_vl", "fps": 1.0}}
    ).fetch_video(url, video_processor=QWEN2_VL_VIDEO_PROCESSOR)
    assert vllm_meta["video_backend"] != "decord"


def test_processor_sizes_loader_frames_as_qwen_vl_utils(videos, tmp_path) -> None:
    """Loader frames through our multimodal processor: grid equals qwen-vl-utils fetch_video's frames."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    from qwenvl_vllm.checkpoint.writer import write_checkpoint
    from qwenvl_vllm.model_registry import register

    register()
    ckpt = str(write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path / "ckpt"))
    proc = MULTIMODAL_REGISTRY.create_processor(
        ModelConfig(model=ckpt, dtype="float32", max_model_len=8192, limit_mm_per_prompt={"video": 1})
    )
    sampling, sizing = {"fps": 3.0}, {"total_pixels": 40_000, "min_pixels": 1_000}
    frames, metadata = _load(videos[3], sampling)
    items = proc.info.parse_mm_data({"video": [(frames, metadata)]})
    prompt = "<|vision_start|><|video_pad|><|vision_end|>"
    out = proc.apply(
        ProcessorInputs(prompt, items, hf_processor_mm_kwargs=sizing), TimingContext(enabled=False)
    )
    expected = qvu.fetch_video({"video": videos[3], **sampling, **sizing})
    t, _, h, w = expected.shape
    assert out["mm_kwargs"]["video"][0]["video_grid_thw"].data.tolist() == [t // 2, h // 14, w // 14]

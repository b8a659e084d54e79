"""vLLM video loader for Qwen2-VL: decord reading and qwen-vl-utils 0.0.14 frame sampling.

Registered for transformers' `Qwen2VLVideoProcessor`, so an unchanged `vllm serve` samples the frames of a
`video_url` exactly as qwen-vl-utils `fetch_video` does for a path/URL (indices from fps / nframes /
min_frames / max_frames / video_start / video_end). The per-frame pixel budget (min/max/total_pixels,
resized_*) stays with our multimodal processor, as offline: it only needs the frames, whose count is
already the even `nframes` qwen-vl-utils sizes with.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from vllm.multimodal.video import VideoLoader

from qwenvl_vllm.processors.sizing import FRAME_FACTOR
from qwenvl_vllm.processors.video import decord_frame_indices
from qwenvl_vllm.settings import get_settings

VIDEO_LOADER_NAME = "qwenvl_vllm"
# transformers' video processor class of Qwen2-VL (and Qwen2.5-VL): vLLM picks the loader bound to it.
QWEN2_VL_VIDEO_PROCESSOR = "Qwen2VLVideoProcessor"

SAMPLING_KEYS = frozenset({"fps", "nframes", "min_frames", "max_frames", "video_start", "video_end"})
SIZING_KEYS = frozenset({"min_pixels", "max_pixels", "total_pixels", "resized_height", "resized_width"})
# Keys vLLM's VideoMediaIO passes to every loader (num_frames always, with its default 32) or that belong
# to other loaders; qwen-vl-utils has no equivalent, so they are ignored as in vLLM's own Qwen2-VL loader.
VLLM_GENERIC_KEYS = frozenset(
    {
        "num_frames",
        "max_duration",
        "frame_recovery",
        "backend",
        "num_ffmpeg_threads",
        "seek_mode",
        "frames_indices",
        "total_num_frames",
        "duration",
        "do_sample_frames",
    }
)


def sampling_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The qwen-vl-utils sampling keys among a request's media_io_kwargs["video"]; ValueError on others."""
    sizing = sorted(set(kwargs) & SIZING_KEYS)
    if sizing:
        raise ValueError(
            f"video option(s) {sizing} set frame sizes, not sampling: pass them in mm_processor_kwargs"
        )
    unknown = sorted(set(kwargs) - SAMPLING_KEYS - VLLM_GENERIC_KEYS)
    if unknown:
        raise ValueError(
            f"unsupported video option(s) {unknown} in media_io_kwargs; supported: {sorted(SAMPLING_KEYS)}"
        )
    return {key: value for key, value in kwargs.items() if key in SAMPLING_KEYS and value is not None}


def _open(data: bytes):
    import decord

    if not data:
        raise ValueError("video is empty (0 bytes)")
    try:
        return decord.VideoReader(io.BytesIO(data))
    except (decord.DECORDError, RuntimeError) as exc:
        raise ValueError(f"cannot decode video: {str(exc).splitlines()[0][:300]}") from exc


def _check_frame_pixels(data: bytes) -> None:
    """Refuse huge frames from the container header, before decord decodes any (a decompression bomb)."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            streams = container.streams.video
            width, height = (streams[0].width, streams[0].height) if streams else (0, 0)
    except (av.FFmpegError, OSError, ValueError):
        return  # not parseable by PyAV: decord decides (and refuses it if it is not a video)
    limit = get_settings().max_image_pixels
    if width * height > limit:
        raise ValueError(f"video frames of {width}x{height} pixels are over the limit of {limit}")


def _decode(reader: Any, indices: list[int]) -> np.ndarray:
    import decord

    try:
        return reader.get_batch(indices).asnumpy()
    except (decord.DECORDError, RuntimeError) as exc:
        raise ValueError(f"cannot decode video frames (truncated or corrupt?): {exc}") from exc


def load_video(data: bytes, options: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """[T, H, W, 3] uint8 frames sampled as qwen-vl-utils does, and vLLM's video metadata."""
    _check_frame_pixels(data)
    reader = _open(data)
    if len(reader) < FRAME_FACTOR:  # qwen-vl-utils fails here too (nframes out of range)
        raise ValueError(f"video has {len(reader)} frame(s); at least {FRAME_FACTOR} are needed")
    video_fps = float(reader.get_avg_fps())
    indices, total = decord_frame_indices(options, len(reader), video_fps)
    frames = _decode(reader, indices)
    metadata = {
        "total_num_frames": total,
        "fps": video_fps,
        "duration": len(reader) / video_fps,
        "video_backend": "decord",
        "frames_indices": indices,
        "do_sample_frames": False,  # already sampled: processors must keep every frame
    }
    return frames, metadata


class QwenVLUtilsVideoLoader(VideoLoader):
    """Called by vLLM's VideoMediaIO with the merged engine + request media_io_kwargs["video"]."""

    @classmethod
    def load_bytes(cls, data: bytes, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return load_video(data, sampling_options(kwargs))

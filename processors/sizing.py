"""Size and frame-count arithmetic of qwen-vl-utils 0.0.14, with its defaults for Qwen2-VL."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from qwenvl_vllm.constants import PATCH_SIZE as IMAGE_PATCH_SIZE
from qwenvl_vllm.constants import SPATIAL_MERGE_SIZE
from qwenvl_vllm.settings import get_settings

MAX_RATIO = 200
IMAGE_MIN_TOKEN_NUM = 4
IMAGE_MAX_TOKEN_NUM = 16384
VIDEO_MIN_TOKEN_NUM = 128
VIDEO_MAX_TOKEN_NUM = 768

FPS = 2.0
FRAME_FACTOR = 2
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768


def real(value: Any, name: str) -> Any:
    """`value` unchanged if it is a real number (int, float, bool, numpy scalar); else ValueError.

    NaN and infinities pass: qwen-vl-utils returns results for some of them (e.g. max_pixels=inf),
    and where its arithmetic overflows ours turns the OverflowError into a ValueError.
    """
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return value


def round_by_factor(number: float, factor: int) -> int:
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_PATCH_SIZE * SPATIAL_MERGE_SIZE,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[int, int]:
    """(height, width) divisible by `factor`, with area in [min_pixels, max_pixels], aspect kept."""
    max_pixels = real(max_pixels, "max_pixels") if max_pixels is not None else IMAGE_MAX_TOKEN_NUM * factor**2
    min_pixels = real(min_pixels, "min_pixels") if min_pixels is not None else IMAGE_MIN_TOKEN_NUM * factor**2
    if real(height, "height") <= 0 or real(width, "width") <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    # min_pixels <= 0 only means "no lower bound" (qwen-vl-utils accepts it); max_pixels <= 0 always
    # fails there (division by zero / math domain error). `not >=` also refuses NaN, as its assert does.
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if not max_pixels >= min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) must be >= min_pixels ({min_pixels})")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {ratio}")
    try:
        return _scaled_size(height, width, factor, min_pixels, max_pixels)
    except OverflowError as exc:  # e.g. min_pixels=inf
        raise ValueError(f"cannot resize to min_pixels={min_pixels}, max_pixels={max_pixels}: {exc}") from exc


def _scaled_size(
    height: float, width: float, factor: int, min_pixels: float, max_pixels: float
) -> tuple[int, int]:
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = floor_by_factor(height / beta, factor)
        w_bar = floor_by_factor(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


def nonempty_size(size: tuple[int, int]) -> tuple[int, int]:
    """`size` if both sides are > 0; ValueError otherwise.

    smart_resize floors to 0 when max_pixels is below one factor x factor cell for the aspect ratio
    (qwen-vl-utils returns that too, then fails in PIL or with a RuntimeError in torchvision).
    """
    if min(size) <= 0:
        raise ValueError(
            f"resized size {size[0]}x{size[1]} (height x width) is empty: max_pixels is too small"
        )
    return size


def smart_nframes(ele: Mapping[str, Any], total_frames: int, video_fps: float) -> int:
    """Number of frames to sample: `nframes` (rounded to even) or `fps`-based within [min, max]_frames."""
    if "fps" in ele and "nframes" in ele:
        raise ValueError("give either `fps` or `nframes` for a video, not both")
    try:
        nframes = _frame_count(ele, total_frames, video_fps)
    except OverflowError as exc:  # an infinite nframes / min_frames / max_frames
        raise ValueError(f"cannot compute the number of video frames: {exc}") from exc
    if not FRAME_FACTOR <= nframes <= total_frames:
        raise ValueError(f"nframes should be in interval [{FRAME_FACTOR}, {total_frames}], but got {nframes}")
    return nframes


def _frame_count(ele: Mapping[str, Any], total_frames: int, video_fps: float) -> int:
    if "nframes" in ele:
        return round_by_factor(real(ele["nframes"], "nframes"), FRAME_FACTOR)
    # fps <= 0 is accepted as qwen-vl-utils does: it then samples min_frames frames.
    fps = real(ele.get("fps", FPS), "fps")
    min_frames = ceil_by_factor(real(ele.get("min_frames", FPS_MIN_FRAMES), "min_frames"), FRAME_FACTOR)
    max_frames = real(ele.get("max_frames", min(FPS_MAX_FRAMES, total_frames)), "max_frames")
    max_frames = floor_by_factor(max_frames, FRAME_FACTOR)
    nframes = total_frames / video_fps * fps
    nframes = min(min(max(nframes, min_frames), max_frames), total_frames)
    return floor_by_factor(nframes, FRAME_FACTOR)


def frame_pixel_limit(ele: Mapping[str, Any], nframes: int, factor: int) -> tuple[float, float]:
    """(min_pixels, max_pixels) of one frame: the per-frame cap and the share of total_pixels.

    Evaluated even when resized_height/width are given, as qwen-vl-utils does (so bad values still fail).
    """
    min_pixels = real(ele.get("min_pixels", VIDEO_MIN_TOKEN_NUM * factor * factor), "min_pixels")
    default_total = get_settings().model_seq_len * factor * factor * 0.9
    total_pixels = real(ele.get("total_pixels", default_total), "total_pixels")
    limit = VIDEO_MAX_TOKEN_NUM * factor * factor
    try:
        max_pixels = max(min(limit, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    except OverflowError as exc:  # min_pixels=inf
        raise ValueError(f"invalid min_pixels {min_pixels}: {exc}") from exc
    return min_pixels, min(real(ele.get("max_pixels", max_pixels), "max_pixels"), max_pixels)

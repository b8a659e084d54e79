"""Resized image / video frames -> Qwen2-VL patch rows, laid out exactly as transformers' processors do.

Row order: merge windows first (each run of merge_size**2 consecutive rows is one LLM token), then the
patches inside a window; inside a row: channel-major, then temporal, then the patch_size x patch_size pixels.
An image is repeated temporal_patch_size times; a video with a frame count that is not a multiple of
temporal_patch_size is padded by repeating its last frame (as transformers does).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from qwenvl_vllm.constants import (
    CLIP_MEAN,
    CLIP_STD,
    PATCH_SIZE,
    PIXEL_RESCALE,
    SPATIAL_MERGE_SIZE,
    TEMPORAL_PATCH_SIZE,
)

Frames = Image.Image | np.ndarray | torch.Tensor


def _as_frames(frames: Frames) -> torch.Tensor:
    """[F, C, H, W] tensor (no copy where possible) from a PIL image, an HWC array or a [T, C, H, W] video."""
    if isinstance(frames, Image.Image):
        if frames.mode != "RGB":
            raise ValueError(f"patchify expects an RGB image, got mode {frames.mode!r}; convert it first")
        frames = np.asarray(frames)
    if isinstance(frames, np.ndarray):
        # torch.from_numpy wants a writable array; PIL's buffers are read-only, so those get copied.
        frames = torch.from_numpy(frames if frames.flags.writeable else frames.copy())
    tensor = frames
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"patchify expects a PIL image, numpy array or tensor, got {type(frames).__name__}")
    if tensor.ndim == 3:  # one image, channels last (HWC)
        return tensor.permute(2, 0, 1).unsqueeze(0)
    if tensor.ndim == 4:  # a video, channels first (TCHW) as qwen-vl-utils returns it
        return tensor
    raise ValueError(f"expected an HWC image or a [T, C, H, W] video, got shape {tuple(tensor.shape)}")


def _clip_stats(
    mean: Sequence[float],
    std: Sequence[float],
    rescale: float | None,
    channels: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (mean, std) on `device`, cached: no host-to-device copy per item (only read, never written)."""
    return _clip_stats_on(tuple(mean), tuple(std), rescale, channels, torch.device(device))


@functools.lru_cache(maxsize=16)
def _clip_stats_on(
    mean: tuple[float, ...],
    std: tuple[float, ...],
    rescale: float | None,
    channels: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    # transformers fuses rescale into normalize: (x - mean/rescale) / (std/rescale) in float32; the same
    # float32 operations here give bit-identical values. The stats are made on the CPU (where the
    # reference makes them) and only then moved, so every device normalises with the same float32 values.
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    if rescale is not None:
        mean_t, std_t = mean_t * (1.0 / rescale), std_t * (1.0 / rescale)
    mean_t, std_t = mean_t.to(device), std_t.to(device)
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(f"mean/std need {channels} values, got {mean_t.numel()} and {std_t.numel()}")
    return mean_t, std_t


def _gather_float(view: torch.Tensor) -> torch.Tensor:
    """A new contiguous float32 copy of a (permuted) view: bytes are gathered first, which is much faster."""
    if view.dtype == torch.uint8:
        return view.contiguous().to(torch.float32)
    out = torch.empty(view.shape, dtype=torch.float32, device=view.device)
    return out.copy_(view)


def patchify(
    frames: Frames,
    *,
    patch_size: int = PATCH_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
    merge_size: int = SPATIAL_MERGE_SIZE,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    rescale: float | None = PIXEL_RESCALE,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(pixel_values [N, C*T*P*P], grid (t, h, w)) of an already-resized image or video.

    Values are normalised in float32 (as transformers does) and then cast to `dtype`: asking for the
    model's dtype here equals casting the float32 result afterwards, but an image's temporal copies are made
    in the smaller type.

    `frames`: an RGB PIL image, a uint8 HWC array, or a video [T, C, H, W] (uint8 or float with 0..255
    values). H and W must be multiples of patch_size * merge_size. N = t * h * w.
    A tensor is processed on its own device (same bytes on CUDA: only float32 subtract/divide and casts).
    """
    video = _as_frames(frames)
    num_frames, channels, height, width = video.shape
    p, t, m = patch_size, temporal_patch_size, merge_size
    if num_frames == 0 or height == 0 or width == 0:
        raise ValueError(f"empty image/video of shape {tuple(video.shape)}")
    if height % (p * m) or width % (p * m):
        raise ValueError(f"image size {height}x{width} is not a multiple of {p * m}; resize it first")
    mean_t, std_t = _clip_stats(mean, std, rescale, channels, video.device)
    grid_h, grid_w = height // p, width // p
    if num_frames == 1:
        # An image: gather and normalise one frame, then repeat it in every temporal slot.
        # [C, H, W] -> [C, h/m, m, P, w/m, m, P] -> [h/m, w/m, m, m, C, P, P]
        view = video[0].reshape(channels, grid_h // m, m, p, grid_w // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
        rows = _gather_float(view).reshape(-1, channels, 1, p * p)  # [N, C, 1, P*P]
        rows = rows.sub_(mean_t.view(-1, 1, 1)).div_(std_t.view(-1, 1, 1)).to(dtype)
        rows = rows.expand(-1, -1, t, -1).reshape(grid_h * grid_w, channels * t * p * p)
        return rows, (1, grid_h, grid_w)
    if pad := -num_frames % t:  # as transformers: repeat the last frame
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    grid_t = video.shape[0] // t
    # [t*T, C, H, W] -> [t, T, C, h/m, m, P, w/m, m, P] -> [t, h/m, w/m, m, m, C, T, P, P]
    view = video.reshape(grid_t, t, channels, grid_h // m, m, p, grid_w // m, m, p)
    rows = _gather_float(view.permute(0, 3, 6, 4, 7, 2, 1, 5, 8))
    rows = rows.sub_(mean_t.view(-1, 1, 1, 1)).div_(std_t.view(-1, 1, 1, 1)).to(dtype)
    return rows.reshape(grid_t * grid_h * grid_w, channels * t * p * p), (grid_t, grid_h, grid_w)

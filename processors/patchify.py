"""Resized image / video frames -> Qwen2-VL patch rows, exactly as transformers' Qwen2-VL processors lay them out.

Row order: merge windows first (each run of merge_size**2 consecutive rows is one LLM token), then the
patches inside a window; inside a row: channel-major, then temporal, then the patch_size x patch_size pixels.
An image is repeated temporal_patch_size times; a video with a frame count that is not a multiple of
temporal_patch_size is padded by repeating its last frame (as transformers does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Frames = Image.Image | np.ndarray | torch.Tensor


def _as_frames(frames: Frames) -> torch.Tensor:
    """[F, C, H, W] tensor (no copy where possible) from a PIL image, an HWC array or a [T, C, H, W] video."""
    if isinstance(frames, Image.Image):
        if frames.mode != "RGB":
            raise ValueError(f"patchify expects an RGB image, got mode {frames.mode!r}; convert it first")
        frames = np.asarray(frames)
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"patchify expects a PIL image, numpy array or tensor, got {type(frames).__name__}")
    if tensor.ndim == 3:  # one image, channels last (HWC)
        return tensor.permute(2, 0, 1).unsqueeze(0)
    if tensor.ndim == 4:  # a video, channels first (TCHW) as qwen-vl-utils returns it
        return tensor
    raise ValueError(f"expected an HWC image or a [T, C, H, W] video, got shape {tuple(tensor.shape)}")


def _normalize(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float], rescale: float | None):
    # transformers fuses rescale into normalize: (x - mean/rescale) / (std/rescale) in float32; same
    # float32 operations here give bit-identical values.
    mean_t = torch.tensor(mean, dtype=torch.float32, device=frames.device)
    std_t = torch.tensor(std, dtype=torch.float32, device=frames.device)
    if rescale is not None:
        mean_t, std_t = mean_t * (1.0 / rescale), std_t * (1.0 / rescale)
    channels = frames.shape[1]
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(f"mean/std need {channels} values, got {mean_t.numel()} and {std_t.numel()}")
    return (frames.to(torch.float32) - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)


def patchify(
    frames: Frames,
    *,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    rescale: float | None = 1 / 255,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(pixel_values [N, C*T*P*P] float32, grid (t, h, w)) of an already-resized image or video.

    `frames`: an RGB PIL image, a uint8 HWC array, or a video [T, C, H, W] (uint8 or float with 0..255
    values). H and W must be multiples of patch_size * merge_size. N = t * h * w.
    """
    video = _as_frames(frames)
    num_frames, channels, height, width = video.shape
    factor = patch_size * merge_size
    if num_frames == 0 or height == 0 or width == 0:
        raise ValueError(f"empty image/video of shape {tuple(video.shape)}")
    if height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} is not a multiple of {factor}; resize it first")
    video = _normalize(video, mean, std, rescale)
    if num_frames == 1:  # an image: the same frame fills every temporal slot (expand, no copy)
        video = video.expand(temporal_patch_size, -1, -1, -1)
    elif pad := -num_frames % temporal_patch_size:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    grid_t = video.shape[0] // temporal_patch_size
    grid_h, grid_w = height // patch_size, width // patch_size
    # [t*T, C, H, W] -> [t, T, C, h/m, m, P, w/m, m, P]
    patches = video.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # -> [t, h/m, w/m, m, m, C, T, P, P]: windows, then patches in a window, then channel-major pixels
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    rows = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return rows, (grid_t, grid_h, grid_w)

"""Qwen2-VL pixels resized, normalised and patchified on the tower's device.

On by default (QWENVL_VLLM_DEVICE_PIXELS=0 turns it off). The multimodal processor ships each item's decoded
uint8 pixels (an image [H, W, 3], or [H, W, 4] uncopied as Pillow stores it; video frames [T, H, W, 3]) and
its patch grid instead of bf16 patch rows: a third of the bytes or less, and no resize on the API server.
The model turns them into the rows the CPU path would have made, byte for byte: images through
`resize_like_pil` (Pillow 13's bicubic), videos through `resize_frames_like_qwen_vl_utils`, then the same
float32 normalisation and patch layout (`patchify_on_device`). The processor ships uint8 only when the
checkpoint's normalisation is the CLIP / (1/255) one these rows use, so both paths always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qwenvl_vllm.constants import CLIP_MEAN, CLIP_STD, PIXEL_RESCALE
from qwenvl_vllm.geometry import VisionGeometry
from qwenvl_vllm.kernels.frames import resize_frames_like_qwen_vl_utils
from qwenvl_vllm.kernels.patchify import patchify_on_device
from qwenvl_vllm.kernels.resize import resize_like_pil
from qwenvl_vllm.processors.rgbx import without_pad


def rows_match_cpu_path(mean: Sequence[float], std: Sequence[float], rescale: float | None) -> bool:
    """Whether a checkpoint's normalisation is the one `uint8_rows` applies."""
    return tuple(mean) == CLIP_MEAN and tuple(std) == CLIP_STD and rescale == PIXEL_RESCALE


def uint8_rows(
    pixels: torch.Tensor,
    grid: Sequence[int],
    geometry: VisionGeometry,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Patch rows [t*h*w, C*T*P*P] in `dtype` on `device` of one item's decoded pixels and its grid."""
    t, h, w = (int(v) for v in grid)
    height, width = h * geometry.patch_size, w * geometry.patch_size
    pixels = pixels.to(device, non_blocking=True)
    if pixels.ndim == 3:
        pixels = without_pad(pixels)  # Pillow's pad byte dropped here, not on the API server
        if tuple(pixels.shape[:2]) != (height, width):
            pixels = resize_like_pil(pixels, height, width)
    else:
        pixels = pixels.permute(0, 3, 1, 2).contiguous()  # frames [T, H, W, 3] -> [T, 3, H, W], on the device
        if tuple(pixels.shape[2:]) != (height, width):
            pixels = resize_frames_like_qwen_vl_utils(pixels, height, width)
    rows, got = patchify_on_device(
        pixels,
        dtype=dtype,
        patch_size=geometry.patch_size,
        temporal_patch_size=geometry.temporal_patch_size,
        merge_size=geometry.merge_size,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        rescale=PIXEL_RESCALE,
    )
    if tuple(got) != (t, h, w):
        raise ValueError(
            f"pixels of shape {tuple(pixels.shape)} give grid {tuple(got)}, expected {(t, h, w)}"
        )
    return rows

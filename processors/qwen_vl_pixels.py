"""Qwen-VL v1 image preprocessing: the released visual.py transform (448x448 bicubic, /255, CLIP mean/std).

`qwen_vl_pixel_values` runs it on the CPU with PIL. `qwen_vl_pixel_values_on_device` runs the same
transform on decoded uint8 images on any device (QWENVL_VLLM_DEVICE_PIXELS): `resize_like_pil` gives
Pillow's bytes and the normalisation below is shared, so both give the same float32 values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from qwenvl_vllm.constants import CLIP_MEAN, CLIP_STD, QWEN_VL_IMAGE_SIZE
from qwenvl_vllm.kernels.resize import resize_like_pil
from qwenvl_vllm.processors.image import uint8_hwc


def _normalize(pixels: torch.Tensor) -> torch.Tensor:
    """float32 [3, S, S] of uint8 [3, S, S]: /255, then CLIP mean/std (torchvision ToTensor + Normalize)."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    return pixels.float().div(255).sub(mean).div(std)


def _rgb(image: Image.Image) -> Image.Image:
    """The image in RGB: the release converts every image first (an RGB image's convert is a copy)."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"Qwen-VL images must be PIL images, got {type(image).__name__}")
    if image.mode == "RGB":
        image.load()
        return image
    return image.convert("RGB")


def rgb_uint8(image: Image.Image) -> torch.Tensor:
    """uint8 [H, W, 3] of an image in RGB, a copy (the processor sees no sign of who owns the image)."""
    return uint8_hwc(_rgb(image))


def qwen_vl_pixel_values(images: Sequence[Image.Image], image_size: int = QWEN_VL_IMAGE_SIZE) -> torch.Tensor:
    """float32 [N, 3, image_size, image_size]: RGB, PIL bicubic resize, /255, CLIP normalisation."""
    out = torch.empty(len(images), 3, image_size, image_size, dtype=torch.float32)
    for i, image in enumerate(images):
        rgb = _rgb(image).resize((image_size, image_size), Image.Resampling.BICUBIC)
        out[i] = _normalize(torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1))  # [3, S, S]
    return out


def qwen_vl_pixel_values_on_device(
    images: Sequence[torch.Tensor], image_size: int, device: torch.device
) -> torch.Tensor:
    """`qwen_vl_pixel_values` of decoded RGB uint8 images [H, W, 3], computed on `device`."""
    out = torch.empty(len(images), 3, image_size, image_size, dtype=torch.float32, device=device)
    for i, image in enumerate(images):
        resized = resize_like_pil(image.to(device, non_blocking=True), image_size, image_size)
        out[i] = _normalize(resized.permute(2, 0, 1))
    return out

"""Qwen-VL v1 image preprocessing: the released visual.py transform (448x448 bicubic, /255, CLIP mean/std)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from qwenvl_vllm.constants import CLIP_MEAN, CLIP_STD, QWEN_VL_IMAGE_SIZE


def qwen_vl_pixel_values(images: Sequence[Image.Image], image_size: int = QWEN_VL_IMAGE_SIZE) -> torch.Tensor:
    """float32 [N, 3, image_size, image_size]: RGB, PIL bicubic resize, /255, CLIP normalisation.

    The same operations in the same order as torchvision's Resize + ToTensor + Normalize on a PIL image.
    """
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    out = torch.empty(len(images), 3, image_size, image_size, dtype=torch.float32)
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"Qwen-VL images must be PIL images, got {type(image).__name__}")
        rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)  # [3, S, S]
        out[i] = pixels.float().div(255).sub(mean).div(std)
    return out

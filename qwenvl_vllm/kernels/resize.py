"""`resize_like_pil`: Pillow 13's bicubic `Image.resize` of an RGB uint8 image, on CPU or CUDA.

Pillow's rules (PIL/Image.py `resize`, src/_imaging.c `_resize`, src/libImaging/Resample.c):
- same size: a copy;
- an axis whose size does not change gets no pass at all;
- pass order (Pillow 13, python-pillow/Pillow#9549 "if height is scaled down significantly more than
  width, resize vertically first"): vertical first when the height shrinks by more than twice as many
  pixels as the width does (`vertical_first`); otherwise horizontal first, over only the source rows the
  vertical pass reads.
Each pass rounds and clips to uint8, so the order changes the bytes (see pil_coeffs / resample_torch).
The order rule was measured against the installed Pillow 13.0.0 (its C source is not in the wheel): on
random sizes it separates the two orders exactly, and tests/unit/test_kernels_resize.py checks it.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch

from .pil_coeffs import bicubic_coeffs
from .resample_torch import resample_axis_torch
from .validation import check_sizes

Backend = Literal["auto", "torch", "triton"]

# Pillow runs the vertical pass first when the height loses more than this many times the width's pixels.
VERTICAL_FIRST_FACTOR = 2
# The Pillow release line whose bytes these rules reproduce (pinned in pyproject.toml); older releases
# always run the horizontal pass first.
PILLOW_SERIES = "13."


def vertical_first(in_height: int, in_width: int, height: int, width: int) -> bool:
    """Pillow 13's pass order: True when the vertical pass runs before the horizontal one."""
    return height < in_height and in_height - height > VERTICAL_FIRST_FACTOR * (in_width - width)


def _check_image(image: torch.Tensor, height: int, width: int) -> None:
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(image).__name__}")
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image.dtype} {tuple(image.shape)}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {tuple(image.shape)}")
    check_sizes(height, width)


@functools.lru_cache(maxsize=256)
def _device_coeffs(
    in_size: int, out_size: int, shift: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(start - shift, weights) of one pass on `device`, cached so repeated sizes copy nothing."""
    coeffs = bicubic_coeffs(in_size, out_size)
    return _to_device(coeffs.start - shift, device), _to_device(coeffs.weights, device)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    # pinned + non_blocking: a pageable copy may wait for the stream's earlier work (the host stalls)
    return tensor.pin_memory().to(device, non_blocking=True)


def _run_pass(
    image: torch.Tensor, axis: int, start: torch.Tensor, weights: torch.Tensor, backend: Backend
) -> torch.Tensor:
    if backend == "triton" or (backend == "auto" and image.is_cuda):
        try:
            from .resample_triton import resample_axis_triton
        except ImportError:
            if backend == "triton":
                raise
        else:
            return resample_axis_triton(image, axis, start, weights)
    return resample_axis_torch(image, axis, start, weights)


def _resample(
    image: torch.Tensor, axis: int, in_size: int, out_size: int, backend: Backend, shift: int = 0
) -> torch.Tensor:
    start, weights = _device_coeffs(in_size, out_size, shift, image.device)
    return _run_pass(image, axis, start, weights, backend)


def _vertical_first(image: torch.Tensor, height: int, width: int, backend: Backend) -> torch.Tensor:
    image = _resample(image, 0, image.shape[0], height, backend)
    if width == image.shape[1]:
        return image
    return _resample(image, 1, image.shape[1], width, backend)


def _horizontal_first(image: torch.Tensor, height: int, width: int, backend: Backend) -> torch.Tensor:
    in_height, first = image.shape[0], 0
    if width != image.shape[1]:
        if height != in_height:
            # only the source rows the vertical pass reads (as Pillow); its starts shift by the first row
            vertical = bicubic_coeffs(in_height, height)
            first, last = int(vertical.start[0]), int(vertical.start[-1] + vertical.count[-1])
            image = image[first:last]
        image = _resample(image, 1, image.shape[1], width, backend)
    if height == in_height:
        return image
    return _resample(image, 0, in_height, height, backend, shift=first)


def resize_like_pil(image: torch.Tensor, height: int, width: int, backend: Backend = "auto") -> torch.Tensor:
    """uint8 [height, width, 3] on image's device, bit-identical to Pillow's bicubic resize of `image`.

    `image`: uint8 [H, W, 3] RGB. backend "auto" runs the Triton kernel on CUDA tensors (torch ops if
    triton is not installed) and torch ops on CPU; "torch" forces the torch ops (any device), "triton"
    the kernel (CUDA only).
    """
    _check_image(image, height, width)
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    if backend == "triton" and not image.is_cuda:
        raise ValueError("the triton backend needs a CUDA tensor")
    in_height, in_width = image.shape[:2]
    if (in_height, in_width) == (height, width):
        return image.clone()
    if vertical_first(in_height, in_width, height, width):
        return _vertical_first(image, height, width, backend)
    return _horizontal_first(image, height, width, backend)

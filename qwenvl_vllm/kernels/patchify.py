"""Normalise + patchify resized pixels on the device that will run the vision tower.

Same layout and float32 arithmetic as processors.patchify (it is that function, run on `device`): only
uint8 pixels cross to the device, a quarter of the bytes of float32 pixel_values, and the CPU does none of
the normalisation. Bit-identical to the CPU result, since float32 subtract/divide and the casts to
fp16/bf16 are correctly rounded on CUDA as on the CPU.
"""

from __future__ import annotations

import torch

from qwenvl_vllm.processors.patchify import patchify


def patchify_on_device(
    pixels: torch.Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **kwargs: object,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(pixel_values [N, C*T*P*P] in `dtype` on `device`, grid (t, h, w)) of resized uint8 pixels.

    `pixels`: an image [H, W, 3] or video frames [T, 3, H, W], uint8, on any device; `device` defaults
    to the pixels' own. Other keyword arguments go to processors.patchify (patch/merge sizes, mean/std).
    """
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
        kind = pixels.dtype if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"patchify_on_device expects a uint8 tensor, got {kind}")
    if (pixels.ndim == 3 and pixels.shape[-1] != 3) or (pixels.ndim == 4 and pixels.shape[1] != 3):
        raise ValueError(f"expected [H, W, 3] or [T, 3, H, W] RGB pixels, got shape {tuple(pixels.shape)}")
    target = pixels.device if device is None else torch.device(device)
    return patchify(pixels.to(target), dtype=dtype, **kwargs)

"""`resize_frames_like_qwen_vl_utils`: torchvision's bicubic antialiased resize of uint8 video frames.

qwen-vl-utils 0.0.14 resizes decoded frames with torchvision.transforms.functional.resize(BICUBIC,
antialias=True), which casts uint8 to float32, runs torch's CPU antialiased bicubic interpolate, clamps
to 0..255, rounds half to even and casts back. On CPU we call that very path
(processors.video.resize_frames); elsewhere the float32 interpolation is kernels.torch_aa's exact
reproduction and the clamp/round/cast follow as torch ops.
Fallbacks to the CPU reference (exact, slower): an output width of 1 with a height change (torch then
takes a different path inside, its result is not the separable sum) and torch builds whose summation
order is not known to kernels.torch_aa.
"""

from __future__ import annotations

import torch

from qwenvl_vllm.processors.video import resize_frames

from .torch_aa import interpolate_float, summation_block
from .validation import check_sizes


def _check(frames: torch.Tensor, height: int, width: int) -> None:
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of frames, got {type(frames).__name__}")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or min(frames.shape) < 1:
        raise ValueError(
            f"expected non-empty uint8 frames [T, C, H, W], got {frames.dtype} {tuple(frames.shape)}"
        )
    check_sizes(height, width)


def resize_frames_torch(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The resize in plain torch ops on the frames' device (uint8 in, uint8 out)."""
    _check(frames, height, width)
    out = interpolate_float(frames.to(torch.float32), height, width)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def resize_frames_like_qwen_vl_utils(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T, C, height, width] on frames' device, equal to qwen-vl-utils' resize of uint8 frames."""
    _check(frames, height, width)
    on_cpu = frames.device.type == "cpu" or summation_block() is None
    if on_cpu or (width == 1 and height != frames.shape[2]):
        return resize_frames(frames.cpu(), (height, width)).to(frames.device)
    return resize_frames_torch(frames, height, width)

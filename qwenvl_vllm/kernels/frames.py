"""`resize_frames_like_qwen_vl_utils`: torchvision's bicubic antialiased resize of uint8 video frames.

qwen-vl-utils 0.0.14 resizes decoded frames with torchvision.transforms.functional.resize(BICUBIC,
antialias=True), which casts uint8 to float32, runs torch's CPU `_upsample_bicubic2d_aa` (separable:
width pass, then height pass, float32 intermediate, passes skipped for unchanged sizes), clamps to
0..255, rounds half to even and casts back. On CPU we call that very path (processors.video.resize_frames).
Elsewhere the same float32 arithmetic runs as plain torch ops:
- bounds: each output's first input and tap count, computed in float32 as torch's
  `_compute_indices_min_size_weights_aa` does;
- weights: read out of torch's own CPU kernel by resizing one-hot rows (1 * w is exact, the other taps
  add zeros), so they are its float32 values whatever compiler options built it;
- sums: first tap times weight, then tap by tap in input order. torch 2.11's x86 build (measured on its
  AVX2 kernels) adds taps 1..N-1 in blocks of ACC_BLOCK with a separate multiply and add each, and the
  (N-1) % ACC_BLOCK taps left over with fused multiply-adds (the compiler's contraction). We do the same;
  a fused multiply-add is computed in float64 and rounded once more to float32, which equals a true fma
  except in a double-rounding tie (probability ~2**-29 per operation).
An output width of 1 takes a different path inside torch (its result is not this separable sum), so
that size is resized by the CPU reference itself.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from qwenvl_vllm.processors.video import resize_frames

ACC_BLOCK = 4
BICUBIC_SUPPORT = 2.0  # torch's interp_size (4) * 0.5


def torch_aa_bounds(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first input index, tap count) per output, in torch's float32 arithmetic (scale = in / out)."""
    scale = np.float32(in_size) / np.float32(out_size)
    support = np.float32(BICUBIC_SUPPORT * float(scale)) if scale >= 1.0 else np.float32(BICUBIC_SUPPORT)
    center = (float(scale) * (np.arange(out_size, dtype=np.float64) + 0.5)).astype(np.float32)
    # float32 differences, then + 0.5 in double and truncation, as the C++ does
    xmin = np.maximum(np.trunc((center - support).astype(np.float64) + 0.5), 0).astype(np.int64)
    xmax = np.trunc((center + support).astype(np.float64) + 0.5).astype(np.int64)
    max_taps = math.ceil(float(support)) * 2 + 1
    return xmin, np.clip(np.minimum(xmax, in_size) - xmin, 0, max_taps)


@functools.lru_cache(maxsize=64)
def aa_bicubic_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start [out] int64, taps [out] int64, weights [out, max taps] float32, zero past an output's taps)."""
    eye = torch.eye(in_size, dtype=torch.float32).view(in_size, 1, 1, in_size)
    dense = F.interpolate(eye, size=(1, out_size), mode="bicubic", align_corners=False, antialias=True)
    dense = dense.view(in_size, out_size).t()  # [out, in]
    xmin, count = (torch.from_numpy(a) for a in torch_aa_bounds(in_size, out_size))
    width = max(int(count.max()), 1)
    offsets = torch.arange(width)
    inside = offsets[None, :] < count[:, None]
    weights = torch.where(inside, dense.gather(1, (xmin[:, None] + offsets).clamp(max=in_size - 1)), 0.0)
    if ((dense != 0).sum(1) != (weights != 0).sum(1)).any():  # torch's own bounds hold every weight
        raise RuntimeError(f"torch's weights for {in_size} -> {out_size} fall outside its bounds")
    return xmin, count, weights.contiguous()


def _resample_axis(frames: torch.Tensor, axis: int, out_size: int) -> torch.Tensor:
    start, count, weights = (t.to(frames.device) for t in aa_bicubic_taps(frames.shape[axis], out_size))
    shape = [1] * frames.ndim
    shape[axis] = -1
    length = frames.shape[axis]
    # tap k >= 1 is fused when it is among the (N - 1) % ACC_BLOCK left after the blocks of ACC_BLOCK
    offsets = torch.arange(weights.shape[1], device=frames.device)
    fused = offsets[None, :] > ((count - 1) // ACC_BLOCK * ACC_BLOCK)[:, None]
    acc = torch.zeros((), dtype=torch.float32, device=frames.device)
    for k in range(weights.shape[1]):
        # past an output's last tap the weight is 0: adding +-0 changes nothing
        pixels = frames.index_select(axis, (start + k).clamp_(max=length - 1))
        weight = weights[:, k].view(shape)
        if k == 0:
            acc = pixels * weight
            continue
        plain = acc + pixels * weight
        fma = (acc.double() + pixels.double() * weight.double()).float()
        acc = torch.where(fused[:, k].view(shape), fma, plain)
    return acc


def _check(frames: torch.Tensor, height: int, width: int) -> None:
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of frames, got {type(frames).__name__}")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or min(frames.shape) < 1:
        raise ValueError(
            f"expected non-empty uint8 frames [T, C, H, W], got {frames.dtype} {tuple(frames.shape)}"
        )
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")


def interpolate_float(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torch's CPU antialiased bicubic interpolate of float32 [T, C, H, W], on the frames' device."""
    if frames.shape[3] != width:
        frames = _resample_axis(frames, 3, width)
    if frames.shape[2] != height:
        frames = _resample_axis(frames, 2, height)
    return frames


def resize_frames_torch(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The float32 separable resize in plain torch ops, on the frames' device (uint8 in, uint8 out)."""
    _check(frames, height, width)
    out = interpolate_float(frames.to(torch.float32), height, width)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def resize_frames_like_qwen_vl_utils(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T, C, height, width] on frames' device, equal to qwen-vl-utils' resize of uint8 frames."""
    _check(frames, height, width)
    if frames.device.type == "cpu" or (width == 1 and height != frames.shape[2]):
        return resize_frames(frames.cpu(), (height, width)).to(frames.device)
    return resize_frames_torch(frames, height, width)

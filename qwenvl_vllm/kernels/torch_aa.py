"""torch's CPU antialiased bicubic interpolation of float32 images, reproduced with torch ops on any device.

torch's `_upsample_bicubic2d_aa` on float32 CPU tensors is separable (width pass, then height pass,
float32 intermediate, passes skipped for unchanged sizes). Reproduced here:
- bounds: each output's first input and tap count, computed in float32 as torch's
  `_compute_indices_min_size_weights_aa` does;
- weights: read out of torch's own CPU kernel by resizing one-hot rows (1 * w is exact, the other taps
  add zeros), so they are its float32 values whatever compiler options built it;
- sums: first tap times weight, then tap by tap in input order; how the compiler built that loop decides
  which steps are fused multiply-adds. Measured on torch 2.11 x86: the AVX2 kernels add taps 1..N-1 in
  blocks of 4 with a separate multiply and add each and fuse the (N-1) % 4 left over; the DEFAULT
  kernels fuse none (block 1). `summation_block()` finds this process's block among the candidates by
  comparing with torch's CPU result on a probe, so an unknown build is detected instead of assumed.
A fused multiply-add is computed in float64 and rounded once more to float32, which equals a true fma
except in a double-rounding tie (probability ~2**-29 per operation).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

BICUBIC_SUPPORT = 2.0  # torch's interp_size (4) * 0.5
# summation blocks to try: measured on AVX2 (4) and DEFAULT (1) kernels; wider SIMD builds may use more
CANDIDATE_BLOCKS = (4, 1, 8, 16)


def cpu_interpolate(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The reference: torch's CPU antialiased bicubic interpolate (align_corners=False)."""
    return F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


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
    dense = cpu_interpolate(eye, 1, out_size)
    dense = dense.view(in_size, out_size).t()  # [out, in]
    xmin, count = (torch.from_numpy(a) for a in torch_aa_bounds(in_size, out_size))
    width = max(int(count.max()), 1)
    offsets = torch.arange(width)
    inside = offsets[None, :] < count[:, None]
    weights = torch.where(inside, dense.gather(1, (xmin[:, None] + offsets).clamp(max=in_size - 1)), 0.0)
    if ((dense != 0).sum(1) != (weights != 0).sum(1)).any():  # torch's own bounds hold every weight
        raise RuntimeError(f"torch's weights for {in_size} -> {out_size} fall outside its bounds")
    return xmin, count, weights.contiguous()


def _resample_axis(images: torch.Tensor, axis: int, out_size: int, block: int) -> torch.Tensor:
    start, count, weights = (t.to(images.device) for t in aa_bicubic_taps(images.shape[axis], out_size))
    shape = [1] * images.ndim
    shape[axis] = -1
    length = images.shape[axis]
    # tap k >= 1 is fused when it is among the (N - 1) % block left after the blocks of `block`
    offsets = torch.arange(weights.shape[1], device=images.device)
    fused = offsets[None, :] > ((count - 1) // block * block)[:, None]
    acc = torch.zeros((), dtype=torch.float32, device=images.device)
    for k in range(weights.shape[1]):
        # past an output's last tap the weight is 0: adding +-0 changes nothing
        pixels = images.index_select(axis, (start + k).clamp_(max=length - 1))
        weight = weights[:, k].view(shape)
        if k == 0:
            acc = pixels * weight
            continue
        plain = acc + pixels * weight
        fma = (acc.double() + pixels.double() * weight.double()).float()
        acc = torch.where(fused[:, k].view(shape), fma, plain)
    return acc


def _interpolate(images: torch.Tensor, height: int, width: int, block: int) -> torch.Tensor:
    if images.shape[3] != width:
        images = _resample_axis(images, 3, width, block)
    if images.shape[2] != height:
        images = _resample_axis(images, 2, height, block)
    return images


@functools.lru_cache(maxsize=1)
def summation_block() -> int | None:
    """This process's torch CPU summation block (see the module doc), or None if no candidate fits."""
    probe = torch.randint(0, 256, (1, 1, 48, 97), generator=torch.Generator().manual_seed(0)).float()
    sizes = [(48, 3), (48, 11), (48, 23), (48, 40), (48, 61), (48, 150)]  # 4 to ~130 taps per output
    expected = [cpu_interpolate(probe, h, w) for h, w in sizes]
    for block in CANDIDATE_BLOCKS:
        if all(
            torch.equal(_interpolate(probe, h, w, block), e)
            for (h, w), e in zip(sizes, expected, strict=True)
        ):
            return block
    return None


def interpolate_float(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """cpu_interpolate's float32 result for float32 [N, C, H, W] `images`, computed on their device.

    Raises RuntimeError if this torch build sums in a way not among CANDIDATE_BLOCKS.
    """
    block = summation_block()
    if block is None:
        capability = torch.backends.cpu.get_cpu_capability()
        raise RuntimeError(f"torch's CPU ({capability}) antialiased bicubic sums in an unknown order")
    return _interpolate(images, height, width, block)

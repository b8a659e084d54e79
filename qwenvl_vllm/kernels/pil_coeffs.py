"""Pillow's bicubic resampling coefficients (src/libImaging/Resample.c), computed as Pillow does.

Pillow works in C doubles: filter taps are evaluated, summed in order and normalised, then rounded to
fixed point with PRECISION_BITS fractional bits. numpy float64 element-wise operations are the same IEEE
operations, so evaluating them in Pillow's order (never a pairwise sum) gives the same integers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

# Pillow's 8-bit resampling keeps 8 bits for the value and 2 for overshoot in an int32 accumulator.
PRECISION_BITS = 32 - 8 - 2
ROUNDING = 1 << (PRECISION_BITS - 1)
BICUBIC_SUPPORT = 2.0
BICUBIC_A = -0.5


@dataclass(frozen=True)
class PassCoeffs:
    """One 1-D pass: output i reads inputs start[i] .. start[i] + taps - 1 with weights[i] (zero-padded)."""

    start: np.ndarray  # int32 [out]
    count: np.ndarray  # int32 [out], taps actually inside the image
    weights: np.ndarray  # int32 [out, taps], fixed point with PRECISION_BITS fractional bits

    @property
    def taps(self) -> int:
        return self.weights.shape[1]


def _bicubic(x: np.ndarray) -> np.ndarray:
    # Same operation order as Pillow's bicubic_filter (a = -0.5), so the doubles match bit for bit.
    x = np.abs(x)
    near = ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * BICUBIC_A
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _to_fixed(weights: np.ndarray) -> np.ndarray:
    scaled = weights * (1 << PRECISION_BITS)
    # C's (int) cast truncates toward zero after Pillow adds +-0.5.
    return np.trunc(np.where(weights < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)


@functools.lru_cache(maxsize=512)
def bicubic_coeffs(in_size: int, out_size: int) -> PassCoeffs:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for a plain (box-less) resize of one axis."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resample sizes must be positive, got {in_size} -> {out_size}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = BICUBIC_SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    count = xmax - xmin
    inv_filterscale = 1.0 / filterscale
    weights = np.zeros((out_size, ksize), dtype=np.float64)
    total = np.zeros(out_size, dtype=np.float64)
    for x in range(ksize):  # Pillow sums the taps left to right; a vectorised sum would reorder them
        tap = _bicubic(((x + xmin).astype(np.float64) - center + 0.5) * inv_filterscale)
        tap = np.where(x < count, tap, 0.0)
        weights[:, x] = tap
        total += tap
    nonzero = total != 0.0
    weights[nonzero] /= total[nonzero, None]
    taps = max(int(count.max()), 1)
    return PassCoeffs(
        start=xmin.astype(np.int32),
        count=count.astype(np.int32),
        weights=np.ascontiguousarray(_to_fixed(weights[:, :taps])),
    )

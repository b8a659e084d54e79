"""One fixed-point resampling pass along an axis of a uint8 image, in plain torch (any device).

Bound: the positive weights of one output sum to at most ~1.25 * 2**22 (bicubic's negative lobes,
renormalised at the borders), so 255 * that + the rounding term stays far below 2**31 and int32 cannot
overflow, exactly like Pillow's int accumulator; integer sums do not depend on their order.
"""

from __future__ import annotations

import torch

from .pil_coeffs import PRECISION_BITS, ROUNDING

# Taps are gathered in chunks of at most this many int32 elements: small images in one go (few ops),
# large ones tap by tap (little memory).
GATHER_BUDGET = 1 << 22


def resample_axis_torch(
    image: torch.Tensor, axis: int, start: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """uint8 image resampled along `axis`: out[i] = clip8(sum_k in[start[i] + k] * weights[i, k])."""
    length, (out_size, taps) = image.shape[axis], weights.shape
    per_tap = image.numel() // length * out_size
    chunk = max(1, min(taps, GATHER_BUDGET // max(per_tap, 1)))
    before, after = image.shape[:axis], image.shape[axis + 1 :]
    weight_shape = (out_size, -1) + (1,) * len(after)
    acc = torch.full((), ROUNDING, dtype=torch.int32, device=image.device)
    for first in range(0, taps, chunk):
        ks = torch.arange(first, min(first + chunk, taps), device=image.device, dtype=start.dtype)
        # taps past the image edge have weight 0; clamping only keeps the index valid
        index = (start[:, None] + ks).clamp_(max=length - 1)
        pixels = image.index_select(axis, index.flatten()).view(*before, out_size, len(ks), *after)
        # uint8 * int32 promotes to int32 without a separate conversion
        terms = pixels * weights[:, first : first + len(ks)].reshape(weight_shape)
        acc = acc + (terms.squeeze(axis + 1) if len(ks) == 1 else terms.sum(axis + 1, dtype=torch.int32))
    return (acc >> PRECISION_BITS).clamp_(0, 255).to(torch.uint8)

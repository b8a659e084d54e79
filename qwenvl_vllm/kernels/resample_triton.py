"""The same fixed-point resampling pass as resample_torch, as one Triton kernel (CUDA tensors only).

The image is viewed as [outer, length, inner]: a horizontal pass of an [H, W, 3] image is
(H, W, 3), a vertical pass is (1, H, W*3). Each program computes a tile of BLOCK_O output positions by
BLOCK_I inner elements with the integer arithmetic of resample_torch (int32 accumulator starting at the
rounding term, arithmetic shift, clip to 0..255), so the two paths give the same bytes.
Imported lazily: triton is only needed when a CUDA tensor is resized.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .pil_coeffs import PRECISION_BITS, ROUNDING

# Every launch configuration Triton has not seen is a JIT compile at the first image that needs it, a stall
# of the engine loop mid-serving (the tower warm-up runs each once before serving). So the tile is one of
# two shapes, not sized to the image (seventeenth visit: a 40-pixel-wide image compiled a third one), and a
# source at an address Triton would not call 16-byte aligned is copied first.
PIXEL_TILE = (64, 4)  # (BLOCK_O, BLOCK_I): a pass over single pixels, inner = 3 (a horizontal pass on RGB)
ROW_TILE = (1, 256)  # a pass over whole rows, inner = width * 3 (a vertical pass)
SOURCE_ALIGN = 16  # bytes: Triton specialises pointer arguments on this alignment


def tile_for(inner: int) -> tuple[int, int]:
    return PIXEL_TILE if inner <= PIXEL_TILE[1] else ROW_TILE


# Sizes vary with every image: specialising on them (Triton's ==1 / %16 flags) would JIT-compile new
# variants for new sizes mid-serving, each a stall of the engine loop; one variant per block shape instead.
@triton.jit(do_not_specialize=["taps", "length_in", "length_out", "inner"])
def _resample_kernel(
    src,
    dst,
    start_ptr,
    weight_ptr,
    taps,
    length_in,
    length_out,
    inner,
    ROUND: tl.constexpr,
    SHIFT: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    # a flat grid (CUDA caps the 2nd and 3rd grid dimensions at 65535): pid -> (outer, o block, i block)
    pid = tl.program_id(0)
    blocks_o = tl.cdiv(length_out, BLOCK_O)
    blocks_i = tl.cdiv(inner, BLOCK_I)
    outer = (pid // (blocks_o * blocks_i)).to(tl.int64)
    offs_o = (pid // blocks_i) % blocks_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_i = pid % blocks_i * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_o = offs_o < length_out
    mask = mask_o[:, None] & (offs_i < inner)[None, :]
    start = tl.load(start_ptr + offs_o, mask=mask_o, other=0)
    src_base = src + outer * length_in * inner
    acc = tl.full((BLOCK_O, BLOCK_I), ROUND, tl.int32)
    for k in range(taps):
        # taps past the image edge have weight 0; clamping only keeps the address valid
        pos = tl.minimum(start + k, length_in - 1).to(tl.int64)
        weight = tl.load(weight_ptr + offs_o * taps + k, mask=mask_o, other=0)
        pixel = tl.load(src_base + pos[:, None] * inner + offs_i[None, :], mask=mask, other=0)
        acc += pixel.to(tl.int32) * weight[:, None]
    value = tl.minimum(tl.maximum(acc >> SHIFT, 0), 255)
    out = dst + outer * length_out * inner + offs_o[:, None].to(tl.int64) * inner + offs_i[None, :]
    tl.store(out, value.to(tl.uint8), mask=mask)


def resample_axis_triton(
    image: torch.Tensor, axis: int, start: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Drop-in for resample_torch.resample_axis_torch on a contiguous CUDA uint8 tensor."""
    image = image.contiguous()
    if image.data_ptr() % SOURCE_ALIGN:  # a view at an odd offset
        image = image.clone()
    shape = image.shape
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    length_in, length_out = shape[axis], weights.shape[0]
    out = torch.empty((*shape[:axis], length_out, *shape[axis + 1 :]), dtype=torch.uint8, device=image.device)
    block_o, block_i = tile_for(inner)
    grid = (outer * triton.cdiv(length_out, block_o) * triton.cdiv(inner, block_i),)
    _resample_kernel[grid](
        image,
        out,
        start.to(torch.int32).contiguous(),
        weights.to(torch.int32).contiguous(),
        weights.shape[1],
        length_in,
        length_out,
        inner,
        ROUND=ROUNDING,
        SHIFT=PRECISION_BITS,
        BLOCK_O=block_o,
        BLOCK_I=block_i,
    )
    return out

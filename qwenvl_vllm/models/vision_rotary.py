"""2-D rotary position embedding of the Qwen2-VL vision tower.

Each patch has an (h, w) position inside its frame. Half of every head's rotary frequencies rotate by
h, the other half by w (the same head_dim/4 inverse frequencies for both axes); the rotation itself is
the neox one over the full head. Patches arrive in merge-window order (the processor groups them in
`merge x merge` windows), so positions are laid out in that order too.

cos/sin are built once per forward for the whole batch and kept in fp32, so the rotation runs in fp32
like the transformers reference does; they are shared by all blocks.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from vllm.model_executor.layers.rotary_embedding.common import ApplyRotaryEmb


def axial_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Inverse frequencies [head_dim // 4] shared by the h and w axes (fp32)."""
    if head_dim % 4:
        raise ValueError(f"vision head_dim must be a multiple of 4 for 2-D rotary, got {head_dim}")
    half = head_dim // 2
    return 1.0 / (theta ** (torch.arange(0, half, 2, dtype=torch.float32) / half))


@functools.lru_cache(maxsize=256)
def _frame_positions(h: int, w: int, merge: int) -> np.ndarray:
    """(h, w) positions [h*w, 2] of one frame's patches, in merge-window order."""
    hh, ww = np.meshgrid(np.arange(h, dtype=np.int32), np.arange(w, dtype=np.int32), indexing="ij")
    # [h, w] -> [h/m, m, w/m, m] -> [h/m, w/m, m, m]: rows of a window become consecutive.
    shape = (h // merge, merge, w // merge, merge)
    pos = np.stack([a.reshape(shape).transpose(0, 2, 1, 3).reshape(-1) for a in (hh, ww)], axis=-1)
    pos.flags.writeable = False  # cached and shared
    return pos


def patch_positions(grid: list[tuple[int, int, int]], merge: int) -> np.ndarray:
    """Positions [N, 2] (int32) of all patches of all items; every frame of a video repeats its grid."""
    parts = []
    for t, h, w in grid:
        pos = _frame_positions(h, w, merge)
        parts.append(np.tile(pos, (t, 1)) if t > 1 else pos)
    return np.concatenate(parts, axis=0)


def rotary_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, max_pos: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [N, head_dim/2] fp32 for positions [N, 2] (on the target device).

    Row n is (cos(h_n * f), cos(w_n * f)), i.e. the first half of the neox cos vector; the second half
    repeats it, which the rotation kernels assume.
    """
    angles = torch.arange(max_pos, device=inv_freq.device, dtype=torch.float32)[:, None] * inv_freq
    n = positions.shape[0]
    flat = positions.reshape(-1)  # [2N]: h0, w0, h1, w1, ...
    cos = torch.index_select(angles.cos(), 0, flat).view(n, -1)  # [2N, d/4] -> [N, d/2]
    sin = torch.index_select(angles.sin(), 0, flat).view(n, -1)
    return cos, sin


def _rotate_native_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    # vLLM's reference rotation, computed in fp32 and written back into the qkv buffer.
    out = ApplyRotaryEmb.forward_static(qk, cos, sin, is_neox_style=True, enable_fp32_compute=True)
    qk.copy_(out)


def _rotate_triton_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    # vLLM's flash-attn Triton rotary kernel, launched in place on the strided q|k heads of the qkv
    # buffer (no concat/contiguous copies). Its Python wrapper insists on cos.dtype == x.dtype; the
    # kernel itself loads cos/sin as fp32, so we launch it directly with fp32 tables (more accurate
    # than bf16 tables, matching the fp32 rotation of the reference).
    import triton
    from vllm.vllm_flash_attn.ops.triton.rotary import rotary_kernel

    seqlen, nheads, head_dim = qk.shape
    rotary_dim = 2 * cos.shape[1]
    if rotary_dim != head_dim or cos.dtype != torch.float32 or not cos.is_contiguous():
        raise ValueError("rotary tables must be fp32 [N, head_dim/2] contiguous")
    x = qk.unsqueeze(0)  # [1, S, Hh, D]
    block_k = max(32, triton.next_power_of_2(rotary_dim))
    block_m = 8 if rotary_dim <= 128 else 4
    grid = (triton.cdiv(seqlen, block_m), nheads, 1)
    s_b, s_s, s_h, s_d = x.stride()
    with torch.cuda.device(qk.device):
        rotary_kernel[grid](
            OUT=x,  # in place
            X=x,
            COS=cos,
            SIN=sin,
            CU_SEQLENS=None,
            SEQLEN_OFFSETS=0,
            seqlen=seqlen,
            rotary_dim=rotary_dim,
            seqlen_ro=cos.shape[0],
            stride_out_batch=s_b,
            stride_out_seqlen=s_s,
            stride_out_nheads=s_h,
            stride_out_headdim=s_d,
            stride_x_batch=s_b,
            stride_x_seqlen=s_s,
            stride_x_nheads=s_h,
            stride_x_headdim=s_d,
            BLOCK_K=block_k,
            IS_SEQLEN_OFFSETS_TENSOR=False,
            IS_VARLEN=False,
            INTERLEAVED=False,
            CONJUGATE=False,
            BLOCK_M=block_m,
            num_warps=2 if rotary_dim <= 64 else 4,
        )


def apply_vision_rotary_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate q and k in place. qk: [S, heads, head_dim] (may be a strided view into the qkv output)."""
    if qk.is_cuda:
        _rotate_triton_(qk, cos, sin)
    else:
        _rotate_native_(qk, cos, sin)

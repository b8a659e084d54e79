"""Qwen2-VL multimodal rotary position ids (M-RoPE): three rows (temporal, height, width) per token.

Semantics are those of the original Qwen2-VL ``get_rope_index`` (transformers 4.45-4.4x), which vLLM 0.26's
in-tree ``Qwen2VLForConditionalGeneration.get_mrope_input_positions`` reproduces for one request:
- Text tokens get the same position in all three rows, counting up by one.
- A vision item (image, or video of t frame groups) with merged grid (t, h, w) = (t, H/m, W/m) gets the
  index grids ``t_idx, h_idx, w_idx`` (row-major over t, h, w), each offset by the position the next text
  token would have had.
- Text after a vision item continues at the maximum over all three rows of that item + 1, i.e. the item
  advances the position counter by ``max(t, h, w)``.
- Items are found by scanning: the number of images (videos) is the number of ``<|vision_start|>`` tokens
  followed by ``<|image_pad|>`` (``<|video_pad|>``); each item starts at the next pad token of its kind
  after the previous item. ``image_grid_thw`` / ``video_grid_thw`` rows are consumed in order of
  appearance, continuing across the rows of a batch.
- Batches: only tokens with ``attention_mask == 1`` are positioned (left padding); masked tokens keep
  position 1. ``deltas[b] = max(position_ids[:, b]) + 1 - L`` with L the padded length.
- No grids at all: positions ``cumsum(mask) - 1`` (masked tokens 1), or ``arange(L)`` without a mask.

Where transformers 5.x (5.17 checked, ``Qwen2VLModel.get_rope_index``) differs from the original:
- After a vision item it advances the counter by ``max(h, w)`` only, not ``max(t, h, w)``. This changes the
  positions of everything after a video whose temporal grid t exceeds both merged spatial sides (e.g. a
  64-frame video at low resolution: grid (32, 4, 6) -> t=32 > max(2, 3)); images (t = 1) and videos with
  t <= max(h, w) agree. Checkpoints were trained with the original rule, so this module keeps it.
- Masked (padding) tokens get position 0 instead of 1, and the delta uses the unpadded length.
- It finds items from ``mm_token_type_ids`` runs instead of ``<|vision_start|>`` + pad tokens.

vLLM hook: vLLM calls ``get_mrope_input_positions(input_tokens, mm_features)`` once per request and expects
``(positions [3, len(input_tokens)] int64, delta int)``. vLLM 0.26 places items by their
``mm_feature.mm_position.offset`` (sorted; the offset is the first pad token) and reads the grid from
``mm_feature.data["image_grid_thw" | "video_grid_thw"].data``; ``mrope_positions_from_features`` does the
same. ``mrope_input_positions`` is the token-scanning variant for callers that only have grids.

Deviations (bad input only): where the original crashes with an IndexError or a shape mismatch, or
silently floors a grid, this module raises ValueError: grids must be positive with H and W divisible by the
merge size, and every item must fit inside its sequence. A row with no attended tokens keeps position 1
everywhere (delta 2 - L) instead of crashing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from qwenvl_vllm.constants import IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VISION_START_TOKEN_ID

# (offset of the first pad token, t, h, w) with h, w already divided by the merge size.
_Item = tuple[int, int, int, int]


def _grid_rows(grid_thw: Any, name: str, merge: int) -> list[tuple[int, int, int]]:
    """Validated (t, h, w) rows of an [N, 3] tensor / array / list; None gives none."""
    if grid_thw is None:
        return []
    rows = np.asarray(grid_thw.cpu() if isinstance(grid_thw, torch.Tensor) else grid_thw, dtype=np.int64)
    if rows.size == 0:
        return []
    if rows.ndim != 2 or rows.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3], got {tuple(rows.shape)}")
    for t, h, w in rows.tolist():
        if t < 1 or h < 1 or w < 1 or h % merge or w % merge:
            raise ValueError(f"{name} row {(t, h, w)}: need positive t, h, w with h, w divisible by {merge}")
    return [tuple(row) for row in rows.tolist()]


def _merged(grid: tuple[int, int, int], merge: int) -> tuple[int, int, int]:
    t, h, w = grid
    return t, h // merge, w // merge


def _positions_for_items(length: int, items: Iterable[_Item]) -> np.ndarray:
    """[3, length] int64 positions of one sequence whose vision items are sorted by offset."""
    positions = np.empty((3, length), dtype=np.int64)
    st = 0  # next token index to position
    next_pos = 0  # position the next text token gets
    for offset, t, h, w in items:
        end = offset + t * h * w
        if offset < st or end > length:
            raise ValueError(
                f"vision item at token {offset} with {t * h * w} tokens does not fit: previous item ends at "
                f"{st}, sequence length {length}"
            )
        positions[:, st:offset] = np.arange(next_pos, next_pos + offset - st)  # broadcast over 3 rows
        base = next_pos + offset - st
        # [3, t, h, w] -> [3, t*h*w]: t, h, w index grids, row-major like the pad tokens.
        positions[:, offset:end] = np.indices((t, h, w)).reshape(3, -1) + base
        next_pos = base + max(t, h, w)
        st = end
    positions[:, st:] = np.arange(next_pos, next_pos + length - st)
    return positions


class _GridQueue:
    """Hands out grid rows of one modality in order, across all rows of a batch (as the original)."""

    def __init__(self, rows: list[tuple[int, int, int]], name: str) -> None:
        self.rows, self.name, self.used = rows, name, 0

    def pop(self) -> tuple[int, int, int]:
        if self.used >= len(self.rows):
            raise ValueError(f"the tokens contain more items than the {len(self.rows)} rows of {self.name}")
        self.used += 1
        return self.rows[self.used - 1]


def _next_index(sorted_indices: np.ndarray, start: int, what: str) -> int:
    i = int(np.searchsorted(sorted_indices, start))
    if i == len(sorted_indices):
        raise ValueError(f"<|vision_start|> announces another {what} but no {what} pad token follows")
    return int(sorted_indices[i])


def _scan_items(
    tokens: np.ndarray,
    images: _GridQueue,
    videos: _GridQueue,
    merge: int,
    ids: tuple[int, int, int],
) -> list[_Item]:
    """Vision items of one (unpadded) token sequence, located as the original get_rope_index does."""
    image_id, video_id, start_id = ids
    starts = np.flatnonzero(tokens[:-1] == start_id)
    after_start = tokens[starts + 1]
    remain_images = int((after_start == image_id).sum())
    remain_videos = int((after_start == video_id).sum())
    image_at = np.flatnonzero(tokens == image_id)
    video_at = np.flatnonzero(tokens == video_id)
    never = len(tokens) + 1
    items: list[_Item] = []
    st = 0
    for _ in range(remain_images + remain_videos):
        ed_image = _next_index(image_at, st, "image") if remain_images > 0 else never
        ed_video = _next_index(video_at, st, "video") if remain_videos > 0 else never
        if ed_image < ed_video:
            grid, ed = images.pop(), ed_image
            remain_images -= 1
        else:
            grid, ed = videos.pop(), ed_video
            remain_videos -= 1
        t, h, w = _merged(grid, merge)
        items.append((ed, t, h, w))
        st = ed + t * h * w
    return items


def _as_token_rows(input_ids: Any) -> torch.Tensor:
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor [B, L], got {tuple(ids.shape)} {ids.dtype}")
    return ids


def _as_mask(attention_mask: Any, shape: torch.Size) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    mask = torch.as_tensor(attention_mask)
    if mask.shape != shape:
        raise ValueError(f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(shape)}")
    return mask == 1


def _text_only(ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    batch, length = ids.shape
    if mask is None:
        positions = torch.arange(length, device=ids.device).view(1, 1, -1).expand(3, batch, -1)
        return positions.clone(), torch.zeros(batch, 1, dtype=torch.long, device=ids.device)
    positions = mask.long().cumsum(-1) - 1
    positions.masked_fill_(~mask, 1)
    deltas = positions.max(-1, keepdim=True).values + 1 - length
    return positions.unsqueeze(0).expand(3, -1, -1).clone().to(ids.device), deltas.to(ids.device)


def get_rope_index(
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    spatial_merge_size: int = 2,
    image_token_id: int = IMAGE_TOKEN_ID,
    video_token_id: int = VIDEO_TOKEN_ID,
    vision_start_token_id: int = VISION_START_TOKEN_ID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE position ids of a batch: (position_ids [3, B, L] long, deltas [B, 1] long).

    Same contract as the original Qwen2-VL ``get_rope_index`` (see the module docstring).
    """
    ids = _as_token_rows(input_ids)
    if ids.shape[1] == 0:
        raise ValueError("input_ids has no tokens")
    mask = _as_mask(attention_mask, ids.shape)
    if image_grid_thw is None and video_grid_thw is None:
        return _text_only(ids, mask)
    batch, length = ids.shape
    images = _GridQueue(_grid_rows(image_grid_thw, "image_grid_thw", spatial_merge_size), "image_grid_thw")
    videos = _GridQueue(_grid_rows(video_grid_thw, "video_grid_thw", spatial_merge_size), "video_grid_thw")
    token_ids = (image_token_id, video_token_id, vision_start_token_id)
    ids_np = ids.cpu().numpy().astype(np.int64, copy=False)
    mask_np = np.ones(ids_np.shape, dtype=bool) if mask is None else mask.cpu().numpy()
    position_ids = np.ones((3, batch, length), dtype=np.int64)  # masked tokens keep position 1
    deltas = np.empty((batch, 1), dtype=np.int64)
    for b in range(batch):
        tokens = ids_np[b][mask_np[b]]
        items = _scan_items(tokens, images, videos, spatial_merge_size, token_ids)
        positions = _positions_for_items(len(tokens), items)
        position_ids[:, b, mask_np[b]] = positions
        # The original takes the max over attended tokens only; an empty row keeps position 1.
        deltas[b, 0] = (positions.max() if positions.size else 1) + 1 - length
    return torch.from_numpy(position_ids).to(ids.device), torch.from_numpy(deltas).to(ids.device)


def mrope_input_positions(
    input_tokens: Sequence[int],
    image_grid_thw: Sequence[Sequence[int]] | torch.Tensor | None = (),
    video_grid_thw: Sequence[Sequence[int]] | torch.Tensor | None = (),
    *,
    spatial_merge_size: int = 2,
    image_token_id: int = IMAGE_TOKEN_ID,
    video_token_id: int = VIDEO_TOKEN_ID,
    vision_start_token_id: int = VISION_START_TOKEN_ID,
) -> tuple[torch.Tensor, int]:
    """One request, items found by scanning the tokens: (positions [3, len] int64, delta int).

    Equals ``get_rope_index`` on a batch of one without padding.
    """
    tokens = np.asarray(input_tokens, dtype=np.int64)
    if tokens.ndim != 1:
        raise ValueError(f"input_tokens must be a flat list of token ids, got shape {tokens.shape}")
    images = _GridQueue(_grid_rows(image_grid_thw, "image_grid_thw", spatial_merge_size), "image_grid_thw")
    videos = _GridQueue(_grid_rows(video_grid_thw, "video_grid_thw", spatial_merge_size), "video_grid_thw")
    token_ids = (image_token_id, video_token_id, vision_start_token_id)
    items = _scan_items(tokens, images, videos, spatial_merge_size, token_ids)
    positions = _positions_for_items(len(tokens), items)
    delta = int(positions.max()) + 1 - len(tokens) if len(tokens) else 0
    return torch.from_numpy(positions), delta


_GRID_KEYS = {"image": "image_grid_thw", "video": "video_grid_thw"}


def _feature_item(feature: Any, merge: int) -> _Item:
    """(offset, merged t, h, w) of one vLLM MultiModalFeatureSpec."""
    key = _GRID_KEYS.get(feature.modality)
    if key is None:
        raise ValueError(f"M-RoPE supports image and video items, got modality {feature.modality!r}")
    elem = None if feature.data is None else feature.data.get(key)
    if elem is None or elem.data is None:
        raise ValueError(f"{feature.modality} item at {feature.mm_position.offset} carries no {key}")
    raw = torch.as_tensor(elem.data)
    if raw.numel() != 3:
        raise ValueError(f"{key} of one item must hold 3 values (t, h, w), got shape {tuple(raw.shape)}")
    (grid,) = _grid_rows(raw.reshape(1, 3), key, merge)
    if feature.modality == "image" and grid[0] != 1:
        raise ValueError(f"an image must have a temporal grid of 1, got {grid}")
    t, h, w = _merged(grid, merge)
    if feature.mm_position.length != t * h * w:
        # The offset must be the first pad token; a range that also covers <|vision_start|> would shift it.
        raise ValueError(
            f"{feature.modality} placeholder length {feature.mm_position.length} != {t * h * w} pad tokens "
            f"of grid {grid}"
        )
    return feature.mm_position.offset, t, h, w


def mrope_positions_from_features(
    input_tokens: Sequence[int], mm_features: Sequence[Any], spatial_merge_size: int = 2
) -> tuple[torch.Tensor, int]:
    """vLLM ``SupportsMRoPE.get_mrope_input_positions`` body for Qwen2-VL.

    Items are placed at their ``mm_position.offset`` (sorted), as vLLM 0.26 in-tree does, with grids from
    ``mm_feature.data[...]``. Returns (positions [3, len(input_tokens)] int64, delta int).
    """
    items = sorted(_feature_item(f, spatial_merge_size) for f in mm_features)
    positions = _positions_for_items(len(input_tokens), items)
    delta = int(positions.max()) + 1 - len(input_tokens) if len(input_tokens) else 0
    return torch.from_numpy(positions), delta

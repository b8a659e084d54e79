"""Qwen2-VL vision geometry: patch grids and LLM token counts of images and videos.

The one home of "how many LLM tokens does this item become", used by the offline processors
(`to_vllm_inputs`), vLLM's multimodal processing and the model class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qwenvl_vllm.constants import PATCH_SIZE, SPATIAL_MERGE_SIZE, TEMPORAL_PATCH_SIZE


def grid_tokens(grid_thw: Sequence[int], merge_size: int = SPATIAL_MERGE_SIZE) -> int:
    """LLM tokens of a (t, h, w) patch grid: the merger joins merge_size x merge_size patches."""
    t, h, w = (int(x) for x in grid_thw)
    return t * h * w // (merge_size * merge_size)


def grids_tokens(grids_thw: torch.Tensor, merge_size: int = SPATIAL_MERGE_SIZE) -> torch.Tensor:
    """`grid_tokens` of every row of a [n, 3] grid tensor."""
    return grids_thw.prod(-1) // (merge_size * merge_size)


@dataclass(frozen=True)
class VisionGeometry:
    patch_size: int = PATCH_SIZE
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE
    merge_size: int = SPATIAL_MERGE_SIZE

    @property
    def factor(self) -> int:
        """Pixels per LLM token along one side (28 for Qwen2-VL)."""
        return self.patch_size * self.merge_size

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) patch grid of `frames` frames of height x width pixels (sides multiples of factor).

        A frame count that is not a multiple of temporal_patch_size is padded up (the last frame repeats).
        """
        groups = math.ceil(frames / self.temporal_patch_size)
        return groups, height // self.patch_size, width // self.patch_size

    def tokens(self, grid_thw: Sequence[int]) -> int:
        return grid_tokens(grid_thw, self.merge_size)

    def image_tokens(self, height: int, width: int) -> int:
        return self.tokens(self.grid(1, height, width))

    def video_tokens(self, frames: int, height: int, width: int) -> int:
        return self.tokens(self.grid(frames, height, width))


QWEN2_VL = VisionGeometry()


@dataclass(frozen=True)
class ItemTokens:
    """One image or video of a prompt: its patch grid (t, h, w) and how many LLM tokens it becomes."""

    kind: str
    grid_thw: tuple[int, int, int]
    tokens: int

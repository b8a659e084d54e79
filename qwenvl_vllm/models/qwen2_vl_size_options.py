"""Qwen2-VL size options (`mm_processor_kwargs`, engine-level, per request and per item) and pixel defaults.

The keys act like those of a qwen-vl-utils content item: min_pixels, max_pixels, resized_height +
resized_width, total_pixels (videos); `do_resize=False` keeps every item at its given size; per-item keys
come as mm_processor_kwargs["items"] = {modality: {index: keys}} (serving/item_options.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qwenvl_vllm.constants import CLIP_MEAN, CLIP_STD, PIXEL_RESCALE, SIZE_KEYS
from qwenvl_vllm.processors.sizing import IMAGE_MAX_TOKEN_NUM, IMAGE_MIN_TOKEN_NUM, MAX_RATIO
from qwenvl_vllm.serving.item_options import ITEMS_KEY, ItemOptions, parse_items

# Frame-sampling keys: meaningless here, vLLM hands the processor frames already sampled (in `vllm serve` by
# serving.video_loader, from media_io_kwargs["video"]); qwen-vl-utils ignores them for frame lists too.
IGNORED_KEYS = frozenset(
    {
        "fps",
        "nframes",
        "min_frames",
        "max_frames",
        "sample_fps",
        "do_sample_frames",
        "use_fast",
        "return_tensors",
    }
)


def _size_values(kwargs: Mapping[str, object], where: str = "mm_processor_kwargs") -> dict[str, float]:
    """The SIZE_KEYS among kwargs, each a positive number, resized_height/width as a pair."""
    given: dict[str, float] = {}
    for key in SIZE_KEYS:
        value = kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{where}[{key!r}] must be a positive number, got {value!r}")
        given[key] = value
    if ("resized_height" in given) != ("resized_width" in given):
        raise ValueError(f"{where}: give both resized_height and resized_width, or neither")
    return given


def _item_size_values(kwargs: Mapping[str, object], where: str) -> dict[str, float]:
    """One item's options (mm_processor_kwargs["items"]): size keys only, frames are sampled earlier."""
    unknown = set(kwargs) - set(SIZE_KEYS)
    if unknown:
        raise ValueError(
            f"unsupported option(s) {sorted(unknown)} in {where}; supported: {', '.join(SIZE_KEYS)} "
            "(video sampling keys such as fps / nframes go in media_io_kwargs['video'])"
        )
    return _size_values(kwargs, where)


@dataclass(frozen=True)
class SizeOptions:
    """Size keys given at engine level or per request, validated; `do_resize=False` keeps given sizes.

    `items` holds per-item overrides (see qwenvl_vllm.serving.item_options): {modality: {index: keys}}.
    """

    given: Mapping[str, float]
    do_resize: bool = True
    items: ItemOptions = field(default_factory=dict)

    @staticmethod
    def parse(kwargs: Mapping[str, object]) -> SizeOptions:
        unknown = set(kwargs) - set(SIZE_KEYS) - IGNORED_KEYS - {"do_resize", ITEMS_KEY}
        if unknown:
            raise ValueError(
                f"unsupported mm_processor_kwargs {sorted(unknown)} for Qwen2-VL; "
                f"supported: {', '.join(SIZE_KEYS)}, do_resize, {ITEMS_KEY}"
            )
        do_resize = kwargs.get("do_resize", True)
        if not isinstance(do_resize, bool):
            raise ValueError(f"mm_processor_kwargs['do_resize'] must be a bool, got {do_resize!r}")
        items = parse_items(kwargs.get(ITEMS_KEY), _item_size_values)
        return SizeOptions(_size_values(kwargs), do_resize, items)

    def for_item(self, modality: str, index: int) -> SizeOptions:
        """The options of one item: its own keys over the request's, as in a qwen-vl-utils content item."""
        own = self.items.get(modality, {}).get(index)
        if not own:
            return self
        # own keys win one by one; an own resized_height/width pair replaces the request's pair whole
        return SizeOptions({**self.given, **own}, self.do_resize)


@dataclass(frozen=True)
class PixelDefaults:
    """Image defaults from preprocessor_config.json (qwen-vl-utils' own defaults when absent)."""

    min_pixels: int
    max_pixels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rescale: float | None


def pixel_defaults(config: Mapping[str, Any], factor: int) -> PixelDefaults:
    size = config.get("size") or {}
    min_pixels = config.get("min_pixels") or size.get("shortest_edge") or IMAGE_MIN_TOKEN_NUM * factor**2
    max_pixels = config.get("max_pixels") or size.get("longest_edge") or IMAGE_MAX_TOKEN_NUM * factor**2
    rescale = config.get("rescale_factor", PIXEL_RESCALE) if config.get("do_rescale", True) else None
    return PixelDefaults(
        min_pixels=int(min_pixels),
        max_pixels=int(max_pixels),
        mean=tuple(config.get("image_mean") or CLIP_MEAN),
        std=tuple(config.get("image_std") or CLIP_STD),
        rescale=rescale,
    )


def squarest_grid(tokens: int) -> tuple[int, int]:
    """(rows, cols), rows <= cols, of the largest count <= tokens that factors with aspect <= MAX_RATIO."""
    for count in range(max(tokens, 1), 0, -1):
        rows = next(d for d in range(math.isqrt(count), 0, -1) if count % d == 0)
        if count // rows <= MAX_RATIO * rows:
            return rows, count // rows
    return 1, 1

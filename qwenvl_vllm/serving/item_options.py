"""Per-item options: qwen-vl-utils keys for one image or video of a request.

vLLM 0.26's chat parsing keeps only the `url` of an `image_url` / `video_url` part (extra keys inside or
beside it are dropped before any hook sees them), so per-item options travel in `mm_processor_kwargs`:

    {"items": {"image": {"0": {"max_pixels": 200704}}, "video": {"1": {"total_pixels": 4014080}}}}

Indices count the items of one modality in prompt order, from 0. An item's keys override the request's
(key by key), as the keys of one qwen-vl-utils content item override its defaults.

The options are positional, so vLLM's processor cache (which processes only the items it misses, re-indexed)
cannot serve such a request; `ItemKeyedInputs` gives each item a hash of its own content and own options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vllm.multimodal.hasher import MultiModalHasher
from vllm.multimodal.processing.inputs import ProcessorInputs

ITEMS_KEY = "items"
MODALITIES = ("image", "video")

ItemOptions = dict[str, dict[int, dict[str, Any]]]


def _index(key: object, where: str) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, str)) or not str(key).isdigit():
        raise ValueError(f"{where}: item index must be a non-negative integer, got {key!r}")
    return int(key)


def parse_items(raw: object, validate: Callable[[Mapping[str, object], str], dict[str, Any]]) -> ItemOptions:
    """{modality: {index: options}} from mm_processor_kwargs["items"]; `validate` checks one item's keys."""
    if raw is None:
        return {}
    where = f"mm_processor_kwargs[{ITEMS_KEY!r}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be an object {{modality: {{index: options}}}}, got {raw!r}")
    parsed: ItemOptions = {}
    for modality, per_index in raw.items():
        if modality not in MODALITIES:
            raise ValueError(f"{where}: unknown modality {modality!r}; supported: {', '.join(MODALITIES)}")
        if not isinstance(per_index, Mapping):
            raise ValueError(f"{where}[{modality!r}] must be an object {{index: options}}, got {per_index!r}")
        parsed[modality] = {}
        for key, options in per_index.items():
            item_where = f"{where}[{modality!r}][{key!r}]"
            if not isinstance(options, Mapping):
                raise ValueError(f"{item_where} must be an object of options, got {options!r}")
            parsed[modality][_index(key, item_where)] = validate(options, item_where)
    return parsed


def check_item_counts(items: ItemOptions, counts: Mapping[str, int]) -> None:
    for modality, per_index in items.items():
        count = counts.get(modality, 0)
        beyond = sorted(index for index in per_index if index >= count)
        if beyond:
            raise ValueError(
                f"mm_processor_kwargs[{ITEMS_KEY!r}][{modality!r}] names item(s) {beyond}, "
                f"but the request has {count} {modality} item(s)"
            )


@dataclass
class ItemKeyedInputs(ProcessorInputs):
    """Processor inputs whose item hashes cover each item's own options instead of the whole `items` map."""

    items: ItemOptions | None = None

    def get_mm_hashes(self, model_id: str) -> dict[str, list[str]]:
        shared = {k: v for k, v in self.hf_processor_mm_kwargs.items() if k != ITEMS_KEY}
        uuids = self.mm_uuid_items or {}
        hashes: dict[str, list[str]] = {}
        for modality, data_items in self.mm_data_items.items():
            own = (self.items or {}).get(modality, {})
            modality_uuids = uuids.get(modality) or [None] * data_items.get_count()
            hashes[modality] = [
                MultiModalHasher.hash_kwargs(
                    model_id=model_id,
                    **{modality: item if uuid is None else uuid},
                    **shared,
                    qwenvl_item_options=own.get(index, {}),
                )
                for index, (item, uuid) in enumerate(
                    zip(data_items.get_all_items_for_hash(), modality_uuids, strict=True)
                )
            ]
        return hashes


def item_keyed_inputs(inputs: ProcessorInputs, items: ItemOptions) -> ItemKeyedInputs:
    return ItemKeyedInputs(
        prompt=inputs.prompt,
        mm_data_items=inputs.mm_data_items,
        mm_uuid_items=inputs.mm_uuid_items,
        hf_processor_mm_kwargs=inputs.hf_processor_mm_kwargs,
        tokenization_kwargs=inputs.tokenization_kwargs,
        items=items,
    )

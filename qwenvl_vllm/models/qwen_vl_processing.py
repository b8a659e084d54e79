"""vLLM multimodal processing for Qwen-VL v1 (no HF processor class exists, so we do it here).

Prompt convention (Qwen-VL's own): every image is `<img>...</img>` in the prompt, usually written as
`Picture N: <img>PATH_OR_URL</img>\n`. Whatever sits between the tags is dropped (the image itself comes
in `multi_modal_data`), and each `<img></img>` pair becomes `<img>` + n_queries x `<imgpad>` + `</img>`;
only the `<imgpad>` positions receive image features, as in the release where the features overwrite
the positions strictly between the tags.

vLLM 0.26 tokenizes text prompts itself before calling the processor, so the main path sees token ids:
`_apply_hf_processor_tokens_only` collapses each `<img> ... </img>` span to the two tag tokens. Text given
to the processor directly (profiling, tests) is tokenized and collapsed the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from vllm.config.multimodal import BaseDummyOptions
from vllm.inputs import MultiModalDataDict
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems, MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
    TimingContext,
)

from qwenvl_vllm.constants import IMG_START_ID, QWEN_VL_IMAGE_SIZE, SIZE_KEYS, UINT8_PIXEL_KEYS
from qwenvl_vllm.models.qwen_vl_visual import vision_n_queries
from qwenvl_vllm.processors.list_format import tag_runs
from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values, rgb_uint8
from qwenvl_vllm.serving.item_options import ITEMS_KEY
from qwenvl_vllm.settings import get_settings


def image_token_ids(visual: Mapping[str, Any]) -> tuple[int, int, int]:
    """(<img>, </img>, <imgpad>) ids: the release derives all three from `image_start_id`."""
    start = int(visual.get("image_start_id", IMG_START_ID))
    return start, start + 1, start + 2


def collapse_image_spans(token_ids: Sequence[int], start_id: int, end_id: int) -> list[int]:
    """Drop everything between each `<img>` and its `</img>` (a path, a URL, or earlier padding).

    An `<img>` with no closing tag is left as it is.
    """
    out: list[int] = []
    for tag, ids in tag_runs(list(token_ids), {start_id: end_id}, strict=False):
        out += ids if tag is None else [start_id, end_id]
    return out


def _to_pil(image: object) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8:
        return Image.fromarray(image)
    raise ValueError(f"Qwen-VL images must be PIL images or HxWxC uint8 arrays, got {type(image).__name__}")


def pixel_values_for(images: Sequence[object], image_size: int) -> torch.Tensor:
    """float32 [N, 3, S, S] with the release's transform (shared with the offline prompt builder)."""
    return qwen_vl_pixel_values([_to_pil(image) for image in images], image_size)


class QwenVLProcessingInfo(BaseProcessingInfo):
    def get_visual_config(self) -> Mapping[str, Any] | None:
        visual = getattr(self.get_hf_config(), "visual", None)
        return visual or None

    def require_visual_config(self) -> Mapping[str, Any]:
        visual = self.get_visual_config()
        if visual is None:
            raise ValueError("this Qwen checkpoint has no `visual` config section: it takes text only")
        return visual

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        # A text-only Qwen-7B config supports no modality, so vLLM runs it in text-only mode.
        return {"image": None} if self.get_visual_config() is not None else {}

    def get_num_image_tokens(self) -> int:
        return vision_n_queries(self.require_visual_config())

    def get_image_size(self) -> int:
        return int(self.require_visual_config().get("image_size", QWEN_VL_IMAGE_SIZE))

    def get_image_token_ids(self) -> tuple[int, int, int]:
        return image_token_ids(self.require_visual_config())

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.get_num_image_tokens()}


class QwenVLDummyInputsBuilder(BaseDummyInputsBuilder[QwenVLProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return "".join(f"Picture {i}: <img></img>\n" for i in range(1, mm_counts.get("image", 0) + 1))

    def get_dummy_mm_data(
        self,
        seq_len: int,
        mm_counts: Mapping[str, int],
        mm_options: Mapping[str, BaseDummyOptions],
    ) -> MultiModalDataDict:
        size = self.info.get_image_size()
        return {
            "image": self._get_dummy_images(
                width=size,
                height=size,
                num_images=mm_counts.get("image", 0),
                overrides=mm_options.get("image") if mm_options else None,
            )
        }


def refuse_sizing_options(mm_kwargs: Mapping[str, object], image_size: int) -> None:
    """Qwen-VL resizes every image to one fixed size, so a size option would be silently ignored."""
    given = sorted(set(mm_kwargs) & {*SIZE_KEYS, ITEMS_KEY})
    if given:
        raise ValueError(
            f"Qwen-VL resizes every image to {image_size}x{image_size}; the size option(s) {given} in "
            "mm_processor_kwargs do not apply to it (they are Qwen2-VL's)"
        )


class QwenVLMultiModalProcessor(BaseMultiModalProcessor[QwenVLProcessingInfo]):
    def _cached_apply_hf_processor(
        self, inputs: ProcessorInputs, timing_ctx: TimingContext
    ) -> tuple[list[int], Any, bool]:
        refuse_sizing_options(inputs.hf_processor_mm_kwargs, self.info.get_image_size())
        return super()._cached_apply_hf_processor(inputs, timing_ctx)

    def _collapse(self, token_ids: Sequence[int]) -> list[int]:
        start, end, _ = self.info.get_image_token_ids()
        return collapse_image_spans(list(token_ids), start, end)

    def _call_hf_processor(
        self,
        prompt: str,
        mm_data: Mapping[str, object],
        mm_kwargs: Mapping[str, object],
        tok_kwargs: Mapping[str, object],
    ) -> BatchFeature:
        tokenizer = self.info.get_tokenizer()
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        data: dict[str, object] = {"input_ids": [self._collapse(prompt_ids)]}
        images = mm_data.get("images") or []
        if images and get_settings().device_pixels:  # the model resizes / normalises on its device
            data[UINT8_PIXEL_KEYS["image"]] = [rgb_uint8(_to_pil(image)) for image in images]
        elif images:
            data["pixel_values"] = pixel_values_for(images, self.info.get_image_size())
        return BatchFeature(data)

    def _apply_hf_processor_tokens_only(self, prompt_tokens: list[int]) -> list[int]:
        return self._collapse(prompt_tokens)

    def _apply_hf_processor_main(
        self,
        prompt: str | list[int],
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        tokenization_kwargs: Mapping[str, object],
        *,
        enable_hf_prompt_update: bool,
    ) -> tuple[list[int], BatchFeature, bool]:
        prompt_ids, processed, applied = super()._apply_hf_processor_main(
            prompt,
            mm_items,
            hf_processor_mm_kwargs,
            tokenization_kwargs,
            enable_hf_prompt_update=enable_hf_prompt_update,
        )
        # Fewer tags than images would otherwise surface as an assertion deep in vLLM's prompt update.
        # (mm_items may be only the cache misses, so only "too few tags" is certain to be an error.)
        num_images = mm_items.get_all_counts().get("image", 0)
        num_tags = prompt_ids.count(self.info.get_image_token_ids()[0])
        if num_tags < num_images:
            raise ValueError(
                f"the prompt has {num_tags} <img></img> placeholder(s) for {num_images} image(s); "
                "write `Picture N: <img></img>` (or `<img>PATH</img>`) once per image"
            )
        return prompt_ids, processed, applied

    def _hf_processor_applies_updates(
        self,
        prompt_text: str,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        tokenization_kwargs: Mapping[str, object],
    ) -> bool:
        # Our "HF processor" only collapses tags; vLLM inserts the <imgpad> runs.
        return False

    def _get_mm_fields_config(
        self,
        hf_inputs: BatchFeature,
        hf_processor_mm_kwargs: Mapping[str, object],
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {
            "pixel_values": MultiModalFieldConfig.batched("image"),
            "image_embeds": MultiModalFieldConfig.batched("image"),
            UINT8_PIXEL_KEYS["image"]: MultiModalFieldConfig.batched("image"),
        }

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        start, end, pad = self.info.get_image_token_ids()
        n_queries = self.info.get_num_image_tokens()

        def replacement(item_idx: int) -> PromptUpdateDetails[list[int]]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            num = images.get_feature_size(item_idx) if isinstance(images, ImageEmbeddingItems) else n_queries
            return PromptUpdateDetails.select_token_id([start] + [pad] * num + [end], embed_token_id=pad)

        return [PromptReplacement(modality="image", target=[start, end], replacement=replacement)]

"""Message lists (qwen-vl-utils format) -> the prompt dicts `vllm.LLM.generate` takes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from qwenvl_vllm.geometry import QWEN2_VL, ItemTokens

from .qwen_vl import qwen_vl_inputs
from .vision_info import Conversation, as_conversations, content_kind, process_vision_info


def image_tokens(image: Image.Image) -> ItemTokens:
    grid = QWEN2_VL.grid(1, image.height, image.width)
    return ItemTokens("image", grid, QWEN2_VL.tokens(grid))


def video_tokens(video: torch.Tensor) -> ItemTokens:
    frames, _, height, width = video.shape
    grid = QWEN2_VL.grid(frames, height, width)
    return ItemTokens("video", grid, QWEN2_VL.tokens(grid))


@lru_cache(maxsize=8)
def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _model_type(model: Any) -> str | None:
    if isinstance(model, (str, Path)):
        config = Path(model) / "config.json"
        return json.loads(config.read_text()).get("model_type") if config.is_file() else None
    return None


def chat_prompt(conversation: Conversation, model: Any, add_generation_prompt: bool = True) -> str:
    """The prompt text from the checkpoint's chat template (or a tokenizer/processor object)."""
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            for ele in content:
                content_kind(ele)  # rejects unknown content types before the template sees them
    renderer = _load_tokenizer(str(model)) if isinstance(model, (str, Path)) else model
    if getattr(renderer, "chat_template", None) is None:
        raise ValueError("the model's tokenizer has no chat template")
    return renderer.apply_chat_template(
        list(conversation), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def video_array(video: torch.Tensor) -> np.ndarray:
    """[T, C, H, W] float frames with integer values -> [T, H, W, C] uint8, the layout vLLM takes."""
    return video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def conversation_inputs(
    conversation: Conversation, model: Any, add_generation_prompt: bool = True
) -> tuple[dict[str, Any], list[ItemTokens]]:
    if _model_type(model) == "qwen":
        return qwen_vl_inputs(conversation, model)
    prompt = chat_prompt(conversation, model, add_generation_prompt)
    images, videos = process_vision_info([conversation])
    items = [image_tokens(img) for img in images or []] + [video_tokens(v) for v in videos or []]
    inputs: dict[str, Any] = {"prompt": prompt}
    mm_data: dict[str, Any] = {}
    if images:
        mm_data["image"] = images
    if videos:
        mm_data["video"] = [video_array(v) for v in videos]
    if mm_data:
        inputs["multi_modal_data"] = mm_data
    if mm_data:
        # sizes are final already (qwen-vl-utils semantics); ours and transformers' processors both
        # honour do_resize=False, so neither resizes them a second time with other rules
        inputs["mm_processor_kwargs"] = {"do_resize": False}
    return inputs, items


def to_vllm_inputs(
    messages: Conversation | Sequence[Conversation],
    model: Any,
    *,
    add_generation_prompt: bool = True,
    return_item_tokens: bool = False,
):
    """Prompt dict(s) for `LLM.generate`: one dict for one conversation, a list for a batch.

    `model` is a checkpoint directory (its tokenizer's chat template is used) or any object with
    `apply_chat_template`. With `return_item_tokens=True` also returns, per conversation, the
    `ItemTokens` of its images then videos.
    """
    single = isinstance(messages, Sequence) and len(messages) > 0 and isinstance(messages[0], Mapping)
    results = [conversation_inputs(c, model, add_generation_prompt) for c in as_conversations(messages)]
    inputs = [r[0] for r in results]
    tokens = [r[1] for r in results]
    if single:
        return (inputs[0], tokens[0]) if return_item_tokens else inputs[0]
    return (inputs, tokens) if return_item_tokens else inputs

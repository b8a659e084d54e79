"""Qwen-VL v1 (Qwen-VL, Qwen-VL-Chat) prompts, as the released remote code builds them.

- `qwen_vl_pixel_values` (qwen_vl_pixels.py): the released visual.py transform.
- The released tokenizer's list-format helpers (`from_list_format`, `to_list_format`,
  `draw_bbox_on_latest_picture`) live in list_format.py.
- `build_qwen_vl_prompt`: ChatML prompt + images for vLLM from chat messages (OpenAI / qwen-vl-utils style)
  or the v1 list format, rendered with the same Jinja template that `vllm serve` uses, so offline and
  served prompts agree. Images become `Picture N: <img></img>\n` with EMPTY tags; vLLM's multimodal
  processor expands each to <img> + 256 <imgpad> + </img> (`expand_image_placeholders` does the same on
  token ids, for tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qwenvl_vllm.constants import (
    IMG_END,
    IMG_END_ID,
    IMG_PAD_ID,
    IMG_START,
    IMG_START_ID,
    IMG_TOKEN_SPAN,
    QWEN_VL_IMAGE_SIZE,
    QWEN_VL_PATCH_SIZE,
)
from qwenvl_vllm.geometry import ItemTokens
from qwenvl_vllm.tokenizers.constants import DEFAULT_SYSTEM, load_chat_template

from .list_format import list_item_text, tag_runs
from .media import load_image

# content-part types that carry an image (vLLM hands the template {"type": "image"} for all of them)
IMAGE_PART_TYPES = ("image", "image_url", "input_image", "image_pil", "image_embeds")


# ---- prompts ---------------------------------------------------------------------------------------------


def _empty_image_tags(text: str, sources: list[Any]) -> str:
    """Move each `<img>SRC</img>` source into `sources` and leave `<img></img>` in the text. Only image tags
    count here, as in the released tokenize(), which rewrites image spans and nothing else."""
    out = ""
    for tag, value in tag_runs(text, {IMG_START: IMG_END}):
        if tag is None:
            out += value
            continue
        if not value:
            raise ValueError("an empty <img></img> in text has no image source; pass the image as a part")
        sources.append(value)
        out += IMG_START + IMG_END
    return out


def _part_image_source(part: Mapping[str, Any]) -> Any:
    source = part.get("image", part.get("image_url", part.get("image_pil")))
    if isinstance(source, Mapping):  # OpenAI: {"type": "image_url", "image_url": {"url": ...}}
        source = source.get("url")
    if source is None:
        raise ValueError(f"image part without a source: {dict(part)!r}")
    return source


def _normalize_part(part: Any, sources: list[Any]) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": _empty_image_tags(part, sources)}
    if not isinstance(part, Mapping):
        raise ValueError(f"content parts are dicts or strings, got {type(part).__name__}")
    kind = part.get("type")
    if kind in IMAGE_PART_TYPES or (kind is None and ("image" in part or "image_url" in part)):
        sources.append(_part_image_source(part))
        return {"type": "image"}
    if kind == "text" or (kind is None and ("text" in part or "box" in part)):
        return {"type": "text", "text": _empty_image_tags(list_item_text(part), sources)}
    raise ValueError(f"Qwen-VL takes text and image content only, got part {dict(part)!r}")


def _normalize_message(message: Mapping[str, Any], sources: list[Any]) -> dict[str, Any]:
    if not isinstance(message, Mapping) or "role" not in message:
        raise ValueError(f"chat messages are dicts with a 'role', got {message!r}")
    content = message.get("content")
    if content is None or isinstance(content, str):
        content = _empty_image_tags(content or "", sources)
    elif isinstance(content, Sequence):
        content = [_normalize_part(part, sources) for part in content]
    else:
        raise ValueError(f"message content must be a string or a list of parts, got {type(content).__name__}")
    return {"role": str(message["role"]), "content": content}


def _is_list_format(messages: Sequence[Any]) -> bool:
    return all(isinstance(m, Mapping) and "role" not in m for m in messages)


def _as_chat_messages(
    messages: str | Sequence[Any], history: Sequence[tuple[Any, Any]] | None
) -> list[Mapping[str, Any]]:
    """Chat messages from: a query string, a v1 list-format query, or chat messages; v1 `history` is a list
    of (query, response) pairs (query as a string or in list format), as model.chat() keeps it."""
    if isinstance(messages, str) or (len(messages) > 0 and _is_list_format(messages)):
        messages = [{"role": "user", "content": messages}]
    chat: list[Mapping[str, Any]] = []
    for turn in history or []:
        if not isinstance(turn, Sequence) or len(turn) != 2:
            raise ValueError(f"history entries are (query, response) pairs, got {turn!r}")
        query, response = turn
        chat.append({"role": "user", "content": query})
        if response is not None:
            chat.append({"role": "assistant", "content": response})
    return chat + list(messages)


def render_qwen_vl_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    """Render the shipped chat template the way transformers' apply_chat_template does (sandboxed Jinja,
    trim_blocks, lstrip_blocks), without needing a tokenizer."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(load_chat_template())
    return template.render(messages=list(messages), add_generation_prompt=add_generation_prompt)


def build_qwen_vl_prompt(
    messages: str | Sequence[Any],
    system: str | None = DEFAULT_SYSTEM,
    history: Sequence[tuple[Any, Any]] | None = None,
    load_images: bool = True,
) -> tuple[str, list[Any]]:
    """(ChatML prompt, images in prompt order) for `LLM.generate({"prompt": ..., "multi_modal_data":
    {"image": images}})`.

    `messages`: chat messages ([{"role": "user", "content": [{"type": "image", "image": SRC},
    {"type": "text", "text": ...}]}], OpenAI image_url parts too), a v1 list-format query
    ([{'image': SRC}, {'text': ...}, {'box': [...], 'ref': ...}]) or a query string (which may hold
    `<img>SRC</img>`). `system` is used when the messages have no system message. Images are loaded with
    qwenvl_vllm.processors.media.load_image (timeouts, size limits) unless load_images=False, which returns
    the sources as given.
    """
    if not isinstance(messages, (str, Sequence)):
        raise ValueError(f"messages must be a string or a list, got {type(messages).__name__}")
    sources: list[Any] = []
    chat = [_normalize_message(m, sources) for m in _as_chat_messages(messages, history)]
    if not chat:
        raise ValueError("no messages to build a prompt from")
    if system is not None and chat[0]["role"] != "system":
        chat.insert(0, {"role": "system", "content": system})
    prompt = render_qwen_vl_chat(chat, add_generation_prompt=chat[-1]["role"] != "assistant")
    if not load_images:
        return prompt, sources
    return prompt, [load_image(source) for source in sources]


def expand_image_placeholders(token_ids: Sequence[int], span: int = IMG_TOKEN_SPAN) -> list[int]:
    """Each `<img> ... </img>` (empty, or holding a path or padding) -> <img> + `span` <imgpad> + </img>,
    what the multimodal processor feeds the model."""
    out: list[int] = []
    for tag, ids in tag_runs(list(token_ids), {IMG_START_ID: IMG_END_ID}):
        out += ids if tag is None else [IMG_START_ID, *([IMG_PAD_ID] * span), IMG_END_ID]
    return out


def qwen_vl_inputs(messages: Sequence[Any], model: Any = None) -> tuple[dict[str, Any], list[Any]]:
    """`to_vllm_inputs` for Qwen-VL v1 checkpoints: (prompt dict, ItemTokens per image)."""
    prompt, images = build_qwen_vl_prompt(messages)
    inputs: dict[str, Any] = {"prompt": prompt}
    if images:
        inputs["multi_modal_data"] = {"image": [image.convert("RGB") for image in images]}
    patches = QWEN_VL_IMAGE_SIZE // QWEN_VL_PATCH_SIZE
    return inputs, [ItemTokens("image", (1, patches, patches), IMG_TOKEN_SPAN) for _ in images]

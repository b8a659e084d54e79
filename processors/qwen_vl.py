"""Qwen-VL v1 (Qwen-VL, Qwen-VL-Chat) prompts and image preprocessing, as the released remote code does them.

- `qwen_vl_pixel_values`: the released visual.py transform (448x448 bicubic, /255, CLIP mean/std).
- `from_list_format` / `to_list_format` / `draw_bbox_on_latest_picture`: the released tokenizer's helpers.
- `build_qwen_vl_prompt`: ChatML prompt + images for vLLM from chat messages (OpenAI / qwen-vl-utils style)
  or the v1 list format, rendered with the same Jinja template that `vllm serve` uses, so offline and
  served prompts agree. Images become `Picture N: <img></img>\n` with EMPTY tags; vLLM's multimodal
  processor expands each to <img> + 256 <imgpad> + </img> (`expand_image_placeholders` does the same on
  token ids, for tests).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from qwenvl_vllm.tokenizers.constants import (
    BOX_END,
    BOX_START,
    DEFAULT_SYSTEM,
    IMG_END,
    IMG_END_ID,
    IMG_PAD_ID,
    IMG_START,
    IMG_START_ID,
    IMG_TOKEN_SPAN,
    QUAD_END,
    QUAD_START,
    REF_END,
    REF_START,
    load_chat_template,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 448
# content-part types that carry an image (vLLM hands the template {"type": "image"} for all of them)
IMAGE_PART_TYPES = ("image", "image_url", "input_image", "image_pil", "image_embeds")
_TAG_PAIRS = {IMG_START: ("image", IMG_END), REF_START: ("ref", REF_END)}
_TAG_PAIRS |= {BOX_START: ("box", BOX_END), QUAD_START: ("quad", QUAD_END)}


# ---- pixels ----------------------------------------------------------------------------------------------


def qwen_vl_pixel_values(images: Sequence[Image.Image], image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """float32 [N, 3, image_size, image_size]: RGB, PIL bicubic resize, /255, CLIP normalisation.

    The same operations in the same order as torchvision's Resize + ToTensor + Normalize on a PIL image.
    """
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    out = torch.empty(len(images), 3, image_size, image_size, dtype=torch.float32)
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"Qwen-VL images must be PIL images, got {type(image).__name__}")
        rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)  # [3, S, S]
        out[i] = pixels.float().div(255).sub(mean).div(std)
    return out


# ---- the released tokenizer's list-format helpers ---------------------------------------------------------


def _box_text(box: Sequence[float]) -> str:
    if len(box) != 4:
        raise ValueError(f"a box needs 4 coordinates (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (int(v) for v in box)  # int() truncates like the release's %d
    return f"{BOX_START}({x1},{y1}),({x2},{y2}){BOX_END}"


def list_item_text(item: Mapping[str, Any]) -> str:
    """Text of one non-image list-format item: {'text': ...} or {'box': [[x1,y1,x2,y2], ...], 'ref': ...}."""
    if "text" in item:
        return str(item["text"])
    if "box" in item:
        ref = REF_START + item["ref"] + REF_END if "ref" in item else ""
        return ref + "".join(_box_text(box) for box in item["box"])
    raise ValueError(f"unsupported Qwen-VL list-format element: {item!r}")


def from_list_format(items: Sequence[Mapping[str, Any]]) -> str:
    """`tokenizer.from_list_format`: 'Picture N: <img>SRC</img>\\n' per image (N from 1), then texts and
    `<ref>..</ref><box>(x1,y1),(x2,y2)</box>` boxes (coordinates truncated to int, in [0, 1000))."""
    text, num_images = "", 0
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError(f"list-format elements are dicts, got {type(item).__name__}")
        if "image" in item:
            num_images += 1
            text += f"Picture {num_images}: {IMG_START}{item['image']}{IMG_END}\n"
        else:
            text += list_item_text(item)
    return text


def _scan_tags(text: str, pairs: Mapping[str, tuple[str, str]] = _TAG_PAIRS) -> list[tuple[str, str]]:
    """Split into (kind, value) runs: 'text' outside tags, else image / ref / box / quad. The first opening
    tag wins and runs to its first closing tag, like the released closed-tag scan."""
    runs: list[tuple[str, str]] = []
    pos = 0
    while True:
        hits = [(i, tag) for tag in pairs if (i := text.find(tag, pos)) != -1]
        if not hits:
            break
        start, tag = min(hits)
        kind, close = pairs[tag]
        end = text.find(close, start + len(tag))
        if end == -1:
            raise ValueError(f"unclosed {tag} tag in {text[start : start + 60]!r}")
        runs += [("text", text[pos:start]), (kind, text[start + len(tag) : end])]
        pos = end + len(close)
    runs.append(("text", text[pos:]))
    return [(kind, value) for kind, value in runs if kind != "text" or value]


def to_list_format(text: str) -> list[dict[str, str]]:
    """`tokenizer.to_list_format`: the inverse of from_list_format, e.g. [{'image': url}, {'text': ...},
    {'ref': ...}, {'box': '(x1,y1),(x2,y2)'}]."""
    return [{kind: value} for kind, value in _scan_tags(unicodedata.normalize("NFC", text))]


def extract_boxes(text: str) -> list[dict[str, Any]]:
    """[{'box': (x1, y1, x2, y2), 'ref': label?}, ...]: each <box> with the <ref> right before it."""
    items = to_list_format(text)
    boxes: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if "box" not in item:
            continue
        try:
            coords = tuple(int(v) for v in item["box"].replace("(", "").replace(")", "").split(","))
        except ValueError as e:
            raise ValueError(f"malformed box {item['box']!r}") from e
        if len(coords) != 4:
            raise ValueError(f"malformed box {item['box']!r}")
        boxes.append({"box": coords})
        if i > 0 and "ref" in items[i - 1]:
            boxes[-1]["ref"] = items[i - 1]["ref"].strip()
    return boxes


def latest_picture(response: str, history: Sequence[tuple[Any, Any]] | None = None) -> str | None:
    """Source of the last image mentioned in the response or, going back, in the history's queries."""
    for query in [response] + [turn[0] for turn in reversed(history or [])]:
        text = from_list_format(query) if isinstance(query, list) else str(query)
        images = [item["image"] for item in to_list_format(text) if "image" in item]
        if images:
            return images[-1]
    return None


def draw_bbox_on_latest_picture(
    response: str, history: Sequence[tuple[Any, Any]] | None = None
) -> Image.Image | None:
    """`tokenizer.draw_bbox_on_latest_picture`: the latest picture with the response's boxes drawn on it
    (coordinates are per-mille of width / height), or None when there is no picture or no box."""
    source = latest_picture(response, history)
    boxes = extract_boxes(response)
    if source is None or not boxes:
        return None
    from qwenvl_vllm.processors.media import load_image

    image = load_image(source).convert("RGB")
    w, h = image.size
    draw = ImageDraw.Draw(image)
    width = max(1, round((w * h) ** 0.5 / 120))
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
    color = palette[0]
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = box["box"]
        xy = (int(x1 / 1000 * w), int(y1 / 1000 * h), int(x2 / 1000 * w), int(y2 / 1000 * h))
        if "ref" in box:  # a new referring expression gets a new colour, as in the release
            color = palette[i % len(palette)]
        draw.rectangle(xy, outline=color, width=width)
        if "ref" in box:
            draw.text((xy[0] + width, xy[1] + width), box["ref"], fill=color)
    return image


# ---- prompts ---------------------------------------------------------------------------------------------


def _empty_image_tags(text: str, sources: list[Any]) -> str:
    """Move each `<img>SRC</img>` source into `sources` and leave `<img></img>` in the text. Only image tags
    count here, as in the released tokenize(), which rewrites image spans and nothing else."""
    out = ""
    for kind, value in _scan_tags(text, {IMG_START: _TAG_PAIRS[IMG_START]}):
        if kind == "text":
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
    from qwenvl_vllm.processors.media import load_image

    return prompt, [load_image(source) for source in sources]


def expand_image_placeholders(token_ids: Sequence[int], span: int = IMG_TOKEN_SPAN) -> list[int]:
    """Each `<img> ... </img>` (empty, or holding a path or padding) -> <img> + `span` <imgpad> + </img>,
    what the multimodal processor feeds the model."""
    token_ids = list(token_ids)
    out: list[int] = []
    i = 0
    while i < len(token_ids):
        if token_ids[i] != IMG_START_ID:
            out.append(token_ids[i])
            i += 1
            continue
        try:
            close = token_ids.index(IMG_END_ID, i + 1)
        except ValueError:
            raise ValueError(f"unclosed <img> at token {i}") from None
        out += [IMG_START_ID, *([IMG_PAD_ID] * span), IMG_END_ID]
        i = close + 1
    return out


def qwen_vl_inputs(messages: Sequence[Any], model: Any = None) -> tuple[dict[str, Any], list[Any]]:
    """`to_vllm_inputs` for Qwen-VL v1 checkpoints: (prompt dict, ItemTokens per image)."""
    from .messages import ItemTokens

    prompt, images = build_qwen_vl_prompt(messages)
    inputs: dict[str, Any] = {"prompt": prompt}
    if images:
        inputs["multi_modal_data"] = {"image": [image.convert("RGB") for image in images]}
    patches = IMAGE_SIZE // 14
    return inputs, [ItemTokens("image", (1, patches, patches), IMG_TOKEN_SPAN) for _ in images]

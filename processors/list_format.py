"""Qwen-VL v1's tagged text: the tag scanner and the released tokenizer's list-format helpers.

- `tag_runs`: the one scanner for `<img> ... </img>` (and `<ref>`, `<box>`, `<quad>`) spans, on text or on
  token ids; the prompt builder, the tokenizer and the multimodal processor all use it.
- `from_list_format` / `to_list_format` / `extract_boxes` / `draw_bbox_on_latest_picture`: the released
  tokenizer's helpers. Boxes are parsed and drawn by qwenvl_vllm.grounding (one parse rule, one style).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from PIL import Image

from qwenvl_vllm.constants import (
    BOX_END,
    BOX_START,
    IMG_END,
    IMG_START,
    QUAD_END,
    QUAD_START,
    REF_END,
    REF_START,
)
from qwenvl_vllm.grounding import draw_boxes, parse_boxes

from .media import load_image

Tag = TypeVar("Tag", str, int)
_KINDS = {IMG_START: "image", REF_START: "ref", BOX_START: "box", QUAD_START: "quad"}
_TAG_PAIRS = {IMG_START: IMG_END, REF_START: REF_END, BOX_START: BOX_END, QUAD_START: QUAD_END}


def _find(seq: str | list[int], tag: str | int, pos: int) -> int:
    if isinstance(seq, str):
        return seq.find(tag, pos)  # type: ignore[arg-type]
    try:
        return seq.index(tag, pos)  # type: ignore[arg-type]
    except ValueError:
        return -1


def _width(tag: str | int) -> int:
    return len(tag) if isinstance(tag, str) else 1


def tag_runs(seq: str | list[int], pairs: Mapping[Tag, Tag], *, strict: bool = True) -> list[tuple[Any, Any]]:
    """Split text (tags are strings) or token ids (tags are ids) into runs: (None, outside) and
    (opening tag, inside), in order; outside runs may be empty.

    The first opening tag wins and runs to its first closing tag, like the released closed-tag scan.
    An opening tag without its closing tag raises ValueError when `strict`; otherwise it and everything
    after it stay outside.
    """
    runs: list[tuple[Any, Any]] = []
    pos = 0
    while True:
        hits = [(i, tag) for tag in pairs if (i := _find(seq, tag, pos)) != -1]
        if not hits:
            break
        start, tag = min(hits)
        body = start + _width(tag)
        end = _find(seq, pairs[tag], body)
        if end == -1:
            if strict:
                raise ValueError(f"unclosed {tag!r} tag at {start}: {seq[start : start + 60]!r}")
            break
        runs += [(None, seq[pos:start]), (tag, seq[body:end])]
        pos = end + _width(pairs[tag])
    runs.append((None, seq[pos:]))
    return runs


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


def to_list_format(text: str) -> list[dict[str, str]]:
    """`tokenizer.to_list_format`: the inverse of from_list_format, e.g. [{'image': url}, {'text': ...},
    {'ref': ...}, {'box': '(x1,y1),(x2,y2)'}]. An unclosed tag raises ValueError (the release asserts)."""
    runs = tag_runs(unicodedata.normalize("NFC", text), _TAG_PAIRS)
    return [{_KINDS.get(tag, "text"): value} for tag, value in runs if tag is not None or value]


def image_sources(text: str) -> list[str]:
    """What sits between each `<img>` and `</img>` of `text` (ValueError on an unclosed `<img>`)."""
    return [value for tag, value in tag_runs(text, {IMG_START: IMG_END}) if tag is not None]


def extract_boxes(text: str) -> list[dict[str, Any]]:
    """[{'box': (x1, y1, x2, y2), 'ref': label?}, ...] in [0, 1000) coordinates, by grounding.parse_boxes:
    never raises on a string; malformed or unclosed boxes are skipped."""
    boxes = parse_boxes(text)
    return [{"box": b["box"], **({"ref": b["label"]} if b["label"] is not None else {})} for b in boxes]


def latest_picture(response: str, history: Sequence[tuple[Any, Any]] | None = None) -> str | None:
    """Source of the last image mentioned in the response or, going back, in the history's queries."""
    for query in [response] + [turn[0] for turn in reversed(history or [])]:
        text = from_list_format(query) if isinstance(query, list) else str(query)
        images = image_sources(unicodedata.normalize("NFC", text))
        if images:
            return images[-1]
    return None


def draw_bbox_on_latest_picture(
    response: str, history: Sequence[tuple[Any, Any]] | None = None
) -> Image.Image | None:
    """`tokenizer.draw_bbox_on_latest_picture`: the latest picture with the response's boxes drawn on it
    (grounding.draw_boxes), or None when there is no picture or no box. Raises ValueError only for an
    unclosed `<img>` in the texts or a picture that cannot be loaded."""
    source = latest_picture(response, history)
    if source is None or not extract_boxes(response):
        return None
    image = load_image(source)
    return draw_boxes(image, parse_boxes(response, image_size=image.size))

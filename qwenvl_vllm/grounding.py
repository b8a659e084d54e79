"""Parse and draw the grounding boxes Qwen-VL (v1) and Qwen2-VL write into their answers.

Formats (coordinates normalised to [0, 1000), (x1, y1) top-left, (x2, y2) bottom-right):
- Qwen-VL v1:  ``<ref>text</ref><box>(x1,y1),(x2,y2)</box>``
- Qwen2-VL:    ``<|object_ref_start|>text<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``
Both tag families are recognised in the same text.

Behaviour of the released Qwen-VL tokenizer (``_fetch_all_box_with_ref`` / ``draw_bbox_on_latest_picture``)
and where this module differs on purpose:
- Pixel conversion is ``int(x / 1000 * w)`` as in the release (truncation, same float expression).
- The release attaches a ref only to the box directly after it; the following boxes of the same ref are
  drawn in the same colour without text. Here every box of the run carries the label (a run is boxes
  separated only by whitespace or commas; any other text, or a new ref, ends it).
- The release raises on anything but four integers (``map(int, ...)``, ``assert len == 4``); here a
  malformed box is skipped instead: parsing never raises on any string. Parentheses are optional,
  decimals are accepted, values are clamped to [0, 1000], and swapped corners are reordered so that
  x1 <= x2 and y1 <= y2 (Pillow refuses inverted rectangles).
- A box without its closing tag (answer cut off by max_tokens) is dropped: its last number may be cut.
- Colours cycle through the Tableau palette (the release picks them at random) and the text is drawn with
  Pillow's default font (the release downloads SimSun.ttf and renders with matplotlib).
"""

from __future__ import annotations

import math
import re

from PIL import Image, ImageDraw, ImageFont

from qwenvl_vllm.constants import (
    BOX_END,
    BOX_START,
    OBJECT_REF_END,
    OBJECT_REF_START,
    QWEN2_BOX_END,
    QWEN2_BOX_START,
    REF_END,
    REF_START,
)

_REF_OPEN, _REF_CLOSE, _BOX_OPEN, _BOX_CLOSE, _TEXT = "ref_open", "ref_close", "box_open", "box_close", "text"

_TAGS = {
    REF_START: _REF_OPEN,
    REF_END: _REF_CLOSE,
    BOX_START: _BOX_OPEN,
    BOX_END: _BOX_CLOSE,
    OBJECT_REF_START: _REF_OPEN,
    OBJECT_REF_END: _REF_CLOSE,
    QWEN2_BOX_START: _BOX_OPEN,
    QWEN2_BOX_END: _BOX_CLOSE,
}
_TAG_RE = re.compile("|".join(re.escape(tag) for tag in _TAGS))
# Boxes of one ref may be separated by these characters without ending the ref's run.
_RUN_SEPARATOR_RE = re.compile(r"[\s,，、]*")
_COORD_SPLIT_RE = re.compile(r"[\s,，()（）]+")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")

# matplotlib's TABLEAU_COLORS, the palette the release draws from.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

Box = tuple[float, float, float, float]


def _tokens(text: str) -> list[tuple[str, str]]:
    """Split text into (kind, raw) tokens: tags and the text between them."""
    out: list[tuple[str, str]] = []
    pos = 0
    for match in _TAG_RE.finditer(text):
        if match.start() > pos:
            out.append((_TEXT, text[pos : match.start()]))
        out.append((_TAGS[match.group()], match.group()))
        pos = match.end()
    if pos < len(text):
        out.append((_TEXT, text[pos:]))
    return out


def _enclosed(tokens: list[tuple[str, str]], i: int, close: str) -> tuple[str, int] | None:
    """Content of the tag opened at tokens[i] and the index after its close tag, or None if unclosed."""
    if i + 1 < len(tokens) and tokens[i + 1][0] == close:
        return "", i + 2
    if i + 2 < len(tokens) and tokens[i + 1][0] == _TEXT and tokens[i + 2][0] == close:
        return tokens[i + 1][1], i + 3
    return None


def _number(raw: str) -> float | None:
    if not _NUMBER_RE.fullmatch(raw):
        return None
    value = min(max(float(raw), 0.0), 1000.0)
    return int(value) if value.is_integer() else value


def _parse_coords(content: str) -> Box | None:
    """'(x1,y1),(x2,y2)' (parentheses optional) -> ordered normalised box, or None if malformed."""
    parts = [p for p in _COORD_SPLIT_RE.split(content) if p]
    if len(parts) != 4:
        return None
    values = [_number(p) for p in parts]
    if any(v is None for v in values):
        return None
    x1, y1, x2, y2 = values
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def _to_pixels(box: Box, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = image_size
    x1, y1, x2, y2 = box
    # Same expression as the release's draw_bbox_on_latest_picture, so the pixels agree exactly.
    return (int(x1 / 1000 * w), int(y1 / 1000 * h), int(x2 / 1000 * w), int(y2 / 1000 * h))


def _check_image_size(image_size: object) -> tuple[int, int]:
    ok = (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    )
    if not ok:
        raise ValueError(f"image_size must be (width, height) with positive ints, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def parse_boxes(text: str, image_size: tuple[int, int] | None = None) -> list[dict]:
    """Every well-formed box in `text`, in order, as {"label": str | None, "box": (x1, y1, x2, y2)}.

    Without image_size the box is in the model's [0, 1000] space (ints unless the text had decimals);
    with image_size=(width, height) it is in pixels of that image (ints, ``int(x / 1000 * w)``).
    Never raises on a string; a non-string text or a bad image_size raises ValueError.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    size = None if image_size is None else _check_image_size(image_size)
    tokens = _tokens(text)
    results: list[dict] = []
    label: str | None = None
    i = 0
    while i < len(tokens):
        kind, raw = tokens[i]
        if kind == _REF_OPEN:
            found = _enclosed(tokens, i, _REF_CLOSE)
            label = (found[0].strip() or None) if found else None
            i = found[1] if found else i + 1
        elif kind == _BOX_OPEN:
            found = _enclosed(tokens, i, _BOX_CLOSE)
            box = _parse_coords(found[0]) if found else None
            if box is not None:
                results.append({"label": label, "box": _to_pixels(box, size) if size else box})
            i = found[1] if found else i + 1
        else:
            if kind == _TEXT and not _RUN_SEPARATOR_RE.fullmatch(raw):
                label = None
            i += 1
    return results


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        # Pillow without FreeType: the fixed-size bitmap font.
        return ImageFont.load_default()


def _pixel_box(box: dict) -> tuple[int, int, int, int]:
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box["box"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"each box needs 'box': (x1, y1, x2, y2) numbers, got {box!r}") from exc
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _draw_label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], label: str, font, color: str) -> None:
    try:
        left, top, right, bottom = draw.textbbox(xy, label, font=font)
    except UnicodeError:
        # The bitmap fallback font only knows Latin-1.
        label = label.encode("ascii", "backslashreplace").decode("ascii")
        left, top, right, bottom = draw.textbbox(xy, label, font=font)
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill="black")
    draw.text(xy, label, font=font, fill=color)


def draw_boxes(image: Image.Image, boxes: list[dict]) -> Image.Image:
    """A new RGB copy of `image` with each box (pixels, as parse_boxes(..., image_size)) outlined.

    A box with a label gets the label in its colour on a black patch at its top-left corner; a new
    label starts the next palette colour, unlabelled boxes keep the current one (as the release does).
    The input image is not modified.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    out = image.convert("RGB")  # always a new image, even when already RGB
    draw = ImageDraw.Draw(out)
    # Sizes follow the release's Visualizer: font ~ sqrt(area)/30 (at least 15), line a quarter of it.
    font_size = max(int(math.sqrt(out.width * out.height)) // 30, 15)
    line_width = max(font_size // 4, 1)
    font = _font(font_size)
    color_index, previous_label = 0, None
    for box in boxes:
        x1, y1, x2, y2 = _pixel_box(box)
        label = box.get("label")
        if label is not None and label != previous_label:
            color_index += 1
        previous_label = label if label is not None else previous_label
        color = _PALETTE[color_index % len(_PALETTE)]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=line_width)
        if label:
            _draw_label(draw, (x1, y1), str(label), font, color)
    return out

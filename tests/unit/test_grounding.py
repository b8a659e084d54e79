"""Grounding box parsing and drawing (CPU, no model).

Expected values come from the released Qwen-VL model cards (seeds) and from the release tokenizer's rule
``int(x / 1000 * w)``, re-derived here by hand.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from qwenvl_vllm.grounding import draw_boxes, parse_boxes

V2_REF = ("<|object_ref_start|>", "<|object_ref_end|>")
V2_BOX = ("<|box_start|>", "<|box_end|>")


def test_v1_model_card_answer():
    # Qwen-VL-Chat model card, 2nd dialogue turn.
    assert parse_boxes("<ref>击掌</ref><box>(536,509),(588,602)</box>") == [
        {"label": "击掌", "box": (536, 509, 588, 602)}
    ]


def test_v1_caption_with_two_refs_strips_labels():
    # Qwen-VL (base) model card: grounded caption; the release strips the ref text.
    text = (
        "Generate the caption in English with grounding:<ref> Woman</ref><box>(451,379),(731,806)</box> and"
        "<ref> her dog</ref><box>(219,424),(576,896)</box> playing on the beach<|endoftext|>"
    )
    assert parse_boxes(text) == [
        {"label": "Woman", "box": (451, 379, 731, 806)},
        {"label": "her dog", "box": (219, 424, 576, 896)},
    ]


def test_v2_format():
    text = f"The cat {V2_REF[0]}a cat{V2_REF[1]}{V2_BOX[0]}(10,20),(300,400){V2_BOX[1]} sits."
    assert parse_boxes(text) == [{"label": "a cat", "box": (10, 20, 300, 400)}]


def test_mixed_formats_in_one_text():
    text = f"<ref>a</ref><box>(1,2),(3,4)</box> then {V2_REF[0]}b{V2_REF[1]}{V2_BOX[0]}(5,6),(7,8){V2_BOX[1]}"
    assert [b["label"] for b in parse_boxes(text)] == ["a", "b"]


def test_ref_with_several_boxes_labels_each():
    text = "<ref>dogs</ref><box>(1,2),(3,4)</box><box>(5,6),(7,8)</box>, <box>(9,10),(11,12)</box>"
    boxes = parse_boxes(text)
    assert [b["label"] for b in boxes] == ["dogs", "dogs", "dogs"]
    assert [b["box"] for b in boxes] == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)]


def test_text_or_new_ref_ends_the_run():
    text = (
        "<ref>a</ref><box>(1,2),(3,4)</box> and here <box>(5,6),(7,8)</box><ref>b</ref><box>(0,0),(1,1)</box>"
    )
    assert [b["label"] for b in parse_boxes(text)] == ["a", None, "b"]


def test_box_without_ref_has_no_label():
    assert parse_boxes(f"{V2_BOX[0]}(0,0),(999,999){V2_BOX[1]}") == [{"label": None, "box": (0, 0, 999, 999)}]


def test_pixel_conversion_matches_release_rule():
    w, h = 1024, 768
    (box,) = parse_boxes("<ref>x</ref><box>(517,508),(589,611)</box>", image_size=(w, h))
    # int(x / 1000 * w) by hand: 517/1000*1024 = 529.408, 508/1000*768 = 390.144, ...
    assert box["box"] == (529, 390, 603, 469)
    assert all(isinstance(v, int) for v in box["box"])


def test_pixel_conversion_random_against_formula():
    rng = random.Random(0)
    for _ in range(200):
        w, h = rng.randint(1, 5000), rng.randint(1, 5000)
        x1, y1 = rng.randint(0, 999), rng.randint(0, 999)
        x2, y2 = rng.randint(x1, 999), rng.randint(y1, 999)
        (box,) = parse_boxes(f"<box>({x1},{y1}),({x2},{y2})</box>", image_size=(w, h))
        assert box["box"] == (int(x1 / 1000 * w), int(y1 / 1000 * h), int(x2 / 1000 * w), int(y2 / 1000 * h))


@pytest.mark.parametrize(
    "content, expected",
    [
        ("( 10 , 20 ) , ( 30 , 40 )", (10, 20, 30, 40)),  # whitespace inside
        ("10,20,30,40", (10, 20, 30, 40)),  # no parentheses
        ("(10,20)(30,40)", (10, 20, 30, 40)),  # no comma between corners
        ("(30,40),(10,20)", (10, 20, 30, 40)),  # swapped corners
        ("(30,20),(10,40)", (10, 20, 30, 40)),  # swapped x only
        ("(10.5,20),(30,40)", (10.5, 20, 30, 40)),  # decimals kept
        ("(-5,20),(1200,40)", (0, 20, 1000, 40)),  # clamped to [0, 1000]
    ],
)
def test_tolerated_box_contents(content, expected):
    assert parse_boxes(f"<box>{content}</box>") == [{"label": None, "box": expected}]


@pytest.mark.parametrize(
    "text",
    [
        "<box>(a,b),(c,d)</box>",  # non-numeric
        "<box>(1,2),(3,x)</box>",
        "<box>(1,2),(3)</box>",  # three numbers
        "<box>(1,2),(3,4),(5,6)</box>",  # six numbers
        "<box></box>",
        "<box>(1,2),(3,4)",  # truncated: no closing tag
        "<box>(1,2),(3,4",
        f"{V2_BOX[0]}(1,2),(3,4)",
        "<ref>dog</ref><box>(1,2),(3,4)<box>",
        "no tags at all (1,2),(3,4)",
        "",
    ],
)
def test_malformed_boxes_are_skipped(text):
    assert parse_boxes(text) == []


def test_truncated_box_does_not_hide_later_boxes():
    text = "<box>(1,2),(3<box>(5,6),(7,8)</box>"
    assert parse_boxes(text) == [{"label": None, "box": (5, 6, 7, 8)}]


def test_unclosed_ref_gives_no_label():
    assert parse_boxes("<ref>dog<box>(1,2),(3,4)</box>") == [{"label": None, "box": (1, 2, 3, 4)}]


def test_empty_ref_gives_no_label():
    assert parse_boxes("<ref>  </ref><box>(1,2),(3,4)</box>")[0]["label"] is None


def test_fuzz_never_raises():
    rng = random.Random(1234)
    pieces = [
        "<ref>",
        "</ref>",
        "<box>",
        "</box>",
        *V2_REF,
        *V2_BOX,
        "<|box",
        "_end|>",
        "<re",
        "(",
        ")",
        ",",
        " ",
        "-",
        ".",
        "1",
        "23",
        "999",
        "1e5",
        "abc",
        "击掌",
        "\n",
        "\x00",
        "９",
    ]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        if rng.random() < 0.2:
            text += "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(0, 10)))
        for size in (None, (640, 480)):
            for box in parse_boxes(text, image_size=size):
                x1, y1, x2, y2 = box["box"]
                assert x1 <= x2 and y1 <= y2
                assert box["label"] is None or isinstance(box["label"], str)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError):
        parse_boxes(None)  # type: ignore[arg-type]
    for size in [(0, 10), (10,), (1.5, 2), "640x480", (True, 2)]:
        with pytest.raises(ValueError):
            parse_boxes("<box>(1,2),(3,4)</box>", image_size=size)  # type: ignore[arg-type]


def _gray(w: int = 200, h: int = 100) -> Image.Image:
    return Image.new("RGB", (w, h), (128, 128, 128))


def test_draw_boxes_draws_on_edges_and_leaves_input():
    image = _gray()
    before = np.asarray(image).copy()
    boxes = parse_boxes(
        "<ref>cat</ref><box>(100,200),(600,900)</box><box>(700,100),(950,500)</box>", (200, 100)
    )
    out = draw_boxes(image, boxes)
    assert out is not image and out.size == image.size and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), before)  # input untouched
    pixels = np.asarray(out).astype(int)
    x1, y1, x2, y2 = boxes[1]["box"]  # the unlabelled second box: only its outline is drawn
    gray = np.array([128, 128, 128])
    for x, y in [(x1, (y1 + y2) // 2), (x2, (y1 + y2) // 2), ((x1 + x2) // 2, y1), ((x1 + x2) // 2, y2)]:
        assert not np.array_equal(pixels[y, x], gray), (x, y)
    # Centre of the box and far from any box: unchanged.
    assert np.array_equal(pixels[(y1 + y2) // 2, (x1 + x2) // 2], gray)
    assert np.array_equal(pixels[99, 199], gray)


def test_draw_boxes_label_is_drawn():
    image = _gray(400, 300)
    unlabeled = np.asarray(draw_boxes(image, [{"label": None, "box": (50, 50, 350, 250)}]))
    labeled = np.asarray(draw_boxes(image, [{"label": "dog", "box": (50, 50, 350, 250)}]))
    # The label patch sits inside the box near its top-left corner.
    assert (labeled[55:80, 55:120] != unlabeled[55:80, 55:120]).any()


def test_draw_boxes_accepts_any_mode_and_odd_boxes():
    image = Image.new("L", (64, 48), 10)
    out = draw_boxes(
        image, [{"label": "击掌", "box": (40, 30, 5, 2)}, {"label": None, "box": (-10, -10, 500, 500)}]
    )
    assert out.mode == "RGB" and image.mode == "L"
    assert draw_boxes(image, []).size == (64, 48)


def test_draw_boxes_bad_input():
    with pytest.raises(ValueError):
        draw_boxes(_gray(), [{"label": "x"}])
    with pytest.raises(ValueError):
        draw_boxes(_gray(), [{"box": ("a", 1, 2, 3)}])
    with pytest.raises(ValueError):
        draw_boxes(np.zeros((4, 4, 3)), [])  # type: ignore[arg-type]

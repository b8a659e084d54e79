"""Qwen-VL v1 prompts, chat template and pixel values against the released recipe.

References: torchvision's Resize + ToTensor + Normalize (the released visual.py transform), the released
from_list_format output format, and make_context() token ids rebuilt with tiktoken the way the released
tokenizer encodes them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from reference.qwen_vl_tokenize import released_encode

from qwenvl_vllm.constants import (
    CHAT_SPECIALS,
    CLIP_MEAN,
    CLIP_STD,
    IM_END_ID,
    IM_START_ID,
    IMG_END_ID,
    IMG_PAD_ID,
    IMG_START_ID,
    VL_TAGS,
)
from qwenvl_vllm.processors.list_format import (
    draw_bbox_on_latest_picture,
    extract_boxes,
    from_list_format,
    to_list_format,
)
from qwenvl_vllm.processors.qwen_vl import (
    build_qwen_vl_prompt,
    expand_image_placeholders,
    render_qwen_vl_chat,
)
from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values
from qwenvl_vllm.tokenizers.bpe import SPLIT_REGEX

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


# ---- pixels ----------------------------------------------------------------------------------------------


def test_pixel_values_match_torchvision():
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    reference = transforms.Compose(
        [
            transforms.Resize((448, 448), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ]
    )
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)),  # upscale, non-square
        Image.fromarray(rng.integers(0, 256, (900, 700, 4), dtype=np.uint8), "RGBA"),  # downscale
        Image.fromarray(rng.integers(0, 256, (64, 33), dtype=np.uint8), "L"),
        Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8)).convert("P"),
    ]
    ours = qwen_vl_pixel_values(images)
    want = torch.stack([reference(im.convert("RGB")) for im in images])
    assert ours.shape == (4, 3, 448, 448) and ours.dtype == torch.float32
    # Tolerance 0: same PIL resize call and the same float32 ops in the same order, so bit-identical.
    assert torch.equal(ours, want)
    assert qwen_vl_pixel_values([]).shape == (0, 3, 448, 448)
    with pytest.raises(ValueError):
        qwen_vl_pixel_values([np.zeros((4, 4, 3), np.uint8)])


# ---- list format -----------------------------------------------------------------------------------------


def test_from_list_format_matches_release():
    items = [
        {"image": "https://x/a.jpg"},
        {"image": "b.png"},
        {"text": "Compare them."},
        {"box": [[1, 2, 3.9, 4]], "ref": "dog"},
        {"box": [[5, 6, 7, 8], [9, 10, 11, 12]]},
    ]
    assert from_list_format(items) == (
        "Picture 1: <img>https://x/a.jpg</img>\nPicture 2: <img>b.png</img>\nCompare them."
        "<ref>dog</ref><box>(1,2),(3,4)</box><box>(5,6),(7,8)</box><box>(9,10),(11,12)</box>"
    )
    with pytest.raises(ValueError):
        from_list_format([{"video": "v.mp4"}])


def test_to_list_format_and_boxes():
    text = (
        "Picture 1: <img>a.jpg</img>\n<ref> 击掌</ref><box>(536,509),(588,602)</box>"
        " and <box>(1,2),(3,4)</box>"
    )
    assert to_list_format(text) == [
        {"text": "Picture 1: "},
        {"image": "a.jpg"},
        {"text": "\n"},
        {"ref": " 击掌"},
        {"box": "(536,509),(588,602)"},
        {"text": " and "},
        {"box": "(1,2),(3,4)"},
    ]
    assert extract_boxes(text) == [{"box": (536, 509, 588, 602), "ref": "击掌"}, {"box": (1, 2, 3, 4)}]
    with pytest.raises(ValueError):
        to_list_format("<ref>no close")


# ---- prompts ---------------------------------------------------------------------------------------------


def test_list_format_and_chat_format_give_the_same_prompt():
    want = SYSTEM + (
        "<|im_start|>user\nPicture 1: <img></img>\nPicture 2: <img></img>\nWhat differs?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    list_format = [{"image": "a.jpg"}, {"image": "b.jpg"}, {"text": "What differs?"}]
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": "a.jpg"},
                {"type": "image_url", "image_url": {"url": "b.jpg"}},
                {"type": "text", "text": "What differs?"},
            ],
        }
    ]
    raw = "Picture 1: <img>a.jpg</img>\nPicture 2: <img>b.jpg</img>\nWhat differs?"
    for messages in (list_format, chat, raw, [{"role": "user", "content": raw}]):
        prompt, images = build_qwen_vl_prompt(messages, load_images=False)
        assert prompt == want
        assert images == ["a.jpg", "b.jpg"]


def _make_context_text(query: str, history: list[tuple[str, str]], system: str) -> str:
    """raw_text of the released make_context (chatml), image paths emptied for vLLM."""
    text = f"<|im_start|>system\n{system}<|im_end|>"
    for q, r in history:
        text += f"\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{r}<|im_end|>"
    text += f"\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"
    return text.replace("<img>a.jpg</img>", "<img></img>")


def test_history_matches_make_context_text():
    first = from_list_format([{"image": "a.jpg"}, {"text": "这是什么?"}])
    history = [(first, "一只狗"), ("它在干什么", "击掌")]
    prompt, images = build_qwen_vl_prompt('输出"击掌"的检测框', history=history, load_images=False)
    assert prompt == _make_context_text('输出"击掌"的检测框', history, "You are a helpful assistant.")
    assert images == ["a.jpg"]
    prompt, _ = build_qwen_vl_prompt("hi", system="Be brief.", load_images=False)
    assert prompt == _make_context_text("hi", [], "Be brief.")


def test_images_numbered_across_the_conversation():
    prompt, images = build_qwen_vl_prompt(
        [{"image": "c.jpg"}, {"text": "and this?"}],
        history=[([{"image": "a.jpg"}, {"image": "b.jpg"}, {"text": "two"}], "ok")],
        load_images=False,
    )
    assert "Picture 1: <img></img>\nPicture 2: <img></img>\ntwo" in prompt
    assert "Picture 3: <img></img>\nand this?" in prompt
    assert images == ["a.jpg", "b.jpg", "c.jpg"]


def test_template_renders_multi_image_multi_turn():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A1"}]},
        {"role": "user", "content": [{"type": "text", "text": "Q2 "}, {"type": "image"}]},
    ]
    want = (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nPicture 1: <img></img>\nPicture 2: <img></img>\nQ1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2 Picture 3: <img></img>\n<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_qwen_vl_chat(messages) == want
    assert render_qwen_vl_chat(messages, add_generation_prompt=False) == want.removesuffix(
        "<|im_start|>assistant\n"
    )
    assert render_qwen_vl_chat([{"role": "user", "content": "hi"}]) == (
        SYSTEM + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError):
        render_qwen_vl_chat([{"role": "user", "content": [{"type": "video"}]}])


def test_tokenizer_chat_template_renders_the_same():
    from qwenvl_vllm.tokenizers.qwen_vl import QWenTokenizer

    tok = QWenTokenizer.from_tiktoken()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q2"}]},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == render_qwen_vl_chat(messages)


def _make_context_tokens(enc, query: str, history: list[tuple[str, str]], system: str) -> list[int]:
    """context_tokens of the released make_context (chatml): role and content encoded separately, only the
    VL tags allowed as specials in them."""
    tags = set(VL_TAGS)
    nl = released_encode(enc, "\n", tags)

    def turn(role: str, content: str) -> list[int]:
        return [IM_START_ID, *released_encode(enc, role, tags), *nl, *released_encode(enc, content, tags)]

    tokens = turn("system", system) + [IM_END_ID]
    for q, r in history:
        tokens += nl + turn("user", q) + [IM_END_ID] + nl + turn("assistant", r) + [IM_END_ID]
    tokens += nl + turn("user", query) + [IM_END_ID] + nl
    return tokens + [IM_START_ID, *released_encode(enc, "assistant", tags), *nl]


def test_prompt_tokens_match_make_context_tokens():
    """What vLLM feeds the model (our prompt, tokenized, images expanded) == the released chat() input,
    up to the ids inside the image span, which the model overwrites with image features."""
    import tiktoken

    from qwenvl_vllm.tokenizers.bpe import load_tiktoken_ranks
    from qwenvl_vllm.tokenizers.qwen_vl import QWenTokenizer

    tok = QWenTokenizer.from_tiktoken()
    ranks = load_tiktoken_ranks(tok.vocab_file)
    specials = {t: len(ranks) + i for i, t in enumerate(CHAT_SPECIALS + VL_TAGS)}
    enc = tiktoken.Encoding("Qwen", pat_str=SPLIT_REGEX, mergeable_ranks=ranks, special_tokens=specials)

    first = [
        {"image": "https://example.com/demo.jpeg"},
        {"image": "/data/图 2.png"},
        {"text": "这是什么? 2 dogs"},
    ]
    history = [(from_list_format(first), "图中是一名女子和她的狗。"), ("Where?\n", " On a beach (100m).")]
    query = '输出"击掌"的检测框'
    want = _make_context_tokens(enc, query, history, "You are a helpful assistant.")

    prompt, images = build_qwen_vl_prompt(query, history=history, load_images=False)
    ours = tok.encode(prompt)
    assert ours.count(IMG_START_ID) == len(images) == 2
    assert expand_image_placeholders(ours) == expand_image_placeholders(want)


def test_expand_image_placeholders():
    ids = [1, IMG_START_ID, IMG_END_ID, 2, IMG_START_ID, 5, 6, IMG_END_ID]
    out = expand_image_placeholders(ids, span=3)
    assert out == [
        1,
        IMG_START_ID,
        *[IMG_PAD_ID] * 3,
        IMG_END_ID,
        2,
        IMG_START_ID,
        *[IMG_PAD_ID] * 3,
        IMG_END_ID,
    ]
    assert len(expand_image_placeholders([IMG_START_ID, IMG_END_ID])) == 258
    with pytest.raises(ValueError):
        expand_image_placeholders([IMG_START_ID, 3])


def test_bad_messages():
    with pytest.raises(ValueError):
        build_qwen_vl_prompt([], load_images=False)
    with pytest.raises(ValueError):
        build_qwen_vl_prompt([{"role": "user", "content": [{"type": "video", "video": "v.mp4"}]}])
    with pytest.raises(ValueError):
        build_qwen_vl_prompt([{"role": "user", "content": [{"type": "image"}]}], load_images=False)
    with pytest.raises(ValueError):
        build_qwen_vl_prompt("Picture 1: <img></img>\nno source", load_images=False)
    with pytest.raises(ValueError):
        build_qwen_vl_prompt(42)  # type: ignore[arg-type]


def test_images_are_loaded(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    pil = Image.new("L", (8, 8))
    prompt, images = build_qwen_vl_prompt([{"image": str(path)}, {"image": pil}, {"text": "?"}])
    assert prompt.count("<img></img>") == 2
    assert images[0].size == (40, 30) and images[1] is pil
    with pytest.raises(ValueError):
        build_qwen_vl_prompt([{"image": str(tmp_path / "missing.png")}, {"text": "?"}])


def test_draw_bbox_on_latest_picture(tmp_path):
    path = tmp_path / "white.png"
    Image.new("RGB", (200, 100), (255, 255, 255)).save(path)
    history = [(from_list_format([{"image": str(path)}, {"text": "what?"}]), "a dog")]
    response = "<ref>dog</ref><box>(100,200),(500,800)</box>"
    drawn = draw_bbox_on_latest_picture(response, history)
    assert drawn is not None and drawn.size == (200, 100)
    assert drawn.getpixel((20, 50)) != (255, 255, 255)  # left edge of the box: x = 100/1000 * 200
    assert drawn.getpixel((190, 5)) == (255, 255, 255)
    assert draw_bbox_on_latest_picture("no boxes here", history) is None
    assert draw_bbox_on_latest_picture(response, None) is None


def test_vllm_chat_path_renders_the_same_prompt(tmp_path):
    """vLLM's own chat parsing + template application (what `vllm serve` does for /v1/chat/completions)
    gives the prompt build_qwen_vl_prompt gives, on a released-layout checkpoint directory."""
    import base64
    import io
    import json

    from helpers import RELEASED_CONFIG, RELEASED_TOKENIZER_CONFIG

    from qwenvl_vllm.model_registry import register
    from qwenvl_vllm.tokenizers import register_qwen_vl
    from qwenvl_vllm.tokenizers.qwen_vl import find_qwen_tiktoken

    (tmp_path / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(RELEASED_TOKENIZER_CONFIG))
    (tmp_path / "qwen.tiktoken").symlink_to(find_qwen_tiktoken())
    register()
    register_qwen_vl()
    from vllm.config import ModelConfig
    from vllm.entrypoints.chat_utils import parse_chat_messages
    from vllm.renderers.hf import resolve_chat_template_content_format, safe_apply_chat_template
    from vllm.tokenizers import cached_tokenizer_from_config

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Q1"}],
        },
        {"role": "assistant", "content": "A1"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "Q2"},
            ],
        },
    ]
    model_config = ModelConfig(model=str(tmp_path), trust_remote_code=False, limit_mm_per_prompt={"image": 3})
    tokenizer = cached_tokenizer_from_config(model_config)
    fmt = resolve_chat_template_content_format(None, None, "auto", tokenizer, model_config=model_config)
    assert fmt == "openai"
    conversation, mm_data, _ = parse_chat_messages(messages, model_config, fmt)
    served = safe_apply_chat_template(
        model_config, tokenizer, conversation, tokenize=False, add_generation_prompt=True
    )
    prompt, images = build_qwen_vl_prompt(messages, load_images=False)
    assert served == prompt
    assert len(mm_data["image"]) == len(images) == 3

"""Messages -> vLLM prompt dicts: prompts from the checkpoint's chat template, resized media, token counts.

Token counts are checked against transformers' Qwen2-VL processor run on the same resized media: it
expands each <|image_pad|> / <|video_pad|> to the item's LLM token count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import qwen_vl_utils
import torch
from transformers import AutoProcessor

from qwenvl_vllm.checkpoint import write_checkpoint
from qwenvl_vllm.processors import to_vllm_inputs
from qwenvl_vllm.synthetic import make_image, write_video

IMAGE_PAD, VIDEO_PAD = 151655, 151656


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return str(write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path_factory.mktemp("ckpt") / "tiny"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return str(write_video(tmp_path_factory.mktemp("v") / "clip.mp4", 30, 10.0, 160, 120))


def _conversation(clip: str, tmp_path: Path) -> list[dict]:
    path = tmp_path / "a.png"
    make_image(500, 300, seed=1).save(path)
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(path)},
                {"type": "image", "image": make_image(90, 700, seed=2), "max_pixels": 40_000},
                {"type": "text", "text": "Compare the pictures."},
            ],
        },
        {"role": "assistant", "content": "They differ."},
        {
            "role": "user",
            "content": [{"type": "video", "video": clip, "nframes": 6}, {"type": "text", "text": "And?"}],
        },
    ]


def test_single_conversation_matches_references(ckpt: str, clip: str, tmp_path: Path) -> None:
    messages = _conversation(clip, tmp_path)
    inputs, items = to_vllm_inputs(messages, ckpt, return_item_tokens=True)
    processor = AutoProcessor.from_pretrained(ckpt)
    assert inputs["prompt"] == processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    ref_images, ref_videos = qwen_vl_utils.process_vision_info(messages)
    images, videos = inputs["multi_modal_data"]["image"], inputs["multi_modal_data"]["video"]
    for ours, ref in zip(images, ref_images, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    ref_video = ref_videos[0].permute(0, 2, 3, 1).to(torch.uint8).numpy()
    np.testing.assert_array_equal(videos[0], ref_video)
    encoded = processor(
        text=[inputs["prompt"]], images=images, videos=[ref_videos[0]], do_resize=False, return_tensors="pt"
    )
    ids = encoded["input_ids"][0].tolist()
    expected_image_tokens = [int(g.prod()) // 4 for g in encoded["image_grid_thw"]]
    assert [i.tokens for i in items if i.kind == "image"] == expected_image_tokens
    assert sum(i.tokens for i in items if i.kind == "image") == ids.count(IMAGE_PAD)
    assert [i.tokens for i in items if i.kind == "video"] == [ids.count(VIDEO_PAD)]
    assert [list(i.grid_thw) for i in items if i.kind == "image"] == encoded["image_grid_thw"].tolist()


def test_batch_returns_one_dict_per_conversation(ckpt: str) -> None:
    batch = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": make_image(64, 64, seed=i)},
                    {"type": "text", "text": f"q{i}"},
                ],
            }
        ]
        for i in range(3)
    ] + [[{"role": "user", "content": "text only"}]]
    inputs = to_vllm_inputs(batch, ckpt)
    assert isinstance(inputs, list) and len(inputs) == 4
    assert all(d["prompt"].count("<|image_pad|>") == 1 for d in inputs[:3])
    assert "multi_modal_data" not in inputs[3] and "text only" in inputs[3]["prompt"]


def test_resized_media_are_not_resized_again(ckpt: str) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": make_image(40, 40), "min_pixels": 784, "max_pixels": 784},
                {"type": "text", "text": "tiny"},
            ],
        }
    ]
    inputs, items = to_vllm_inputs(messages, ckpt, return_item_tokens=True)
    assert items[0].tokens == 1
    assert inputs["mm_processor_kwargs"] == {"do_resize": False}


def test_bad_messages(ckpt: str) -> None:
    with pytest.raises(ValueError):
        to_vllm_inputs([], ckpt)
    with pytest.raises(ValueError, match="unknown content type"):
        to_vllm_inputs([{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}], ckpt)


def test_qwen_vl_v1_checkpoint(tmp_path: Path) -> None:
    ckpt = write_checkpoint("tiny-qwen-vl", "bf16", tmp_path / "v1")
    image = make_image(300, 200)
    for messages in (
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}],
        [{"image": image}, {"text": "What?"}],
    ):
        inputs, items = to_vllm_inputs(messages, str(ckpt), return_item_tokens=True)
        assert "Picture 1: <img></img>\nWhat?" in inputs["prompt"]
        assert len(inputs["multi_modal_data"]["image"]) == 1 and items[0].tokens == 256

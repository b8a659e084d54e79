"""Benchmark workloads as vLLM prompt dicts (W1..W4), built the same way for ours and in-tree."""

from __future__ import annotations

import numpy as np
from PIL import Image

from qwenvl_vllm.synthetic import random_rgb

VISION = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def chat(user: str) -> str:
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(random_rgb(height, width, seed))


def w1(n: int = 256) -> list[dict]:
    """One distinct 1024x768 image per request: 999 image tokens, 1024 prompt tokens in all."""
    prompt = chat(VISION + "Describe this image in detail.")
    return [{"prompt": prompt, "multi_modal_data": {"image": image(1024, 768, i)}} for i in range(n)]


def w2(n: int = 256) -> list[dict]:
    """Mixed resolutions 256^2..2048^2; every 4th request carries two images."""
    rng = np.random.default_rng(2)
    out = []
    for i in range(n):
        count = 2 if i % 4 == 0 else 1
        sides = [int(rng.choice([256, 512, 768, 1024, 1536, 2048])) for _ in range(2 * count)]
        images = [image(sides[2 * k], sides[2 * k + 1], 1000 + 10 * i + k) for k in range(count)]
        out.append(
            {"prompt": chat(VISION * count + "Compare and describe."), "multi_modal_data": {"image": images}}
        )
    return out


def w3(n: int = 64, frames: int = 16) -> list[dict]:
    """16 sampled frames of a 640x360 clip per request (frames as a uint8 [T, H, W, C] array)."""
    out = []
    for i in range(n):
        base = random_rgb(360, 640, 5000 + i)
        clip = np.stack([np.roll(base, 4 * t, axis=1) for t in range(frames)])
        out.append(
            {"prompt": chat(VIDEO + "What happens in this video?"), "multi_modal_data": {"video": clip}}
        )
    return out


def w4(n: int = 256, words: int = 700) -> list[dict]:
    """Text only, about 1024 prompt tokens each."""
    rng = np.random.default_rng(4)
    vocab = ["alpha", "river", "seven", "light", "table", "music", "stone", "green", "cloud", "paper"]
    return [{"prompt": chat(" ".join(rng.choice(vocab, words)))} for _ in range(n)]


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4}

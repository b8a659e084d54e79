"""The reference side of the Qwen-VL parity check: fixed requests and the comparison of vLLM's logprobs
with the plain-PyTorch reference (`qwen_vl_ref`) on the same token ids.

Used by scripts/gpu/qwen_vl_parity.py (vLLM on the GPU) and by a CPU unit test that feeds it our model's
logprobs, so the bookkeeping is checked without a GPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
TOP_K = 20


def parity_images() -> list[Any]:
    """Deterministic, non-square RGB images (a gradient plus a seeded pattern)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for h, w in ((480, 640), (300, 300)):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w)], axis=-1)
        noise = rng.integers(0, 64, size=(h, w, 3))
        out.append(Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)))
    return out


def parity_requests(has_visual: bool) -> list[dict[str, Any]]:
    images = parity_images()
    turn = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    reqs = [
        {
            "name": "text",
            "prompt": SYSTEM + turn.format("Tell me a short story about a lighthouse."),
            "images": [],
        }
    ]
    if has_visual:
        two = "Picture 1: <img>one.jpg</img>\nPicture 2: <img></img>\nWhat differs between the pictures?"
        reqs.insert(0, {"name": "two_images", "prompt": SYSTEM + turn.format(two), "images": images})
        one = "Picture 1: <img></img>\nDescribe the image."
        reqs.insert(1, {"name": "one_image", "prompt": SYSTEM + turn.format(one), "images": images[1:]})
    return reqs


def rel_err(a: list[float], b: list[float]) -> float:
    num = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    den = math.sqrt(sum(y * y for y in b)) or 1.0
    return num / den


def max_abs(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def compare(
    ref_dir: Path,
    reqs: list[dict],
    got: list[dict],
    dtype: str,
    device: str = "cuda",
    ref_dtype: str | None = None,
) -> list[dict[str, Any]]:
    """Reference logprobs for vLLM's token ids; `got` holds what run_vllm extracted from vLLM's outputs."""
    import torch

    from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values

    from .qwen_vl_ref import build_reference  # torch-heavy: imported when the comparison runs

    # ref_dtype float32 separates our bf16 rounding from the reference's own
    torch_dtype = getattr(torch, ref_dtype or dtype)
    ref = build_reference(ref_dir, dtype=torch_dtype, device=device)
    report = []
    with torch.inference_mode():
        for req, res in zip(reqs, got, strict=True):
            ids = res["prompt_ids"]
            full = torch.tensor(ids + res["gen_ids"], device=device)
            pixels = qwen_vl_pixel_values(req["images"]).to(device) if req["images"] else None
            t = len(ids)
            lp = torch.log_softmax(ref(full, pixels, prompt_len=t), dim=-1)  # [T + G, vocab] fp32
            ref_prompt = [lp[i - 1, ids[i]].item() for i in range(1, t)]
            ref_decode = [lp[t - 1 + i, tok].item() for i, tok in enumerate(res["gen_ids"])]
            topk_ids = list(res["topk"])
            ref_topk = [lp[t - 1, i].item() for i in topk_ids]
            entry: dict[str, Any] = {
                "name": req["name"],
                "prompt_tokens": t,
                "images": len(req["images"]),
                "prompt_logprob_rel_err": rel_err(res["prompt_lp"], ref_prompt),
                "prompt_logprob_max_abs": max_abs(res["prompt_lp"], ref_prompt),
                "decode_logprob_rel_err": rel_err(res["decode_lp"], ref_decode),
                "decode_logprob_max_abs": max_abs(res["decode_lp"], ref_decode),
                "final_top20_rel_err": rel_err([res["topk"][i] for i in topk_ids], ref_topk),
                "final_top1_agrees": int(lp[t - 1].argmax()) == max(res["topk"], key=res["topk"].get),
            }
            if pixels is not None:
                no_image = torch.log_softmax(ref(full[:t]), dim=-1)
                entry["image_effect_max_abs"] = (no_image - lp[:t]).abs().max().item()
            report.append(entry)
    del ref
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return report

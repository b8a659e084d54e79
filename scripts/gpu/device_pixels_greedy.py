"""GPU check (issue 10): greedy outputs with pixels made on the GPU equal those with pixels made on the CPU.

    python scripts/gpu/device_pixels_greedy.py --ckpt DIR --out FILE [--kv-cache-gib 8]

Two engines of ours, each in its own subprocess: QWENVL_VLLM_DEVICE_PIXELS=1 (the default: the processor
ships decoded uint8 pixels, the model resizes, normalises and patchifies on its device) and =0 (the API
server makes the patch rows, as qwen-vl-utils + transformers do). 32 prompts, every one with media that
must be resized (no side is 28-aligned): photos from 61x97 to 1920x1080, an RGBA image, aspect ratios near
the 200 limit, two-image prompts, and videos whose frames are resized. 16 greedy tokens each, with the
top-2 logprobs. The tower's input rows are byte-identical on both paths (tests/gpu/test_device_pixels_gpu.py)
and both engines (engine core in process) batch the same requests the same way, so the pass rule is
strict: identical prompt ids, identical generated ids, and identical logprobs (reported as their largest
absolute difference).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine_args import add_engine_args, engine_argv, run_json_worker
from qwen2_vl_parity import IMAGE, VIDEO, _llm, _turn, greedy_results

# (width, height, PIL mode); none is a multiple of 28 on both sides, so every one is resized
PHOTOS = [
    (1024, 768, "RGB"), (640, 480, "RGB"), (1920, 1080, "RGB"), (97, 61, "RGBA"), (1000, 40, "RGB"),
    (333, 777, "RGB"), (1279, 719, "RGB"), (50, 4000, "RGB"),
]  # fmt: skip
CLIPS = [(4, 640, 360), (6, 401, 299), (8, 320, 180)]  # (frames, width, height)
QUESTIONS = ["Describe this.", "What colours do you see?", "Count the objects.", "Is there text?"]


def _photo(index: int, seed: int):
    from qwenvl_vllm.synthetic import make_image

    width, height, mode = PHOTOS[index % len(PHOTOS)]
    return make_image(width, height, mode, seed=seed)


def _clip(index: int, seed: int):
    import numpy as np

    from qwenvl_vllm.synthetic import random_rgb

    frames, width, height = CLIPS[index % len(CLIPS)]
    base = random_rgb(height, width, seed)
    return np.stack([np.roll(base, 7 * i, axis=0) for i in range(frames)])  # [T, H, W, 3] uint8


def media_inputs() -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = []
    for i in range(20):
        prompt = _turn(f"{IMAGE}{QUESTIONS[i % 4]}")
        inputs.append({"prompt": prompt, "multi_modal_data": {"image": [_photo(i, 100 + i)]}})
    for i in range(6):
        images = [_photo(i + 1, 200 + i), _photo(i + 4, 300 + i)]
        inputs.append(
            {"prompt": _turn(f"Compare {IMAGE} and {IMAGE}."), "multi_modal_data": {"image": images}}
        )
    for i in range(6):
        inputs.append(
            {"prompt": _turn(f"{VIDEO}Summarise."), "multi_modal_data": {"video": [_clip(i, 400 + i)]}}
        )
    return inputs


def worker(args: argparse.Namespace) -> list[dict[str, Any]]:
    return greedy_results(_llm(args), media_inputs())


def _run(device_pixels: str, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    # In-process engine core: every request is added before the first step, so both engines schedule the
    # same batches (with a separate core process the first steps race the arrivals).
    argv = ["--worker", "--ckpt", args.ckpt, *engine_argv(args)]
    return run_json_worker(
        __file__,
        argv,
        out,
        QWENVL_VLLM_DISABLE="0",
        QWENVL_VLLM_DEVICE_PIXELS=device_pixels,
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
    )


def logprob_gap(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """Largest |difference| between two requests' per-step logprobs (inf where the top-2 ids differ)."""
    gap = 0.0
    for x, y in zip(a, b, strict=True):
        if x.keys() != y.keys():
            return float("inf")
        gap = max(gap, *(abs(x[k] - y[k]) for k in x))
    return gap


def compare(gpu: list[dict[str, Any]], cpu: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [
        {
            "index": i,
            "prompt_ids_equal": a["prompt_ids"] == b["prompt_ids"],
            "tokens_equal": a["gen_ids"] == b["gen_ids"],
            "logprob_max_abs_diff": logprob_gap(a["top2"], b["top2"]),
        }
        for i, (a, b) in enumerate(zip(gpu, cpu, strict=True))
    ]
    same = [e for e in entries if e["prompt_ids_equal"] and e["tokens_equal"]]
    worst = max(e["logprob_max_abs_diff"] for e in entries)
    return {
        "prompts": len(entries),
        "identical": len(same),
        "logprob_max_abs_diff": worst,
        "differing": [e for e in entries if e not in same or e["logprob_max_abs_diff"] > 0],
        "pass": len(same) == len(entries) and worst == 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--worker", action="store_true")
    add_engine_args(parser)
    args = parser.parse_args()
    out = Path(args.out)
    if args.worker:
        out.write_text(json.dumps(worker(args)))
        return 0
    gpu = _run("1", args, out.with_suffix(".gpu_pixels.json"))
    cpu = _run("0", args, out.with_suffix(".cpu_pixels.json"))
    result = {"ckpt": args.ckpt, **compare(gpu, cpu)}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

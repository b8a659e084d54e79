"""Offline `LLM.generate` batches through our plugin: images, videos, multi-image and mixes.

  python scripts/gpu/smoke.py --ckpt DIR --out result.json [--eager]
Builds the batch with qwenvl_vllm.processors.to_vllm_inputs (qwen-vl-utils message format), checks every
request produced tokens, that a bad request raises ValueError without taking the engine down, and that
the next batch still runs.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


def batch(media: Path) -> list[list[dict]]:
    from qwenvl_vllm.synthetic import make_image, write_video

    make_image(1024, 768, seed=1).save(media / "a.jpg")
    buf = io.BytesIO()
    make_image(640, 480, seed=2).save(buf, format="PNG")
    b64 = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    clip = str(write_video(media / "clip.mp4", 60, 15.0, 640, 360))
    user = lambda *parts: [{"role": "user", "content": list(parts)}]  # noqa: E731
    text = lambda t: {"type": "text", "text": t}  # noqa: E731
    return [
        user({"type": "image", "image": str(media / "a.jpg")}, text("Describe.")),
        user({"type": "image", "image": b64, "max_pixels": 256 * 28 * 28}, text("What is it?")),
        user(
            {"type": "image", "image": f"file://{media / 'a.jpg'}"},
            {"type": "image", "image": b64},
            text("Compare."),
        ),
        user({"type": "video", "video": clip, "fps": 1.0}, text("What happens?")),
        user({"type": "video", "video": clip, "nframes": 4}, {"type": "image", "image": b64}, text("Both?")),
        [{"role": "user", "content": "Text only, please."}],
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args()
    from vllm import LLM, SamplingParams

    from qwenvl_vllm.processors import to_vllm_inputs

    llm = LLM(
        args.ckpt,
        max_model_len=8192,
        limit_mm_per_prompt={"image": 2, "video": 1},
        gpu_memory_utilization=0.5,
        enforce_eager=args.eager,
    )
    media = Path(tempfile.mkdtemp())
    conversations = batch(media)
    inputs, items = to_vllm_inputs(conversations, args.ckpt, return_item_tokens=True)
    params = SamplingParams(temperature=0.0, max_tokens=16)
    t0 = time.perf_counter()
    outputs = llm.generate(inputs, params)
    elapsed = time.perf_counter() - t0
    rows = []
    for out, its in zip(outputs, items, strict=True):
        vision_tokens = sum(i.tokens for i in its)
        rows.append(
            {
                "prompt_tokens": len(out.prompt_token_ids),
                "vision_tokens": vision_tokens,
                "generated": len(out.outputs[0].token_ids),
                "text": out.outputs[0].text[:60],
            }
        )
    bad = {"prompt": "<|vision_start|><|image_pad|><|vision_end|>x", "multi_modal_data": {"image": []}}
    try:
        llm.generate([bad], params)
        bad_result = "no error"
    except (ValueError, TypeError) as exc:
        bad_result = f"{type(exc).__name__}: {str(exc)[:200]}"
    again = llm.generate(inputs[:2], params)
    result = {
        "rows": rows,
        "elapsed_s": elapsed,
        "bad_request": bad_result,
        "after_bad_ok": all(len(o.outputs[0].token_ids) > 0 for o in again),
        "all_generated": all(r["generated"] > 0 for r in rows),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Tensor-parallel parity (issue 14): ours at TP=2 (both ViT modes) vs ours at TP=1 and vs in-tree at TP=2.

    python scripts/gpu/tp_parity.py --family qwen2-vl|qwen-vl --ckpt DIR --out FILE [--tp 2]

32 prompts (Qwen2-VL: `qwen2_vl_parity.greedy_requests()`, text, images of eight sizes, two images, videos;
Qwen-VL: text, one and two images in its `Picture n: <img></img>` form), 16 greedy tokens with the top-2
logprobs per step and the prompt's logprobs. Sides, each an engine in its own subprocess: ours TP=1, ours
TP=2 with `mm_encoder_tp_mode` "weights" and "data", and in-tree TP=2 (Qwen2-VL only: in-tree vLLM no longer
serves Qwen-VL). Pass, per TP=2 side of ours: identical prompt ids; generated tokens identical to TP=1 or
diverging only at a near-tie (top-2 gap < --tie-margin at TP=1); relative L2 error of the prompt logprobs
and of the decode logprobs up to the first divergence vs TP=1 <= --tol (1e-2: all-reduce order changes bf16
sums slightly; a wrong shard gives O(1)); and the same token rule against in-tree TP=2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from engine_args import run_json_worker
from qwen2_vl_parity import GREEDY_STEPS, IMAGE_SIZES, TIE_MARGIN, _image, greedy_requests
from qwen2_vl_parity import _inputs as qwen2_vl_inputs
from request_outputs import logprob_record

QWEN_VL_QUESTIONS = ["Describe the picture.", "What is in it?", "Count the objects.", "Which colours?"]


def qwen_vl_requests() -> list[dict[str, Any]]:
    """Qwen-VL-Chat prompts: 10 text, 14 one-image, 8 two-image."""

    def turn(text: str) -> str:
        return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"

    reqs: list[dict[str, Any]] = [{"prompt": turn(f"Tell me about the number {7 * i}.")} for i in range(10)]
    for i in range(14):
        h, w = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        q = QWEN_VL_QUESTIONS[i % len(QWEN_VL_QUESTIONS)]
        reqs.append({"prompt": turn(f"Picture 1: <img></img>\n{q}"), "image": [_image(h, w, 100 + i)]})
    for i in range(8):
        a, b = IMAGE_SIZES[i % 8], IMAGE_SIZES[(i + 3) % 8]
        images = [_image(*a, 200 + i), _image(*b, 300 + i)]
        prompt = turn("Picture 1: <img></img>\nPicture 2: <img></img>\nCompare them.")
        reqs.append({"prompt": prompt, "image": images})
    return reqs


def _inputs(family: str) -> list[Any]:
    if family == "qwen2-vl":
        return qwen2_vl_inputs(greedy_requests())
    return [
        {"prompt": r["prompt"], "multi_modal_data": {"image": r["image"]}} if "image" in r else r["prompt"]
        for r in qwen_vl_requests()
    ]


def worker(args: argparse.Namespace) -> list[dict[str, Any]]:
    from vllm import LLM, SamplingParams

    limits = {"image": 2, "video": 1} if args.family == "qwen2-vl" else {"image": 2}
    extra = {"mm_encoder_tp_mode": args.vit_mode} if args.vit_mode else {}
    llm = LLM(
        model=args.ckpt,
        max_model_len=8192 if args.family == "qwen2-vl" else 2048,
        limit_mm_per_prompt=limits,
        tensor_parallel_size=args.side_tp,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=0,
        **extra,
    )
    params = SamplingParams(
        temperature=0.0, max_tokens=GREEDY_STEPS, logprobs=2, prompt_logprobs=1, ignore_eos=True
    )
    return [
        logprob_record(out) | {"top2": [_best_two(step) for step in out.outputs[0].logprobs]}
        for out in llm.generate(_inputs(args.family), params)
    ]


def _best_two(step: dict) -> list[float]:
    return sorted((lp.logprob for lp in step.values()), reverse=True)


def _rel(a: list[float], b: list[float]) -> float:
    num = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    den = math.sqrt(sum(y * y for y in b)) or 1.0
    return num / den


def compare(got: list[dict], ref: list[dict], tie_margin: float, with_logprobs: bool) -> dict[str, Any]:
    worst, entries = 0.0, []
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        entry: dict[str, Any] = {"prompt": i, "prompt_ids_equal": g["prompt_ids"] == r["prompt_ids"]}
        pairs = enumerate(zip(g["gen_ids"], r["gen_ids"], strict=True))
        diverge = next((k for k, (x, y) in pairs if x != y), None)
        if diverge is not None:
            top2 = r["top2"][diverge]
            gap = top2[0] - top2[1] if len(top2) > 1 else float("inf")
            entry.update({"first_divergence": diverge, "ref_top2_gap": gap, "near_tie": gap < tie_margin})
        if with_logprobs and entry["prompt_ids_equal"]:
            upto = len(g["gen_ids"]) if diverge is None else diverge
            decode = _rel(g["decode_lp"][:upto], r["decode_lp"][:upto])
            err = max(_rel(g["prompt_lp"], r["prompt_lp"]), decode)
            entry["logprob_rel_err"] = err
            worst = max(worst, err)
        entry["ok"] = entry["prompt_ids_equal"] and (diverge is None or entry["near_tie"])
        entries.append(entry)
    return {
        "prompts": len(entries),
        "identical": sum("first_divergence" not in e for e in entries),
        "tokens_ok": all(e["ok"] for e in entries),
        "max_logprob_rel_err": worst if with_logprobs else None,
        "problems": [e for e in entries if not e["ok"]],
    }


def _run(side: str, args: argparse.Namespace, out: Path) -> list[dict]:
    in_tree = side.startswith("in_tree")
    tp = 1 if side == "ours_tp1" else args.tp
    mode = "data" if side.endswith("data") else ("weights" if side.endswith("weights") else None)
    argv = ["--worker", "--family", args.family, "--ckpt", args.ckpt, "--side-tp", str(tp)]
    argv += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    argv += ["--vit-mode", mode] if mode else []
    return run_json_worker(__file__, argv, out, QWENVL_VLLM_DISABLE="1" if in_tree else "0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["qwen2-vl", "qwen-vl"], required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--tie-margin", type=float, default=TIE_MARGIN)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side-tp", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--vit-mode", choices=["weights", "data"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.worker:
        out.write_text(json.dumps(worker(args)))
        return 0
    sides = ["ours_tp1", f"ours_tp{args.tp}_weights", f"ours_tp{args.tp}_data"]
    sides += [f"in_tree_tp{args.tp}"] if args.family == "qwen2-vl" else []
    runs = {side: _run(side, args, out.with_suffix(f".{side}.json")) for side in sides}
    result: dict[str, Any] = {"family": args.family, "ckpt": args.ckpt, "tensor_parallel_size": args.tp}
    result["tol"] = args.tol
    for side in sides[1:3]:
        result[f"{side}_vs_tp1"] = compare(runs[side], runs["ours_tp1"], args.tie_margin, True)
        if len(sides) > 3:
            result[f"{side}_vs_{sides[3]}"] = compare(runs[side], runs[sides[3]], args.tie_margin, False)
    checks = [v for k, v in result.items() if isinstance(v, dict)]
    result["pass"] = all(c["tokens_ok"] and (c["max_logprob_rel_err"] or 0.0) <= args.tol for c in checks)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""GPU parity of our Qwen2-VL (vllm.LLM with the qwenvl_vllm plugin) against transformers and in-tree vLLM.

    python scripts/gpu/qwen2_vl_parity.py --ckpt DIR --out FILE [--greedy-ckpt DIR] [--tol 0.01] [--eager]

DIR: a bf16 Qwen2-VL checkpoint (tiny-qwen2-vl or qwen2-vl-2b from qwenvl_vllm.checkpoint.write_checkpoint).
--greedy-ckpt (default DIR) is used for the in-tree comparison only, so it may be a GPTQ / AWQ checkpoint.

1. transformers parity (bf16): an image prompt, a two-image prompt and a video prompt. vLLM (ours) gives
   prompt logprobs, 8 greedy tokens with their logprobs and the top-20 after the prompt; transformers'
   Qwen2VLForConditionalGeneration scores prompt + generated tokens on the same weights, with inputs made by
   its own Qwen2VLProcessor (do_resize=False on the same, already 28-aligned pixels). Metrics per vector:
   relative L2 error, both raw and centred (each vector minus its mean: random-weight checkpoints give
   near-uniform logprobs around -log(vocab), which makes the raw metric insensitive). Pass: centred errors
   <= --tol (1e-2; bf16 kernels differ by ~1e-3 relative, a wrong layout / rotary / merge gives O(1)), and
   identical prompt token ids (the processors agree on every item's token count). `image_effect_max_abs`
   (transformers with the pixel values negated) shows the comparison is sensitive to the vision path.
   The video (4 frames, merged grid 2 x 12 x 11) keeps t <= max(h, w), where transformers 5.x M-RoPE equals
   the original rule that vLLM and we implement.
2. In-tree comparison: >= 32 prompts (text, images of several sizes, two images, videos) run greedily
   (16 tokens, ignore_eos) through ours and through in-tree vLLM (a subprocess with QWENVL_VLLM_DISABLE=1).
   All media are already 28-aligned inside both processors' pixel ranges, so both see identical pixels.
   Pass: identical prompt token ids everywhere, and every divergence of the generated tokens happens at a
   near-tie (top-2 logprob gap < --tie-margin on the in-tree side; bf16 noise flips those).

Writes one JSON object to --out (and prints it); exit status 0 when everything passes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from engine_args import add_engine_args, engine_argv, kv_cache_bytes, run_json_worker

os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


ARCH = "Qwen2VLForConditionalGeneration"
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
DECODE_STEPS = 8
GREEDY_STEPS = 16
TOP_K = 20
TIE_MARGIN = 0.1  # top-2 logprob gap under which bf16 noise may flip the greedy token

# (height, width): multiples of 28 inside [min_pixels, max_pixels] of both processors (images), and inside
# [128, 768] tokens per frame for videos, so neither processor resizes them.
IMAGE_SIZES = [(224, 224), (448, 336), (280, 504), (588, 392), (336, 812), (140, 980), (672, 672), (56, 1260)]
VIDEO_SHAPES = [(4, 336, 308), (6, 308, 392), (8, 364, 280)]  # (frames, height, width)


def _turn(text: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def _image(height: int, width: int, seed: int):
    from qwenvl_vllm.synthetic import make_image

    return make_image(width, height, seed=seed)


def _video(frames: int, height: int, width: int, seed: int):
    """[T, H, W, 3] uint8 frames (the layout vLLM takes)."""
    import numpy as np

    from qwenvl_vllm.synthetic import random_rgb

    base = random_rgb(height, width, seed)
    return np.stack([np.roll(base, 5 * i, axis=1) for i in range(frames)])


def parity_requests() -> list[dict[str, Any]]:
    return [
        {"name": "image", "prompt": _turn(f"{IMAGE}Describe the image."), "image": [(588, 392, 1)]},
        {
            "name": "two_images",
            "prompt": _turn(f"{IMAGE}{IMAGE}What differs between the pictures?"),
            "image": [(448, 336, 2), (280, 504, 3)],
        },
        {"name": "video", "prompt": _turn(f"{VIDEO}What happens in the video?"), "video": [(4, 336, 308, 4)]},
    ]


def greedy_requests() -> list[dict[str, Any]]:
    questions = ["Describe this.", "What colours do you see?", "Count the objects.", "Is there text?"]
    reqs: list[dict[str, Any]] = []
    for i in range(8):
        reqs.append({"name": f"text{i}", "prompt": _turn(f"Write a sentence about the number {i * 7}.")})
    for i in range(12):
        h, w = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        q = questions[i % len(questions)]
        reqs.append({"name": f"image{i}", "prompt": _turn(f"{IMAGE}{q}"), "image": [(h, w, 10 + i)]})
    for i in range(6):
        a, b = IMAGE_SIZES[i % 8], IMAGE_SIZES[(i + 3) % 8]
        reqs.append(
            {
                "name": f"two_images{i}",
                "prompt": _turn(f"Compare {IMAGE} and {IMAGE}."),
                "image": [(*a, 30 + i), (*b, 40 + i)],
            }
        )
    for i in range(6):
        t, h, w = VIDEO_SHAPES[i % len(VIDEO_SHAPES)]
        reqs.append(
            {"name": f"video{i}", "prompt": _turn(f"{VIDEO}Summarise."), "video": [(t, h, w, 50 + i)]}
        )
    return reqs


def _mm_data(req: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if req.get("image"):
        data["image"] = [_image(h, w, s) for h, w, s in req["image"]]
    if req.get("video"):
        data["video"] = [_video(t, h, w, s) for t, h, w, s in req["video"]]
    return data


# ---------------------------------------------------------------------------------------------------------
# vLLM workers (each in its own subprocess: plugin on or off, and a clean GPU each time)
# ---------------------------------------------------------------------------------------------------------


def _llm(args: argparse.Namespace, **extra: Any):
    from vllm import LLM

    return LLM(
        model=args.ckpt,
        max_model_len=8192,
        limit_mm_per_prompt={"image": 2, "video": 1},
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_bytes(args.kv_cache_gib),
        enforce_eager=args.eager,
        seed=0,
        **extra,
    )


def _served_by() -> str | None:
    from vllm import ModelRegistry

    entry = ModelRegistry.models.get(ARCH)
    return getattr(entry, "module_name", None) or getattr(
        getattr(entry, "model_cls", None), "__module__", None
    )


def _inputs(reqs: list[dict[str, Any]]) -> list[Any]:
    out = []
    for req in reqs:
        data = _mm_data(req)
        out.append({"prompt": req["prompt"], "multi_modal_data": data} if data else req["prompt"])
    return out


def worker_parity(args: argparse.Namespace) -> dict[str, Any]:
    from vllm import SamplingParams

    llm = _llm(args)
    params = SamplingParams(
        temperature=0.0, max_tokens=DECODE_STEPS, logprobs=TOP_K, prompt_logprobs=1, ignore_eos=True
    )
    results = []
    for out in llm.generate(_inputs(parity_requests()), params):
        ids = list(out.prompt_token_ids)
        gen = out.outputs[0]
        results.append(
            {
                "prompt_ids": ids,
                "prompt_lp": [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))],
                "gen_ids": list(gen.token_ids),
                "decode_lp": [gen.logprobs[i][tok].logprob for i, tok in enumerate(gen.token_ids)],
                "topk": {str(t): lp.logprob for t, lp in gen.logprobs[0].items()},
            }
        )
    return {"served_by": _served_by(), "results": results}


def worker_greedy(args: argparse.Namespace) -> dict[str, Any]:
    results = greedy_results(_llm(args))
    return {"served_by": _served_by(), "results": results}  # after the engine start, which loads the plugin


def greedy_results(llm, inputs: list[Any] | None = None) -> list[dict[str, Any]]:
    """Prompt ids, generated ids and the top-2 logprobs per step of `inputs` (`greedy_requests()`'s)."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=GREEDY_STEPS, logprobs=2, ignore_eos=True)
    results = []
    for out in llm.generate(inputs if inputs is not None else _inputs(greedy_requests()), params):
        gen = out.outputs[0]
        steps = [{str(t): lp.logprob for t, lp in step.items()} for step in gen.logprobs]
        results.append(
            {"prompt_ids": list(out.prompt_token_ids), "gen_ids": list(gen.token_ids), "top2": steps}
        )
    return results


def run_worker(kind: str, ckpt: str, args: argparse.Namespace, in_tree: bool, out: Path) -> dict[str, Any]:
    argv = ["--worker", kind, "--ckpt", ckpt, *engine_argv(args)]
    return run_json_worker(__file__, argv, out, QWENVL_VLLM_DISABLE="1" if in_tree else "0")


# ---------------------------------------------------------------------------------------------------------
# transformers reference
# ---------------------------------------------------------------------------------------------------------


def _rel_err(a: list[float], b: list[float], centred: bool = False) -> float:
    if centred and a:
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        a, b = [x - ma for x in a], [y - mb for y in b]
    num = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    den = math.sqrt(sum(y * y for y in b)) or 1.0
    return num / den


def _hf_inputs(processor, req: dict[str, Any]):
    import torch

    data = _mm_data(req)
    videos = [torch.from_numpy(v).permute(0, 3, 1, 2) for v in data.get("video", [])]  # [T, C, H, W]
    return processor(
        text=[req["prompt"]],
        images=data.get("image") or None,
        videos=videos or None,
        do_resize=False,
        return_tensors="pt",
    )


def _ref_logprobs(model, full, types, pixels: dict[str, Any]):
    """[len, vocab] float32 log-probabilities of transformers' model for the sequence `full` [1, len]."""
    import torch

    out = model(input_ids=full, attention_mask=torch.ones_like(full), mm_token_type_ids=types, **pixels)
    return torch.log_softmax(out.logits[0].float(), dim=-1)


def hf_compare(ckpt: str, got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoProcessor
    from transformers import Qwen2VLForConditionalGeneration as HFQwen2VL

    processor = AutoProcessor.from_pretrained(ckpt)
    model = HFQwen2VL.from_pretrained(ckpt, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    report = []
    with torch.inference_mode():
        for req, res in zip(parity_requests(), got, strict=True):
            enc = _hf_inputs(processor, req)
            hf_ids = enc["input_ids"][0].tolist()
            ids, t = res["prompt_ids"], len(res["prompt_ids"])
            full = torch.tensor([ids + res["gen_ids"]], device="cuda")
            skip = ("input_ids", "attention_mask", "mm_token_type_ids")
            pixels = {k: v.cuda() for k, v in enc.items() if k not in skip}
            # transformers 5 places M-RoPE items by mm_token_type_ids: generated tokens are text (0)
            types = torch.zeros_like(full)
            types[0, :t] = enc["mm_token_type_ids"][0]

            lp = _ref_logprobs(model, full, types, pixels)
            ref_prompt = [lp[i - 1, ids[i]].item() for i in range(1, t)]
            ref_decode = [lp[t - 1 + i, tok].item() for i, tok in enumerate(res["gen_ids"])]
            topk_ids = list(res["topk"])
            ref_topk = [lp[t - 1, int(i)].item() for i in topk_ids]
            got_topk = [res["topk"][i] for i in topk_ids]
            flipped = {k: (-v if k.startswith("pixel_values") else v) for k, v in pixels.items()}
            effect = (_ref_logprobs(model, full, types, flipped)[: t - 1] - lp[: t - 1]).abs().max().item()
            report.append(
                {
                    "name": req["name"],
                    "prompt_tokens": t,
                    "prompt_ids_equal_hf": hf_ids == ids,
                    "prompt_logprob_rel_err": _rel_err(res["prompt_lp"], ref_prompt),
                    "prompt_logprob_rel_err_centred": _rel_err(res["prompt_lp"], ref_prompt, centred=True),
                    "decode_logprob_rel_err": _rel_err(res["decode_lp"], ref_decode),
                    "decode_logprob_rel_err_centred": _rel_err(res["decode_lp"], ref_decode, centred=True),
                    "final_top20_rel_err": _rel_err(got_topk, ref_topk),
                    "final_top20_rel_err_centred": _rel_err(got_topk, ref_topk, centred=True),
                    "final_top1_agrees": int(lp[t - 1].argmax())
                    == int(max(res["topk"], key=res["topk"].get)),
                    "image_effect_max_abs": effect,
                }
            )
    del model
    torch.cuda.empty_cache()
    return report


# ---------------------------------------------------------------------------------------------------------
# greedy comparison
# ---------------------------------------------------------------------------------------------------------


def greedy_compare(ours: list[dict], in_tree: list[dict], tie_margin: float) -> dict[str, Any]:
    entries = []
    for req, a, b in zip(greedy_requests(), ours, in_tree, strict=True):
        entry: dict[str, Any] = {"name": req["name"], "prompt_ids_equal": a["prompt_ids"] == b["prompt_ids"]}
        diverge = next(
            (i for i, (x, y) in enumerate(zip(a["gen_ids"], b["gen_ids"], strict=True)) if x != y), None
        )
        entry["tokens_equal"] = diverge is None
        if diverge is not None:
            top2 = sorted(b["top2"][diverge].values(), reverse=True)
            gap = top2[0] - top2[1] if len(top2) > 1 else float("inf")
            entry.update({"first_divergence": diverge, "in_tree_top2_gap": gap, "near_tie": gap < tie_margin})
        entries.append(entry)
    ok = all(e["prompt_ids_equal"] and (e["tokens_equal"] or e["near_tie"]) for e in entries)
    return {
        "prompts": len(entries),
        "identical": sum(e["tokens_equal"] for e in entries),
        "prompt_ids_identical": sum(e["prompt_ids_equal"] for e in entries),
        "pass": ok,
        "entries": entries,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="bf16 Qwen2-VL checkpoint (transformers parity)")
    parser.add_argument(
        "--greedy-ckpt", default=None, help="checkpoint for the in-tree comparison (default --ckpt)"
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--tie-margin", type=float, default=TIE_MARGIN)
    add_engine_args(parser, gpu_memory_utilization=0.45)
    parser.add_argument("--skip-in-tree", action="store_true")
    parser.add_argument("--skip-transformers", action="store_true", help="only the greedy in-tree comparison")
    parser.add_argument(
        "--control-in-tree",
        action="store_true",
        help="also score in-tree vLLM against transformers (noise floor)",
    )
    parser.add_argument("--worker", choices=["parity", "greedy"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        result = (worker_parity if args.worker == "parity" else worker_greedy)(args)
        args.out.write_text(json.dumps(result))
        return 0

    work = args.out.with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"ckpt": args.ckpt, "tol": args.tol}
    ok = True
    if not args.skip_transformers:
        ours = run_worker("parity", args.ckpt, args, in_tree=False, out=work / "parity_ours.json")
        hf = hf_compare(args.ckpt, ours["results"])
        keys = (
            "prompt_logprob_rel_err_centred",
            "decode_logprob_rel_err_centred",
            "final_top20_rel_err_centred",
        )
        hf_ok = all(e["prompt_ids_equal_hf"] and all(e[k] <= args.tol for k in keys) for e in hf)
        report |= {"ours_served_by": ours["served_by"], "hf_parity": hf, "hf_pass": hf_ok}
        if args.control_in_tree:  # what bf16 kernels alone give: the floor our errors are judged against
            control = run_worker("parity", args.ckpt, args, in_tree=True, out=work / "parity_in_tree.json")
            report["in_tree_hf_parity"] = hf_compare(args.ckpt, control["results"])
        ok = hf_ok and ours["served_by"] == "qwenvl_vllm.models.qwen2_vl"
        # A time limit during the greedy runs keeps this part; `pass` is written only at the end.
        args.out.write_text(json.dumps(report | {"unfinished": "greedy_vs_in_tree"}, indent=2) + "\n")
    if not args.skip_in_tree:
        greedy_ckpt = args.greedy_ckpt or args.ckpt
        mine = run_worker("greedy", greedy_ckpt, args, in_tree=False, out=work / "greedy_ours.json")
        theirs = run_worker("greedy", greedy_ckpt, args, in_tree=True, out=work / "greedy_in_tree.json")
        report["greedy_ckpt"] = greedy_ckpt
        report["in_tree_served_by"] = theirs["served_by"]
        report["greedy_vs_in_tree"] = greedy_compare(mine["results"], theirs["results"], args.tie_margin)
        report["ours_greedy_served_by"] = mine["served_by"]
        ok = ok and report["greedy_vs_in_tree"]["pass"] and theirs["served_by"] != mine["served_by"]
    report["pass"] = ok
    text = json.dumps(report, indent=2)
    args.out.write_text(text + "\n")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""GPU: Qwen-VL prompts past seq_length (dynamic NTK per request) served by `vllm.LLM` vs the reference.

    python scripts/gpu/qwen_vl_long_context.py --ckpt DIR [--ref-ckpt DIR] [--ref-dtype float32]
        [--dtype auto] --label bf16 --out FILE
    python scripts/gpu/qwen_vl_long_context.py --combine A.json B.json --out RESULT.json

Prompts of about 1.5k, 2.5k, 5k and 9k tokens (several images + text; alphas 1, 3, 7, 15 for
seq_length 2048), each alone and then all together with two short prompts in one batch (the mixed batch),
with chunked prefill (--max-num-batched-tokens 2048 by default) and torch.compile + CUDA graphs unless
--eager. For each request, vs the plain-PyTorch reference (tests/reference) on vLLM's token ids with the
release's alpha from the prompt length: relative L2 error of vLLM's prompt logprobs, decode logprobs
(greedy, --decode-steps) and final top-20 logprobs (tests/gpu/qwen_vl_parity.py's metric); max_rel_err is
the largest of the three. For alpha > 1 also alpha_effect_max_abs: how far the reference's logprobs of the
same tokens move under alpha 1, next to max_abs_err (ours vs the reference), so a wrong alpha cannot hide.
Pass when every max_rel_err <= --tol (1e-2) and the engine ran without prefix caching. --combine merges
per-variant files (bf16 vs float32 reference, Int4 vs its dequantized twin) into
{"cases": [...], "mixed_batch_max_rel_err": ..., ...}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # past seq_length 2048

REPO = Path(__file__).resolve().parents[2]
# this checkout's package, the `reference` test helpers and this folder's `engine_args` (also when imported)
for path in (REPO, REPO / "tests", REPO / "scripts" / "gpu"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from engine_args import add_engine_args, kv_cache_bytes  # noqa: E402
from reference.qwen_vl_compare import SYSTEM, TOP_K, max_abs, rel_err  # noqa: E402
from request_outputs import logprob_record  # noqa: E402

from qwenvl_vllm.models.qwen_ntk import ntk_alpha  # noqa: E402

# (target prompt tokens, images): about 1.5k, 2.5k, 5k and 9k tokens
CASES = ((1500, 2), (2500, 4), (5000, 8), (9000, 12))
SHORT = ((300, 1), (600, 0))  # the mixed batch's short prompts (alpha 1)
FILLER = "The lighthouse keeper wrote down the weather, the ships that passed and the colour of the sea. "
IMAGE_TOKENS = 256  # <imgpad> per image, added to the two tag tokens the tokenizer sees


def _images(n: int, seed: int) -> list[Any]:
    """Distinct deterministic RGB images (a gradient per image plus a seeded pattern)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 320 + 16 * i, 480 - 8 * i
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * (i + 1)) % 256, y * 255 // h, (x + y + 40 * i) % 256], axis=-1)
        pixels = (base + rng.integers(0, 64, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
        out.append(Image.fromarray(pixels))
    return out


def _request(tokenizer: Any, target: int, n_images: int, seed: int) -> dict[str, Any]:
    """A ChatML prompt with n_images pictures and filler text of about `target` tokens in all."""
    pictures = "".join(f"Picture {i + 1}: <img></img>\n" for i in range(n_images))
    question = "Summarise the notes and describe the pictures."
    head = SYSTEM + "<|im_start|>user\n" + pictures
    tail = question + "<|im_end|>\n<|im_start|>assistant\n"
    fixed = len(tokenizer.encode(head + tail)) + IMAGE_TOKENS * n_images
    per_filler = len(tokenizer.encode(FILLER * 8)) / 8
    repeats = max(0, round((target - fixed) / per_filler))
    return {
        "name": f"{target}_tokens_{n_images}_images",
        "prompt": head + FILLER * repeats + tail,
        "images": _images(n_images, seed),
    }


def _generate(llm: Any, reqs: list[dict[str, Any]], decode_steps: int) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    params = SamplingParams(
        temperature=0.0, max_tokens=decode_steps, logprobs=TOP_K, prompt_logprobs=1, ignore_eos=True
    )
    inputs = [
        {"prompt": r["prompt"], "multi_modal_data": {"image": r["images"]}} if r["images"] else r["prompt"]
        for r in reqs
    ]
    results = [
        logprob_record(out) | {"topk": {int(t): lp.logprob for t, lp in out.outputs[0].logprobs[0].items()}}
        for out in llm.generate(inputs, params)
    ]
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vllm import LLM

    config = json.loads((args.ckpt / "config.json").read_text())
    dtype = args.dtype if args.dtype != "auto" else _ckpt_dtype(config)
    llm = LLM(
        model=str(args.ckpt),
        dtype=dtype,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,  # below the long prompts: chunked prefill
        limit_mm_per_prompt={"image": max(n for _, n in CASES)},
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_bytes(args.kv_cache_gib),
        enforce_eager=args.eager,
        enable_prefix_caching=True,  # asked for: our config hook must turn it off (alphas differ per prompt)
        seed=0,
    )
    tokenizer = llm.get_tokenizer()
    cases = [_request(tokenizer, t, n, seed) for seed, (t, n) in enumerate(CASES)]
    short = [_request(tokenizer, t, n, 100 + seed) for seed, (t, n) in enumerate(SHORT)]
    alone = [_generate(llm, [req], args.decode_steps)[0] for req in cases]
    mixed_reqs = [short[0], *cases, short[1]]
    mixed = _generate(llm, mixed_reqs, args.decode_steps)
    prefix_caching = llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
    del llm
    gc.collect()

    ref_dtype = args.ref_dtype or dtype
    pairs = list(zip(cases + mixed_reqs, alone + mixed, strict=True))
    report = evaluate(args.ref_ckpt or args.ckpt, pairs, ref_dtype, int(config["seq_length"]))
    mixed_report = report[len(cases) :]
    return {
        "variant": args.label,
        "ckpt": str(args.ckpt),
        "ref_ckpt": str(args.ref_ckpt or args.ckpt),
        "dtype": dtype,
        "ref_dtype": ref_dtype,
        "eager": args.eager,
        "max_model_len": args.max_model_len,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "prefix_caching": prefix_caching,
        "tol": args.tol,
        "cases": report[: len(cases)],
        "mixed_batch": mixed_report,
        "mixed_batch_max_rel_err": max(e["max_rel_err"] for e in mixed_report),
    }


def _ckpt_dtype(config: dict[str, Any]) -> str:
    return {"float16": "float16", "float32": "float32"}.get(str(config.get("torch_dtype")), "bfloat16")


def evaluate(
    ref_dir: Path,
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    ref_dtype: str,
    seq_length: int,
    device: str = "cuda",
) -> list[dict[str, Any]]:
    """The reference (built once, on the GPU vLLM has left) on each request's prompt + generated ids."""
    import torch
    from reference.qwen_vl_ref import build_reference

    ref = build_reference(ref_dir, dtype=getattr(torch, ref_dtype), device=device)
    with torch.inference_mode():
        report = [_entry(ref, req, res, seq_length, device) for req, res in pairs]
    del ref
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return report


def _entry(
    ref: Any, req: dict[str, Any], res: dict[str, Any], seq_length: int, device: str
) -> dict[str, Any]:
    import torch

    from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values

    ids, gen_ids = res["prompt_ids"], res["gen_ids"]
    full = torch.tensor(ids + gen_ids, device=device)
    pixels = qwen_vl_pixel_values(req["images"]).to(device) if req["images"] else None

    def logprobs(prompt_len: int) -> dict[str, list[float]]:
        lp = torch.log_softmax(ref(full, pixels, prompt_len=prompt_len), dim=-1)  # [T + G, vocab] fp32
        return _observed(lp, ids, gen_ids, list(res["topk"]))

    t = len(ids)
    want = logprobs(t)
    got = {"prompt": res["prompt_lp"], "decode": res["decode_lp"], "topk": list(res["topk"].values())}
    entry: dict[str, Any] = {
        "name": req["name"],
        "prompt_tokens": t,
        "images": len(req["images"]),
        "alpha": ntk_alpha(t, seq_length),
        **{f"{k}_rel_err": rel_err(got[k], want[k]) for k in want},
        "max_abs_err": max(max_abs(got[k], want[k]) for k in want),
    }
    entry["max_rel_err"] = max(entry[f"{k}_rel_err"] for k in want)
    if entry["alpha"] > 1:  # the same tokens under alpha 1 (a 1-token prompt's alpha)
        plain = logprobs(1)
        entry["alpha_effect_max_abs"] = max(max_abs(plain[k], want[k]) for k in want)
    return entry


def _observed(lp: Any, ids: list[int], gen_ids: list[int], topk_ids: list[int]) -> dict[str, list[float]]:
    """The logprobs vLLM reported, read from the reference's [T + G, vocab] logprobs."""
    t = len(ids)
    return {
        "prompt": [lp[i - 1, ids[i]].item() for i in range(1, t)],
        "decode": [lp[t - 1 + i, tok].item() for i, tok in enumerate(gen_ids)],
        "topk": [lp[t - 1, i].item() for i in topk_ids],
    }


def combine(files: list[Path], tol: float) -> dict[str, Any]:
    """One result from per-variant runs: every case tagged with its variant; the worst mixed batch."""
    runs = [json.loads(f.read_text()) for f in files]
    cases = [{"variant": r["variant"], **case} for r in runs for case in r["cases"]]
    mixed = max(r["mixed_batch_max_rel_err"] for r in runs)
    worst = max([c["max_rel_err"] for c in cases] + [mixed])
    return {
        "cases": cases,
        "mixed_batch_max_rel_err": mixed,
        "variants": {r["variant"]: {k: v for k, v in r.items() if k != "cases"} for r in runs},
        "tol": tol,
        "pass": worst <= tol and not any(r["prefix_caching"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="checkpoint served by vLLM")
    parser.add_argument("--ref-ckpt", type=Path, default=None, help="reference weights (default: --ckpt)")
    parser.add_argument("--ref-dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--label", default="bf16", help="variant name in the result")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--max-model-len", type=int, default=10240)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--decode-steps", type=int, default=8)
    add_engine_args(parser, gpu_memory_utilization=0.45)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--combine", type=Path, nargs="+", default=None, help="merge per-variant results")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.combine:
        result = combine(args.combine, args.tol)
    else:
        if args.ckpt is None or not (args.ckpt / "config.json").is_file():
            raise ValueError("--ckpt must be a checkpoint directory with config.json")
        result = run(args)
        errs = [c["max_rel_err"] for c in result["cases"]] + [result["mixed_batch_max_rel_err"]]
        result["pass"] = max(errs) <= args.tol and not result["prefix_caching"]
    text = json.dumps(result, indent=2)
    args.out.write_text(text)
    print(text)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""GPU parity: our Qwen-VL v1 model served by `vllm.LLM` vs the plain-PyTorch reference on the same weights.

    python scripts/gpu/qwen_vl_parity.py --ckpt DIR [--ref-ckpt DIR] [--out FILE] [--tol 0.01] [--eager]

DIR is a Qwen-VL(-Chat) or Qwen-7B checkpoint directory (bf16, or GPTQ Int4). The reference loads
--ref-ckpt (default: DIR; GPTQ linears are dequantized with our own AutoGPTQ decoder, or pass the
writer's `dequantized=True` bf16 twin) in the dtype vLLM runs in, on the same GPU, after vLLM is done.

Requests (one batch): two images + question, one image, text only. For each request we compare
- prompt logprobs: vLLM's logprob of every prompt token (prefill) vs the reference's;
- decode logprobs: 8 (--decode-steps) greedy tokens from vLLM (paged KV cache), the logprob vLLM gave
  each vs the reference on prompt + generated tokens;
- final top-20: vLLM's 20 best logprobs after the prompt vs the reference's for the same token ids.
Metric: relative L2 error ||vllm - ref|| / ||ref|| per vector; pass when all are <= --tol (1e-2: bf16 GEMMs
of different kernels and accumulation orders differ by ~1e-4 relative on the tiny model, while a wrong weight
layout, rotary or image merge changes logprobs by O(1)), and, for image requests, when the largest prompt
logprob error is below 10% of `image_effect` (reference with vs without the image features: ~1.8 on the
tiny checkpoint vs ~0.004 bf16-vs-fp32 error), so a broken image path cannot hide in the L2 average.
Prints one JSON object (also written to --out); exit code 0 on pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

# vLLM's engine process must not inherit torch thread pools started before LLM(): spawn it instead.
os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")

TESTS = Path(__file__).resolve().parents[2] / "tests"  # for the `reference` package of the tests
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from reference.qwen_vl_compare import TOP_K, compare, parity_requests  # noqa: E402

DECODE_STEPS = 8


def _dtype_name(ckpt: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    config = json.loads((ckpt / "config.json").read_text())
    return {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}.get(
        str(config.get("torch_dtype")), "bfloat16"
    )


def run_vllm(
    ckpt: Path,
    reqs: list[dict[str, Any]],
    dtype: str,
    eager: bool,
    gpu_mem: float,
    max_model_len: int = 2048,
    decode_steps: int = DECODE_STEPS,
) -> list[dict]:
    from vllm import LLM, SamplingParams

    has_images = any(r["images"] for r in reqs)
    llm = LLM(
        model=str(ckpt),
        dtype=dtype,
        max_model_len=max_model_len,
        limit_mm_per_prompt={"image": 2} if has_images else None,
        gpu_memory_utilization=gpu_mem,
        enforce_eager=eager,
        seed=0,
    )
    params = SamplingParams(
        temperature=0.0, max_tokens=decode_steps, logprobs=TOP_K, prompt_logprobs=1, ignore_eos=True
    )
    inputs = [
        {"prompt": r["prompt"], "multi_modal_data": {"image": r["images"]}} if r["images"] else r["prompt"]
        for r in reqs
    ]
    outs = llm.generate(inputs, params)
    results = []
    for out in outs:
        ids = list(out.prompt_token_ids)
        prompt_lp = [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]
        gen = out.outputs[0]
        gen_ids = list(gen.token_ids)
        decode_lp = [gen.logprobs[i][tok].logprob for i, tok in enumerate(gen_ids)]
        final_topk = {int(t): lp.logprob for t, lp in gen.logprobs[0].items()}
        results.append(
            {
                "prompt_ids": ids,
                "prompt_lp": prompt_lp,
                "gen_ids": gen_ids,
                "decode_lp": decode_lp,
                "topk": final_topk,
            }
        )
    del llm
    gc.collect()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint served by vLLM")
    parser.add_argument("--ref-ckpt", type=Path, default=None, help="reference weights (default: --ckpt)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16"])
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument(
        "--eager", action="store_true", help="enforce_eager (skip torch.compile / CUDA graphs)"
    )
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.45)
    parser.add_argument("--ref-dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--decode-steps", type=int, default=DECODE_STEPS)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument(
        "--text-only", action="store_true", help="only the text prompt (e.g. to decode past seq_length)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not (args.ckpt / "config.json").is_file():
        raise ValueError(f"{args.ckpt} has no config.json")

    dtype = _dtype_name(args.ckpt, args.dtype)
    config = json.loads((args.ckpt / "config.json").read_text())
    reqs = parity_requests(bool(config.get("visual")) and not args.text_only)
    if args.max_model_len > config.get("seq_length", 2048):
        os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"  # past seq_length: logn attention
    got = run_vllm(
        args.ckpt,
        reqs,
        dtype,
        args.eager,
        args.gpu_memory_utilization,
        args.max_model_len,
        args.decode_steps,
    )
    report = compare(args.ref_ckpt or args.ckpt, reqs, got, dtype, ref_dtype=args.ref_dtype)
    keys = ("prompt_logprob_rel_err", "decode_logprob_rel_err", "final_top20_rel_err")
    ok = all(entry[k] <= args.tol for entry in report for k in keys)
    # logprobs sit near -log(vocab) for random weights, so also demand that the worst error is small next
    # to what the image features change: a broken image path fails here even if its L2 share is small.
    ok = ok and all(
        e["prompt_logprob_max_abs"] < 0.1 * e["image_effect_max_abs"]
        for e in report
        if "image_effect_max_abs" in e
    )
    import torch

    result = {
        "ckpt": str(args.ckpt),
        "ref_ckpt": str(args.ref_ckpt or args.ckpt),
        "dtype": dtype,
        "ref_dtype": args.ref_dtype or dtype,
        "device": torch.cuda.get_device_name(0),
        "eager": args.eager,
        "tol": args.tol,
        "requests": report,
        "pass": ok,
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

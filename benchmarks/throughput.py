"""Offline LLM.generate throughput of one implementation (ours or in-tree) on one workload.

Run one side per process (the plugin switch is read when vLLM loads plugins):
  python benchmarks/throughput.py --ckpt DIR --workload W1 --impl ours --out ours.json
  python benchmarks/throughput.py --ckpt DIR --workload W1 --impl in_tree --out in_tree.json
`benchmarks/compare.py` runs both and writes the side-by-side result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

LATENCY_REPEATS = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--workload", default="W1")
    parser.add_argument("--impl", choices=["ours", "in_tree"], required=True)
    parser.add_argument("--num-requests", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--out", required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.impl == "in_tree":
        os.environ["QWENVL_VLLM_DISABLE"] = "1"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from vllm import LLM, SamplingParams
    from workloads import WORKLOADS

    build = WORKLOADS[args.workload]
    requests = build(args.num_requests) if args.num_requests else build()
    limits = {"image": 2, "video": 1}
    start = time.perf_counter()
    llm = LLM(
        args.ckpt,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        limit_mm_per_prompt=limits,
        enforce_eager=args.enforce_eager,
    )
    startup_s = time.perf_counter() - start
    model_cls = type(llm.llm_engine.model_config).__name__
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(requests[:4], params, use_tqdm=False)  # warm-up outside the timed regions
    # single-request latency on items not seen before (no prefix / processor cache hits)
    ttft = [_timed(llm, [requests[4 + i]], 1) for i in range(LATENCY_REPEATS)]
    e2e = [_timed(llm, [requests[4 + LATENCY_REPEATS + i]], args.max_tokens) for i in range(LATENCY_REPEATS)]
    t0 = time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=True)
    elapsed = time.perf_counter() - t0
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
    output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    result = {
        "impl": args.impl,
        "workload": args.workload,
        "num_requests": len(requests),
        "elapsed_s": elapsed,
        "req_per_s": len(requests) / elapsed,
        "input_tok_per_s": prompt_tokens / elapsed,
        "output_tok_per_s": output_tokens / elapsed,
        "prompt_tokens_per_request": prompt_tokens / len(requests),
        "ttft_single_ms": statistics.median(ttft),
        "e2e_single_ms": statistics.median(e2e),
        "latency_repeats": LATENCY_REPEATS,
        "startup_s": startup_s,
        "model_config": model_cls,
    }
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def _timed(llm, prompts: list[dict], max_tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()

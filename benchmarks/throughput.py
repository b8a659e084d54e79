"""Offline LLM.generate throughput of one implementation (ours or in-tree) on one or more workloads.

Run one side per process (the plugin switch is read when vLLM loads plugins); one engine serves every
workload of the side, with the same max_model_len and a fixed KV-cache budget for both sides:
  python benchmarks/throughput.py --ckpt DIR --workloads W1 W2 --impl ours --out-dir OUT
writes OUT/<workload>_<impl>.json. `benchmarks/compare.py` runs both sides and pairs the results.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

LATENCY_REPEATS = 5
# Covers the encoder batch shapes of the timed run (our tower captures a CUDA graph per shape on first use).
WARMUP = 16


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--workloads", nargs="+", default=["W1"])
    parser.add_argument("--impl", choices=["ours", "in_tree"], required=True)
    parser.add_argument("--num-requests", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=16384)
    parser.add_argument("--kv-cache-gib", type=float, default=24.0)
    parser.add_argument("--enforce-eager", action="store_true")
    # Only to share the GPU (vLLM's start-up check wants this fraction free); the KV budget stays fixed.
    parser.add_argument("--gpu-memory-utilization", type=float, default=None, help="default: vLLM's")
    parser.add_argument("--scheduler-cls", default=None, help="a scheduler class path (default: vLLM's)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--mm-encoder-tp-mode", choices=["weights", "data"], default="weights")
    parser.add_argument("--out-dir", required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.impl == "in_tree":
        os.environ["QWENVL_VLLM_DISABLE"] = "1"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_memory import PeakMemory
    from vllm import LLM

    with PeakMemory() as memory:
        start = time.perf_counter()
        llm = LLM(
            args.ckpt,
            max_model_len=args.max_model_len,
            kv_cache_memory_bytes=int(args.kv_cache_gib * 2**30),
            limit_mm_per_prompt={"image": 2, "video": 1},
            enforce_eager=args.enforce_eager,
            **given(gpu_memory_utilization=args.gpu_memory_utilization, scheduler_cls=args.scheduler_cls),
            tensor_parallel_size=args.tensor_parallel_size,
            mm_encoder_tp_mode=args.mm_encoder_tp_mode,
        )
        startup = {"startup_s": time.perf_counter() - start, "startup_peak_gpu_gib": memory.peak_gib()}
        for workload in args.workloads:
            memory.reset()
            result = run_workload(llm, workload, args) | startup
            result["peak_gpu_gib"] = memory.peak_gib()
            result["gpu_baseline_gib"] = memory.baseline_gib
            print(json.dumps(result), flush=True)
            out = Path(args.out_dir) / f"{workload}_{args.impl}.json"
            out.write_text(json.dumps(result, indent=2) + "\n")


def given(**options: object) -> dict:
    """The options set on the command line; the others keep vLLM's defaults."""
    return {key: value for key, value in options.items() if value}


def run_workload(llm, workload: str, args: argparse.Namespace) -> dict:
    from vllm import SamplingParams
    from workloads import WORKLOADS

    build = WORKLOADS[workload]
    count = args.num_requests or inspect.signature(build).parameters["n"].default
    extra = WARMUP + 2 * LATENCY_REPEATS  # distinct items, so the timed batch gets no cache hits from them
    requests = build(count + extra)
    warm, single, timed = requests[:WARMUP], requests[WARMUP:extra], requests[extra:]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(warm, params, use_tqdm=False)
    ttft = [_timed(llm, [single[i]], 1) for i in range(LATENCY_REPEATS)]
    e2e = [_timed(llm, [single[LATENCY_REPEATS + i]], args.max_tokens) for i in range(LATENCY_REPEATS)]
    t0 = time.perf_counter()
    outputs = llm.generate(timed, params, use_tqdm=True)
    elapsed = time.perf_counter() - t0
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
    output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {
        "impl": args.impl,
        "workload": workload,
        "num_requests": len(timed),
        "elapsed_s": elapsed,
        "req_per_s": len(timed) / elapsed,
        "input_tok_per_s": prompt_tokens / elapsed,
        "output_tok_per_s": output_tokens / elapsed,
        "prompt_tokens_per_request": prompt_tokens / len(timed),
        "ttft_single_ms": statistics.median(ttft),
        "e2e_single_ms": statistics.median(e2e),
        "ttft_single_all_ms": ttft,
        "e2e_single_all_ms": e2e,
        "latency_repeats": LATENCY_REPEATS,
        "max_model_len": args.max_model_len,
        "kv_cache_budget_gib": args.kv_cache_gib,
    }


def _timed(llm, prompts: list[dict], max_tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()

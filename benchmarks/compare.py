"""Ours vs in-tree vLLM, side by side on one GPU: runs benchmarks/throughput.py for each side.

  python benchmarks/compare.py --ckpt DIR --workloads W1 W2 W3 W4 --out-dir benchmarks/results
Each side is one process and one engine for all workloads (same max_model_len, fixed KV budget).
Writes <out-dir>/<workload>.json (keys: gpu, date, vllm_version, workload, ours, in_tree, ratio, config),
a markdown table and a PNG bar chart.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_side(impl: str, args: argparse.Namespace, tmp: Path) -> dict[str, dict]:
    """One engine per side for all workloads; returns {workload: figures} (or an error for each)."""
    cmd = [sys.executable, str(HERE / "throughput.py"), "--ckpt", args.ckpt, "--workloads", *args.workloads]
    cmd += ["--impl", impl, "--out-dir", str(tmp), "--max-tokens", str(args.max_tokens)]
    cmd += ["--max-model-len", str(args.max_model_len), "--kv-cache-gib", str(args.kv_cache_gib)]
    cmd += ["--tensor-parallel-size", str(args.tensor_parallel_size)]
    cmd += ["--mm-encoder-tp-mode", args.mm_encoder_tp_mode]
    if impl == "ours" and args.ours_scheduler_cls:
        cmd += ["--scheduler-cls", args.ours_scheduler_cls]
    if args.num_requests:
        cmd += ["--num-requests", str(args.num_requests)]
    proc = subprocess.run(cmd, text=True, capture_output=True)
    log = proc.stdout + proc.stderr
    (tmp / f"offline_{impl}.log").write_text(log)
    results = {}
    for workload in args.workloads:
        out = tmp / f"{workload}_{impl}.json"
        if out.is_file():
            results[workload] = json.loads(out.read_text()) | memory_from_log(log)
        else:
            results[workload] = {"error": f"exit {proc.returncode}", "log_tail": log[-3000:]}
    return results


MEMORY_PATTERNS = {
    "weights_gib": r"Model loading took ([\d.]+) GiB",
    "kv_cache_gib": r"Available KV cache memory: ([\d.]+) GiB",
    "kv_cache_tokens": r"GPU KV cache size: ([\d,]+) tokens",
}


def memory_from_log(log: str) -> dict:
    """Weight and KV-cache memory vLLM reports at start-up (same max_model_len and memory budget)."""
    found = {}
    for key, pattern in MEMORY_PATTERNS.items():
        match = re.search(pattern, log)
        if match:
            found[key] = float(match.group(1).replace(",", ""))
    return found


def environment() -> dict:
    import torch
    import vllm

    return {"gpu": torch.cuda.get_device_name(), "vllm_version": vllm.__version__, "torch": torch.__version__}


def _num(side: dict, key: str, fmt: str) -> str:
    value = side.get(key)
    return format(value, fmt) if isinstance(value, (int, float)) else "error"


def markdown(results: list[dict]) -> str:
    lines = [
        "| workload | ours req/s | in-tree req/s | ratio | ours out tok/s | in-tree out tok/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        o, i = r["ours"], r["in_tree"]
        cells = [r["workload"], _num(o, "req_per_s", ".2f"), _num(i, "req_per_s", ".2f"), f"{r['ratio']:.3f}"]
        cells += [_num(o, "output_tok_per_s", ".0f"), _num(i, "output_tok_per_s", ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["workload"] for r in results]
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(1.5 + 1.4 * len(names), 3.2))
    ax.bar([x - 0.2 for x in xs], [r["ours"].get("req_per_s", 0) for r in results], 0.4, label="qwenvl-vllm")
    ax.bar(
        [x + 0.2 for x in xs], [r["in_tree"].get("req_per_s", 0) for r in results], 0.4, label="in-tree vLLM"
    )
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("requests / s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--workloads", nargs="+", default=["W1"])
    parser.add_argument("--num-requests", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=16384)
    parser.add_argument("--kv-cache-gib", type=float, default=24.0, help="fixed KV budget, both sides")
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument("--tag", default="")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--mm-encoder-tp-mode", choices=["weights", "data"], default="weights")
    parser.add_argument("--ours-scheduler-cls", default=None, help="our side only, e.g. an encode-ahead one")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    results = []
    sides = {impl: run_side(impl, args, out_dir) for impl in ("ours", "in_tree")}
    for workload in args.workloads:
        ours, in_tree = sides["ours"][workload], sides["in_tree"][workload]
        ratio = (
            ours.get("req_per_s", 0.0) / in_tree["req_per_s"] if in_tree.get("req_per_s") else float("nan")
        )
        result = {
            "gpu": env["gpu"],
            "date": time.strftime("%Y-%m-%d"),
            "vllm_version": env["vllm_version"],
            "torch_version": env["torch"],
            "workload": workload,
            "ours": ours,
            "in_tree": in_tree,
            "ratio": ratio,
            "config": {
                "ckpt": args.ckpt,
                "max_tokens": args.max_tokens,
                "num_requests": args.num_requests,
                "max_model_len": args.max_model_len,
                "kv_cache_budget_gib": args.kv_cache_gib,
                "tensor_parallel_size": args.tensor_parallel_size,
                "mm_encoder_tp_mode": args.mm_encoder_tp_mode,
                "ours_scheduler_cls": args.ours_scheduler_cls,
            },
        }
        (out_dir / f"{workload}{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{workload}: ours {ours.get('req_per_s')} in-tree {in_tree.get('req_per_s')} ratio {ratio:.3f}"
        )
        results.append(result)
    (out_dir / f"table{args.tag}.md").write_text(markdown(results))
    chart(results, out_dir / f"chart{args.tag}.png")
    print(markdown(results))


if __name__ == "__main__":
    main()

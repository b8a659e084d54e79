"""Markdown summary (and a ratio chart) of one results folder (compare.py / serve_bench.py / seed_tables.py).

python benchmarks/summarize.py RESULTS_DIR > RESULTS_DIR/SUMMARY.md   # also writes RESULTS_DIR/ratios.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ITEMS_PER_REQUEST = {"W1": 1.0, "W2": 1.25, "W3": 1.0, "W4": 0.0}  # images (W3: videos) per request


def fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([row(header), row(["---"] * len(header)), *map(row, rows)]) + "\n"


def pair(a: dict, b: dict, key: str, spec: str) -> str:
    return f"{fmt(a.get(key), spec)} / {fmt(b.get(key), spec)}"


def speed(ours: dict, in_tree: dict, ratio: float | None) -> list[str]:
    return [fmt(ours.get("req_per_s"), ".2f"), fmt(in_tree.get("req_per_s"), ".2f"), fmt(ratio, ".3f")]


def load(folder: Path, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))]


def offline_runs(folder: Path) -> list[dict]:
    paths = [folder / f"{name}.json" for name in ITEMS_PER_REQUEST]
    return [json.loads(p.read_text()) for p in paths if p.is_file()]


def offline(runs: list[dict]) -> str:
    header = [
        "workload",
        "ours req/s",
        "in-tree req/s",
        "ratio",
        "ours in / out tok/s",
        "media/s ours / in-tree",
    ]
    rows = []
    for r in runs:
        o, i, per = r["ours"], r["in_tree"], ITEMS_PER_REQUEST[r["workload"]]
        rows.append([
            r["workload"], *speed(o, i, r["ratio"]),
            f"{fmt(o.get('input_tok_per_s'), '.0f')} / {fmt(o.get('output_tok_per_s'), '.0f')}",
            f"{fmt(o.get('req_per_s', 0) * per, '.1f')} / {fmt(i.get('req_per_s', 0) * per, '.1f')}",
        ])  # fmt: skip
    return table(header, rows)


def latency(runs: list[dict]) -> str:
    header = ["workload", "TTFT ms ours / in-tree", "end-to-end ms ours / in-tree (64 tokens)", "repeats"]
    rows = [
        [r["workload"], pair(r["ours"], r["in_tree"], "ttft_single_ms", ".1f"),
         pair(r["ours"], r["in_tree"], "e2e_single_ms", ".1f"), str(r["ours"].get("latency_repeats", "-"))]
        for r in runs
    ]  # fmt: skip
    return table(header, rows)


def memory(runs: list[dict]) -> str:
    header = ["workload", "weights GiB ours / in-tree", "KV budget GiB", "KV tokens ours / in-tree"]
    header += ["peak GPU GiB ours / in-tree"]
    rows = [
        [r["workload"], pair(r["ours"], r["in_tree"], "weights_gib", ".2f"),
         fmt(r["ours"].get("kv_cache_budget_gib"), ".0f"),
         pair(r["ours"], r["in_tree"], "kv_cache_tokens", ",.0f"),
         pair(r["ours"], r["in_tree"], "peak_gpu_gib", ".2f")]
        for r in runs
    ]  # fmt: skip
    return table(header, rows)


def serve_runs(folder: Path) -> list[dict]:
    runs = load(folder, "serve-c*.json")
    return sorted(runs, key=lambda r: r["ours"]["concurrency"])


def serving(runs: list[dict]) -> str:
    header = ["concurrency", "ours req/s", "in-tree req/s", "ratio", "TTFT p50/p99 ms ours"]
    header += ["TTFT p50/p99 ms in-tree", "ITL p50/p99 ms ours", "ITL p50/p99 ms in-tree", "errors"]
    header += ["peak GPU GiB ours / in-tree"]
    rows = []
    for r in runs:
        o, i = r["ours"], r["in_tree"]
        rows.append([
            str(o["concurrency"]), *speed(o, i, r["ratio"]),
            fmt(o["ttft_p50_ms"], ".0f") + " / " + fmt(o["ttft_p99_ms"], ".0f"),
            fmt(i["ttft_p50_ms"], ".0f") + " / " + fmt(i["ttft_p99_ms"], ".0f"),
            fmt(o["itl_p50_ms"], ".1f") + " / " + fmt(o["itl_p99_ms"], ".0f"),
            fmt(i["itl_p50_ms"], ".1f") + " / " + fmt(i["itl_p99_ms"], ".0f"),
            f"{o['errors']} / {i['errors']}", pair(o, i, "peak_gpu_gib", ".2f"),
        ])  # fmt: skip
    return table(header, rows)


SIDE_KEYS = ("ours", "in_tree")  # every other object with req_per_s in a serve-*.json is an extra side


def sides_of(run: dict) -> list[str]:
    extra = [k for k, v in run.items() if isinstance(v, dict) and "req_per_s" in v and k not in SIDE_KEYS]
    return ["ours", *extra, "in_tree"]


def mechanisms(runs: list[dict]) -> str:
    """One row per serving side and concurrency: how each scheduler / option did in the same visit."""
    header = ["concurrency", "side", "req/s", "TTFT p50 / p99 ms", "ITL p50 / p99 ms", "errors"]
    rows = []
    for r in runs:
        for side in sides_of(r):
            v = r[side]
            rows.append([
                str(v.get("concurrency", "-")), side, fmt(v.get("req_per_s"), ".2f"),
                fmt(v.get("ttft_p50_ms"), ".0f") + " / " + fmt(v.get("ttft_p99_ms"), ".0f"),
                fmt(v.get("itl_p50_ms"), ".1f") + " / " + fmt(v.get("itl_p99_ms"), ".1f"),
                str(v.get("errors", "-")),
            ])  # fmt: skip
    return table(header, rows)


def seeds(folder: Path) -> str:
    rows = []
    for r in load(folder, "seed_*.json"):
        if not isinstance(r, dict):  # seed_*.rows.json: the worker's raw rows
            continue
        label = r["workload"].removeprefix("seed-table-")
        for item in r["rows"]:
            rows.append([label, str(item["input_tokens"]), str(item["output_tokens"]),
                         fmt(item["tok_per_s"], ".1f"), fmt(item["weights_plus_kv_gib"], ".2f"),
                         fmt(item.get("peak_gpu_gib"), ".2f")])  # fmt: skip
    header = ["checkpoint", "input tokens", "generated", "tok/s", "weights + KV GiB", "device peak GiB"]
    return table(header, rows)


def chart(runs: list[dict], path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:  # the `bench` extra; the tables do not need it
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["workload"] for r in runs]
    ratios = [r["ratio"] or 0.0 for r in runs]
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(names), 3.2))
    ax.bar(names, ratios, color=["tab:green" if x >= 1 else "tab:red" for x in ratios])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("ours / in-tree req/s")
    ax.set_ylim(0, max(1.2, max(ratios, default=1) * 1.1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    folder = Path(sys.argv[1])
    runs, served = offline_runs(folder), serve_runs(folder)
    first = (runs or served or [{"gpu": "?", "vllm_version": "?", "date": "?"}])[0]
    print(f"# {first['gpu']}, vLLM {first['vllm_version']}, {first['date']}\n")
    ckpt = first.get("config", {}).get("ckpt", "?")
    print(f"Checkpoint `{ckpt}` (our writer); ours and in-tree on the same GPU in the same visit.\n")
    print("## Offline LLM.generate throughput\n\n" + offline(runs))
    print("## Single-request latency (medians)\n\n" + latency(runs))
    print("## Memory (same max_model_len, fixed KV budget)\n\n" + memory(runs))
    print(
        "## Serving (`vllm serve`, one 1024x768 JPEG per request, 64 streamed tokens)\n\n" + serving(served)
    )
    if any(len(sides_of(r)) > 2 for r in served):
        print("## Serving, every side (our schedulers beside the default)\n\n" + mechanisms(served))
    print("## Seed tables on our stack (batch 1)\n\n" + seeds(folder))
    if (runs or served) and chart(runs + served, folder / "ratios.png"):
        print("![ours / in-tree](ratios.png)")


if __name__ == "__main__":
    main()

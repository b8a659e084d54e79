"""Markdown summary of one results folder (compare.py / serve_bench.py / seed_tables.py JSON).

python benchmarks/summarize.py RESULTS_DIR > RESULTS_DIR/SUMMARY.md
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


def offline(folder: Path) -> str:
    header = ["workload", "ours req/s", "in-tree req/s", "ratio", "ours in / out tok/s", "media/s (ours)"]
    header += ["TTFT ms ours / in-tree", "weights GiB", "KV tokens ours / in-tree"]
    rows = []
    for name in ("W1", "W2", "W3", "W4"):
        path = folder / f"{name}.json"
        if path.is_file():
            r = json.loads(path.read_text())
            o, i = r["ours"], r["in_tree"]
            rows.append([
                name, fmt(o["req_per_s"], ".2f"), fmt(i["req_per_s"], ".2f"), fmt(r["ratio"], ".3f"),
                f"{fmt(o.get('input_tok_per_s'), '.0f')} / {fmt(o.get('output_tok_per_s'), '.0f')}",
                fmt(o["req_per_s"] * ITEMS_PER_REQUEST[name], ".1f"), pair(o, i, "ttft_single_ms", ".0f"),
                fmt(o.get("weights_gib"), ".2f"), pair(o, i, "kv_cache_tokens", ",.0f"),
            ])  # fmt: skip
    return table(header, rows)


def serving(folder: Path) -> str:
    header = ["concurrency", "ours req/s", "in-tree req/s", "ratio", "TTFT p50/p99 ms ours"]
    header += ["TTFT p50/p99 ms in-tree", "ITL p50/p99 ms ours", "ITL p50/p99 ms in-tree", "errors"]
    rows = []
    for path in sorted(folder.glob("serve-c*.json"), key=lambda p: int(p.stem.split("c")[-1])):
        r = json.loads(path.read_text())
        o, i = r["ours"], r["in_tree"]
        rows.append([
            str(o["concurrency"]), fmt(o["req_per_s"], ".2f"), fmt(i["req_per_s"], ".2f"),
            fmt(r["ratio"], ".3f"),
            fmt(o["ttft_p50_ms"], ".0f") + " / " + fmt(o["ttft_p99_ms"], ".0f"),
            fmt(i["ttft_p50_ms"], ".0f") + " / " + fmt(i["ttft_p99_ms"], ".0f"),
            fmt(o["itl_p50_ms"], ".1f") + " / " + fmt(o["itl_p99_ms"], ".0f"),
            fmt(i["itl_p50_ms"], ".1f") + " / " + fmt(i["itl_p99_ms"], ".0f"),
            f"{o['errors']} / {i['errors']}",
        ])  # fmt: skip
    return table(header, rows)


def seeds(folder: Path) -> str:
    rows = []
    for path in sorted(folder.glob("seed_*.json")):
        r = json.loads(path.read_text())
        label = r["workload"].removeprefix("seed-table-")
        for item in r["rows"]:
            rows.append([label, str(item["input_tokens"]), fmt(item["tok_per_s"], ".1f"),
                         fmt(item["weights_plus_kv_gib"], ".2f")])  # fmt: skip
    return table(["checkpoint", "input tokens", "tok/s (2048 generated)", "weights + KV GiB"], rows)


def main() -> None:
    folder = Path(sys.argv[1])
    first = json.loads((folder / "W1.json").read_text())
    print(f"# {first['gpu']}, vLLM {first['vllm_version']}, {first['date']}\n")
    print("## Offline LLM.generate (ours vs in-tree, same run, same GPU)\n\n" + offline(folder))
    print(
        "## Serving (`vllm serve`, one 1024x768 JPEG per request, 64 streamed tokens)\n\n" + serving(folder)
    )
    print("## Seed table (Qwen2-VL-2B shapes, batch 1, our stack)\n\n" + seeds(folder))


if __name__ == "__main__":
    main()

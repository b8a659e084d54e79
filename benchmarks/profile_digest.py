"""Where an engine step's time goes, from a torch-profiler trace of vLLM's worker (`vllm serve
--profiler-config`, `serve_bench.py --profile-side`).

  python benchmarks/profile_digest.py TRACE.json[.gz] --out digest.json

Steps are vLLM's per-iteration annotations (`execute_context_<n>(<tokens>)_generation_<n>(<tokens>)`),
each up to the next one's start. For each step: its host span (`execute_model`), the named scopes inside
it (vLLM's V1 runner's `gpu_model_runner: ...`, absent under its V2 runner, and ours, `qwenvl: ...`, on
with VLLM_CUSTOM_SCOPES_FOR_PROFILING=1),
the host time spent blocked in CUDA calls that wait for the device, and the GPU time of the work it
launched (kernels and copies, matched to their launch by the trace's correlation ids; CUDA-graph kernels
count for the graph's launch), by category. Steps are then grouped by whether they ran our
`embed_multimodal` (admitted new images) to compare the two kinds. Under async scheduling a step's window
also holds the wait for the previous step's output (a synchronising call after `execute_model`): that wait
is the previous step's GPU time showing, so each row also gets the next row's `blocked_next_ms`, and
`unscoped_ms` (the engine loop's other host time) leaves blocked calls out. `host_names` ranks the host
events by name (aten ops; Python functions too in a trace with stacks) by how much more or less time per
step they took in the admitting steps than in the others: what the admitting steps' extra host time is.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

STEP = re.compile(r"execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")
SCOPE_PREFIXES = ("gpu_model_runner: ", "qwenvl: ")
# host events named by what ran: aten ops always, Python functions with the profiler's stacks
# (`serve_profile.py --profile-stack`); summed by name inside `execute_model`'s span (inclusive: nested ones
# count in each name), then compared between the two kinds of step
NAMED_HOST_CATS = ("cpu_op", "python_function")
TOP_NAMES = 40
# CUDA runtime calls that wait for the device; any other call this long waited too (a pageable copy, an
# allocation that synchronises): launches take microseconds
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
BLOCKED_OVER_MS = 0.5
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
KERNEL_CATEGORIES = (  # first match wins
    ("attention", ("flash", "fmha", "attn", "paged")),
    ("gemm", ("gemm", "cutlass", "sm90_xmma", "nvjet", "marlin", "gptq", "matmul")),
    ("triton", ("triton",)),
    ("copy", ("memcpy", "memset", "copy", "catarray")),
    ("elementwise", ("elementwise", "vectorized", "reduce", "norm", "act_and_mul", "rotary")),
)


def kernel_category(name: str) -> str:
    lowered = name.lower()
    for category, needles in KERNEL_CATEGORIES:
        if any(needle in lowered for needle in needles):
            return category
    return "other"


def load_events(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    return load_events_from(trace["traceEvents"] if isinstance(trace, dict) else trace)


def load_events_from(events: list[dict]) -> list[dict]:
    """The complete events (with a duration) of a chrome trace's event list."""
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def _steps(events: list[dict]) -> list[dict]:
    steps = []
    for e in events:
        match = STEP.fullmatch(e.get("name", ""))
        if match and e.get("cat") == "user_annotation":
            ctx, ctx_tokens, gen, gen_tokens = (int(v) for v in match.groups())
            steps.append(
                {
                    "ts": e["ts"],
                    "end": e["ts"] + e["dur"],
                    "tid": e.get("tid"),
                    "context_requests": ctx,
                    "context_tokens": ctx_tokens,
                    "decodes": gen,
                }
            )
    steps.sort(key=lambda s: s["ts"])
    return steps


def _step_of(starts: list[float], steps: list[dict], ts: float) -> dict | None:
    """The step whose window holds `ts`: from its start to the next one's (vLLM samples in a separate call
    after `execute_model`'s annotation ends), the last one to its own end."""
    i = bisect.bisect_right(starts, ts) - 1
    if i < 0 or (i == len(steps) - 1 and ts > steps[i]["end"]):
        return None
    return steps[i]


def digest(events: list[dict]) -> dict:
    steps = _steps(events)
    starts = [s["ts"] for s in steps]
    for s in steps:
        s.update(
            scopes_ms=defaultdict(float),
            names_ms=defaultdict(float),
            blocked_ms=0.0,
            blocked_in_model_ms=0.0,
            gpu_ms=defaultdict(float),
        )
    launch_step: dict[int, dict] = {}  # correlation id -> step
    for e in events:
        cat, name = e.get("cat"), e.get("name", "")
        if cat not in ("user_annotation", "cuda_runtime", "cuda_driver", *NAMED_HOST_CATS):
            continue
        step = _step_of(starts, steps, e["ts"])
        if step is None or e.get("tid") != step["tid"]:
            continue
        if cat in NAMED_HOST_CATS:
            if e["ts"] <= step["end"]:
                step["names_ms"][name] += e["dur"] / 1000
            continue
        if cat == "user_annotation" and name.startswith(SCOPE_PREFIXES):
            step["scopes_ms"][name] += e["dur"] / 1000
        elif cat != "user_annotation":
            if name.startswith(SYNC_CALLS) or e["dur"] / 1000 > BLOCKED_OVER_MS:
                step["blocked_ms"] += e["dur"] / 1000
                if e["ts"] <= step["end"]:
                    step["blocked_in_model_ms"] += e["dur"] / 1000
            correlation = e.get("args", {}).get("correlation")
            if correlation is not None:
                launch_step[correlation] = step
    for e in events:
        if e.get("cat") not in GPU_CATS:
            continue
        step = launch_step.get(e.get("args", {}).get("correlation"))
        if step is not None:
            step["gpu_ms"][kernel_category(e["name"]) if e["cat"] == "kernel" else "copy"] += e["dur"] / 1000
            step["gpu_first"] = min(step.get("gpu_first", e["ts"]), e["ts"])
            step["gpu_last"] = max(step.get("gpu_last", 0.0), e["ts"] + e["dur"])
    rows = [_row(s, steps[i + 1]["ts"] if i + 1 < len(steps) else None) for i, s in enumerate(steps)]
    for row, after in zip(rows[:-1], rows[1:], strict=True):
        # async scheduling: the next step waits for this one's GPU work (its output) in its own window
        row["blocked_next_ms"] = after["blocked_ms"]
    return {
        "steps": len(rows),
        "groups": _groups(rows),
        "host_names": _names_by_kind(steps, [row["new_images"] for row in rows]),
        "per_step": rows,
    }


def _row(step: dict, next_start: float | None) -> dict:
    return {
        "host_ms": round((step["end"] - step["ts"]) / 1000, 3),
        "gap_ms": None if next_start is None else round((next_start - step["ts"]) / 1000, 3),
        "context_requests": step["context_requests"],
        "context_tokens": step["context_tokens"],
        "decodes": step["decodes"],
        "new_images": "qwenvl: embed_multimodal" in step["scopes_ms"],
        "blocked_ms": round(step["blocked_ms"], 3),
        "gpu_ms": round(sum(step["gpu_ms"].values()), 3),
        "gpu_span_ms": _gpu_span_ms(step),
        # the engine loop's host time outside the model and our schedulers' scopes (adding requests, ...)
        "unscoped_ms": _unscoped_ms(step, next_start),
        "gpu_by_category_ms": {k: round(v, 3) for k, v in sorted(step["gpu_ms"].items())},
        "scopes_ms": {k: round(v, 3) for k, v in sorted(step["scopes_ms"].items())},
    }


SCHEDULER_SCOPES = ("qwenvl: schedule", "qwenvl: update_from_output")


def _unscoped_ms(step: dict, next_start: float | None) -> float | None:
    if next_start is None:
        return None
    scheduler = sum(step["scopes_ms"].get(name, 0.0) for name in SCHEDULER_SCOPES)
    blocked_after = step["blocked_ms"] - step["blocked_in_model_ms"]
    return round((next_start - step["end"]) / 1000 - scheduler - blocked_after, 3)


def _gpu_span_ms(step: dict) -> float:
    """First launched work's start to the last one's end: above gpu_ms, the device idled or ran others'."""
    return round((step["gpu_last"] - step["gpu_first"]) / 1000, 3) if "gpu_first" in step else 0.0


def _names_by_kind(steps: list[dict], admitting: list[bool]) -> list[dict]:
    """The `TOP_NAMES` host event names whose mean ms per step differ most between the steps that admitted
    new images and the others (each mean over all steps of its kind, 0 where a step lacks the name)."""
    kinds = {
        kind: [s["names_ms"] for s, new in zip(steps, admitting, strict=True) if new is kind]
        for kind in (True, False)
    }
    if not all(kinds.values()):
        return []
    admitting_ms, other_ms = (_mean_dicts(kinds[kind]) for kind in (True, False))
    rows = [
        {
            "name": name,
            "new_images_ms": admitting_ms.get(name, 0.0),
            "no_new_images_ms": other_ms.get(name, 0.0),
        }
        for name in admitting_ms.keys() | other_ms.keys()
    ]
    rows.sort(key=lambda r: -abs(r["new_images_ms"] - r["no_new_images_ms"]))
    return rows[:TOP_NAMES]


MEANS = (
    "gap_ms",
    "host_ms",
    "unscoped_ms",
    "blocked_ms",
    "blocked_next_ms",
    "gpu_ms",
    "gpu_span_ms",
    "decodes",
)


def _groups(rows: list[dict]) -> dict:
    """Means per kind of step (new images or not): where the extra time of admitting images goes."""
    out = {}
    for label, keep in (("new_images", True), ("no_new_images", False)):
        group = [r for r in rows if r["new_images"] is keep]
        if not group:
            continue
        out[label] = {
            "steps": len(group),
            **{f"{key}_mean": _mean(group, key) for key in MEANS},
            "gpu_by_category_ms_mean": _mean_dicts([r["gpu_by_category_ms"] for r in group]),
            "scopes_ms_mean": _mean_dicts([r["scopes_ms"] for r in group]),
        }
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(float(np.mean(values)), 3) if values else None


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for d in dicts:
        for key, value in d.items():
            total[key] += value
    return {key: round(value / len(dicts), 3) for key, value in sorted(total.items())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = digest(load_events(args.trace)) | {"trace": args.trace.name}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["groups"], indent=1))


if __name__ == "__main__":
    main()

"""What the engine's steps were made of, from serve_bench's step traces (`steps_<side>.jsonl`).

  python benchmarks/step_trace_report.py DIR_OR_FILES...
Per trace: the gaps between steps grouped by what the step scheduled (encoder inputs, prefill tokens), and
the idle gaps (no request in the engine: the next requests are still in the API server). The gap after a
step is its time on the GPU or, with async scheduling, the previous step's (the two overlap): a long gap
belongs to a run of heavy steps, which the grouping shows.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import step_fit

from qwenvl_vllm.serving import step_trace

ENCODER_BINS = ((0, 0), (1, 2), (3, 5), (6, 99))
PREFILL_BIN_TOKENS = 2048


def _encoder_bin(count: int) -> str:
    low, high = next((lo, hi) for lo, hi in ENCODER_BINS if lo <= count <= hi)
    return str(low) if low == high else f"{low}-{high}"


def _prefill_bin(tokens: int) -> str:
    low = tokens // PREFILL_BIN_TOKENS * PREFILL_BIN_TOKENS
    return f"{low}-{low + PREFILL_BIN_TOKENS - 1}"


def group_gaps(steps: list[dict]) -> dict[tuple[str, str], list[float]]:
    """Gap (ms) after each step with requests, keyed by (encoder-input bin, prefill-token bin)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for step, following in zip(steps, steps[1:], strict=False):
        if step["running"] == 0:
            continue
        key = (_encoder_bin(step["encoder_inputs"]), _prefill_bin(step["prefill_tokens"]))
        groups[key].append((following["t"] - step["t"]) * 1000)
    return groups


def idle_gaps(steps: list[dict]) -> list[float]:
    return [(b["t"] - a["t"]) * 1000 for a, b in zip(steps, steps[1:], strict=False) if a["running"] == 0]


def report(path: Path) -> str:
    steps = step_trace.load(path)
    lines = [f"### {path.name}: {len(steps)} steps", ""]
    lines += [
        "| encoder inputs | prefill tokens | steps | gap p50 (ms) | gap max (ms) |",
        "|---|---|---|---|---|",
    ]
    for (enc, pre), gaps in sorted(group_gaps(steps).items(), key=lambda kv: (len(kv[0][0]), kv[0])):
        lines.append(f"| {enc} | {pre} | {len(gaps)} | {np.median(gaps):.1f} | {max(gaps):.1f} |")
    weighted = step_trace.decode_gap_p99(steps)
    if weighted is not None:
        lines += ["", f"decode-weighted gap p99 (the engine's inter-token p99): {weighted:.1f} ms"]
    tower = step_trace.tower_ms_per_step(steps)
    if tower is not None:
        ms = " / ".join(f"{tower[k]:.1f}" for k in ("p50", "p90", "max"))
        lines += ["", f"tower work per step (ms at the tower's rate), p50 / p90 / max: {ms}"]
    lines += _fit_lines(steps)
    lines += _sync_lines(steps)
    idle = idle_gaps(steps)
    if idle:
        lines += ["", f"idle gaps (engine empty): {len(idle)}, median {np.median(idle):.0f} ms"]
    return "\n".join(lines) + "\n"


def _fit_lines(steps: list[dict]) -> list[str]:
    try:
        s = step_fit.fit(steps).summary()
    except ValueError:
        return []
    tower = (
        f"{s['admitting_steps']} steps with tower work: residual sd {s['admitting_residual_sd_ms']:.1f},"
        f" p90 / p97 / p99 {s['admitting_residual_p90_ms']:.1f} / {s['admitting_residual_p97_ms']:.1f}"
        f" / {s['admitting_residual_p99_ms']:.1f} ms"
    )
    costs = (
        f"{s['fixed_ms']:.1f} ms + {s['ms_per_decode']:.3f} per decode + {s['ms_per_1k_prefill']:.1f} per 1k"
        f" prefill tokens + {s['tower_factor']:.2f}x the tower's assumed ms"
    )
    return ["", f"fit: {costs}; residual sd {s['residual_sd_ms']:.1f}; {tower}"]


def _sync_lines(steps: list[dict]) -> list[str]:
    """Synchronising calls per step and scope (QWENVL_VLLM_SYNC_CHECK), by new images admitted."""
    lines = []
    for images, means in step_trace.host_by_images_admitted(steps, "syncs").items():
        counts = ", ".join(f"{name} {n:.2f}" for name, n in means.items() if name not in ("steps", "gap_ms"))
        lines.append(f"syncs per step, {images} images admitted ({means['steps']} steps): {counts or 'none'}")
    return ["", *lines] if lines else []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.paths:
        for trace in sorted(path.glob("steps_*.jsonl")) if path.is_dir() else [path]:
            print(report(trace))


if __name__ == "__main__":
    main()

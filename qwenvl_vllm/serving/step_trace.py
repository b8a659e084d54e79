"""A per-step trace of the engine's scheduler, for finding what a long inter-token gap was made of.

With `QWENVL_VLLM_STEP_TRACE=<file>` set, each of our schedulers appends one JSON line per `schedule()` call:
when it started (monotonic seconds), how long the call took, the step's decode and prefill tokens, its encoder
inputs and the queue lengths (written once a second, when the engine runs out of requests and at shutdown),
and `host_ms`: the host milliseconds of our named scopes (`qwenvl_vllm.models.host_scopes`) since the previous
record, i.e. the previous step's model work (images admitted, their pixels, the tower's slices), its outputs'
update and this call; with a slicing scheduler also `tower_work`, the tower's patches x blocks launched since
the previous record (the previous step's slices). The gap between two calls is one engine step; with async
scheduling the next call overlaps the GPU's work, so a gap partly holds the previous step's GPU time, and gaps
still add up to wall time. Off by default: a few clock reads per step. The scopes also show in a
torch-profiler trace (`benchmarks/profile_digest.py`; off unless VLLM_CUSTOM_SCOPES_FOR_PROFILING=1).
`summarize` turns a trace into the numbers the serve benchmark reports beside its client-side latencies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from qwenvl_vllm.log import logger
from qwenvl_vllm.models import host_scopes
from qwenvl_vllm.models.encoder_stream import PROGRESS
from qwenvl_vllm.models.host_scopes import scope
from qwenvl_vllm.models.step_budget import PATCH_LAYERS_PER_MS
from qwenvl_vllm.settings import get_settings

if TYPE_CHECKING:
    from vllm.v1.core.sched.output import SchedulerOutput

FLUSH_EVERY_S = 1.0  # the trace must not add a file write to every step


def step_record(output: SchedulerOutput, started: float, ended: float, waiting: int, running: int) -> dict:
    decodes = sum(1 for n in output.num_scheduled_tokens.values() if n == 1)
    return {
        "t": round(started, 6),
        "sched_ms": round((ended - started) * 1000, 3),
        "decodes": decodes,
        "prefill_tokens": output.total_num_scheduled_tokens - decodes,
        "encoder_inputs": sum(len(ids) for ids in output.scheduled_encoder_inputs.values()),
        "waiting": waiting,
        "running": running,
    }


class StepTracing:
    """Mixin (before vLLM's scheduler class): records each step when the trace setting names a file."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        path = get_settings().step_trace_path
        self._trace_file = Path(path) if path else None
        self._trace: list[dict] = []
        self._flushed_at = time.monotonic()
        self._tower_work_seen = PROGRESS.tower_work
        host_scopes.TIMING = self._trace_file is not None
        host_scopes.SYNC_CHECK = host_scopes.TIMING and sync_check_available(get_settings().sync_check)
        if host_scopes.TIMING:
            host_scopes.time_collections()

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        started = time.monotonic()
        with scope("schedule"):
            output = super().schedule(throttle_prefills)
        if self._trace_file is not None:
            running, waiting = self.get_request_counts()
            record = step_record(output, started, time.monotonic(), waiting, running)
            if PROGRESS.active:  # encodes given to the model (side stream or slicer) and not finished yet
                record["pending_encodes"] = PROGRESS.launched - PROGRESS.finished_items()
                # the slicer's launches since the last record: the previous step's, as host_ms
                record["tower_work"] = PROGRESS.tower_work - self._tower_work_seen
                self._tower_work_seen = PROGRESS.tower_work
            record["host_ms"] = host_scopes.take_host_ms()
            if host_scopes.SYNC_CHECK:
                record["syncs"] = host_scopes.take_syncs()
            self._trace.append(record)
            if started - self._flushed_at >= FLUSH_EVERY_S:
                self.flush_trace()
        return output

    def update_from_output(self, scheduler_output, model_runner_output):
        with scope("update_from_output"):
            outputs = super().update_from_output(scheduler_output, model_runner_output)
        if self._trace and not self.get_num_unfinished_requests():
            self.flush_trace()  # the engine goes idle: no later step would write these
        return outputs

    def shutdown(self) -> None:
        self.flush_trace()
        super().shutdown()

    def flush_trace(self) -> None:
        if self._trace_file is None or not self._trace:
            return
        with self._trace_file.open("a") as f:
            f.writelines(json.dumps(record) + "\n" for record in self._trace)
        self._trace.clear()
        self._flushed_at = time.monotonic()


def sync_check_available(wanted: bool) -> bool:
    """QWENVL_VLLM_SYNC_CHECK where CUDA is (torch's sync debug mode is CUDA's); a warning if not."""
    if wanted and not torch.cuda.is_available():
        logger.warning("qwenvl-vllm: QWENVL_VLLM_SYNC_CHECK needs CUDA; no syncs are counted")
        return False
    return wanted


def load(path: Path) -> list[dict]:
    """Every step a trace file holds (none if it was never written)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def window(steps: list[dict], since: float, until: float) -> list[dict]:
    """The steps recorded in [since, until] (`time.monotonic()` seconds: one clock for every process)."""
    return [step for step in steps if since <= step["t"] <= until]


def summarize(steps: list[dict], long_ms: float = 100.0) -> dict:
    """Step-gap percentiles, and what the steps that began a gap over `long_ms` scheduled."""
    if len(steps) < 2:
        return {"steps": len(steps)}
    gaps = np.diff([step["t"] for step in steps]) * 1000
    long = [steps[i] | {"gap_ms": round(float(gap), 1)} for i, gap in enumerate(gaps) if gap > long_ms]
    return {
        "steps": len(steps),
        "gap_p50_ms": float(np.percentile(gaps, 50)),
        "gap_p99_ms": float(np.percentile(gaps, 99)),
        "gap_max_ms": float(gaps.max()),
        "decode_gap_p99_ms": decode_gap_p99(steps),
        "sched_p99_ms": float(np.percentile([step["sched_ms"] for step in steps], 99)),
        "host_ms_by_images_admitted": host_by_images_admitted(steps),
        "tower_ms_per_step": tower_ms_per_step(steps),
        f"gaps_over_{int(long_ms)}ms": long[:50],
    }


def decode_gap_p99(steps: list[dict]) -> float | None:
    """The engine's own inter-token p99: each decode waits the gap since the step before it, so every gap
    counts once per decode of the step it ends (a client's ITL p99 above this was added after the engine)."""
    weights = [step.get("decodes", 0) for step in steps[1:]]
    if not sum(weights):
        return None
    gaps = np.diff([step["t"] for step in steps]) * 1000
    return float(np.percentile(np.repeat(gaps, weights), 99))


def tower_ms_per_step(steps: list[dict]) -> dict[str, float] | None:
    """The slicer's tower work per step (`tower_work`), in H200 milliseconds at the tower's rate (what the
    budget meant, not a measurement): p50 / p90 / max; None without a slicer."""
    work = [step["tower_work"] for step in steps if "tower_work" in step]
    if not work:
        return None
    ms = np.array(work) / PATCH_LAYERS_PER_MS
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)), "max": float(ms.max())}


def host_by_images_admitted(steps: list[dict], field: str = "host_ms") -> dict[str, dict[str, float]]:
    """Mean host milliseconds per scope of a step's model work (held by the next record), with the gap
    that followed the step, by the number of new images the step admitted ("0", "1", "2", "3+"); with
    `field="syncs"` the synchronising calls per scope instead (QWENVL_VLLM_SYNC_CHECK)."""
    groups: dict[str, list[tuple[float, dict]]] = {}
    for step, after in zip(steps[:-1], steps[1:], strict=True):
        if field not in after:
            continue
        n = step["encoder_inputs"]
        gap = (after["t"] - step["t"]) * 1000
        groups.setdefault(str(n) if n < 3 else "3+", []).append((gap, after[field]))
    return {key: _mean_host(rows) for key, rows in sorted(groups.items())}


def _mean_host(rows: list[tuple[float, dict]]) -> dict[str, float]:
    means = {"steps": len(rows), "gap_ms": round(float(np.mean([gap for gap, _ in rows])), 3)}
    for name in sorted({name for _, host in rows for name in host}):
        means[name] = round(sum(host.get(name, 0.0) for _, host in rows) / len(rows), 3)
    return means

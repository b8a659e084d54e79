"""A torch-profiler window of one `vllm serve` side during one concurrency level (`serve_bench.py
--profile-side NAME --profile-concurrency C`), digested by `profile_digest.py` on the machine that ran it
(the raw trace stays there: tens of MB).

The window skips the level's first `DELAY_STEPS` engine steps (its start-up cohort) and covers the next
`PROFILED_STEPS`: round 8's c=64 levels (256 requests) ran ~400-480 steps and admitted their last image
near step 320, so the window sits in the steady state the ITL tail comes from. The profiler slows the host
(no shapes, no stacks unless `--profile-stack`, and its export stalls the engine where the window ends), so
profile a side of its own (`ours_sliced_profiled`) and compare the unprofiled ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests
from profile_digest import digest, load_events

DELAY_STEPS = 80
PROFILED_STEPS = 160
PROFILED_STEPS_WITH_STACK = 24  # every Python call an event: a far larger trace per step, a slower export
TRACE_DIR = Path("/tmp/qwenvl_serve_profile")
EXPORT_WAIT_S = 120  # the worker writes its trace when the window ends
SUMMARY_NAMES = 12  # host event names per trace in the benchmark's results (the digest file keeps 40)


def server_args(stack: bool = False) -> list[str]:
    config = {
        "profiler": "torch",
        "torch_profiler_dir": str(TRACE_DIR),
        "torch_profiler_with_stack": stack,
        "torch_profiler_dump_cuda_time_total": False,  # a key_averages() table at the end: slow
        "ignore_frontend": True,
        "delay_iterations": DELAY_STEPS,
        "max_iterations": PROFILED_STEPS_WITH_STACK if stack else PROFILED_STEPS,
    }
    return ["--profiler-config", json.dumps(config)]


SERVER_ENV = {"VLLM_CUSTOM_SCOPES_FOR_PROFILING": "1"}  # vLLM's and our named scopes in the trace


def start(url: str) -> str | None:
    """Starts the window; an error's text (the benchmark goes on without a profile)."""
    for stale in TRACE_DIR.glob("*"):
        stale.unlink()
    try:
        requests.post(f"{url}/start_profile", timeout=60).raise_for_status()
    except requests.RequestException as exc:
        return f"start_profile: {exc}"
    return None


def stop_and_digest(url: str, out: Path) -> dict:
    """Stops the profiler (it may have stopped itself), digests its traces into `out`; their step groups."""
    try:
        requests.post(f"{url}/stop_profile", timeout=300).raise_for_status()
    except requests.RequestException as exc:
        return {"error": f"stop_profile: {exc}"}
    deadline = time.monotonic() + EXPORT_WAIT_S
    while not list(TRACE_DIR.glob("*.json*")) and time.monotonic() < deadline:
        time.sleep(1)
    traces = sorted(TRACE_DIR.glob("*.json*"))
    if not traces:
        return {"error": f"no trace in {TRACE_DIR} (a level shorter than {DELAY_STEPS} steps?)"}
    try:
        digests = {trace.name: digest(load_events(trace)) for trace in traces}
    except Exception as exc:  # a broken or huge trace must not end the benchmark's other sides
        return {"error": f"digest: {type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(digests, indent=1) + "\n")
    # the names whose host time differs most between the kinds of step, for the log
    return {
        name: {**d["groups"], "host_names": d["host_names"][:SUMMARY_NAMES]} for name, d in digests.items()
    }

"""A torch-profiler window of one `vllm serve` side during one concurrency level (`serve_bench.py
--profile-side NAME --profile-concurrency C`), digested by `profile_digest.py` on the machine that ran it
(the raw trace stays there: tens of MB).

The window skips the level's first `DELAY_STEPS` engine steps (its start-up cohort) and covers the next
`PROFILED_STEPS`, so it sees the steady state the ITL tail comes from. The profiler slows the host a little
(no stacks, no shapes); the side's numbers at that level are reported but marked as profiled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests
from profile_digest import digest, load_events

DELAY_STEPS = 300
PROFILED_STEPS = 200
TRACE_DIR = Path("/tmp/qwenvl_serve_profile")
EXPORT_WAIT_S = 120  # the worker writes its trace when the window ends


def server_args() -> list[str]:
    config = {
        "profiler": "torch",
        "torch_profiler_dir": str(TRACE_DIR),
        "torch_profiler_with_stack": False,
        "ignore_frontend": True,
        "delay_iterations": DELAY_STEPS,
        "max_iterations": PROFILED_STEPS,
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
    digests = {}
    for trace in sorted(TRACE_DIR.glob("*.json*")):
        digests[trace.name] = digest(load_events(trace))
    out.write_text(json.dumps(digests, indent=1) + "\n")
    return {name: d["groups"] for name, d in digests.items()}

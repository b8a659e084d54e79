"""Named scopes of our engine-side code: each shows in a torch-profiler trace as `qwenvl: <name>` (vLLM's
`record_function_or_nullcontext`: on with VLLM_CUSTOM_SCOPES_FOR_PROFILING=1) and, while our step trace is
on in this process (`qwenvl_vllm.serving.step_trace` turns `TIMING` on), adds its host milliseconds to
`HOST_MS`, which the trace writes into the next step's record: where an engine step's host time goes, on
every traced `vllm serve` side, without a profiler. Only where the scheduler and the model share a process
(vLLM's uni-process executor, its default on one GPU); under a multi-process executor (`-tp 2`) the
model's scopes are not timed and the records hold the scheduler's alone. Python's garbage collections in
this process show as `gc` (`time_collections`): a long step with nothing else on the host is one of them,
or the GPU."""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from vllm.v1.utils import record_function_or_nullcontext

HOST_MS: defaultdict[str, float] = defaultdict(float)
TIMING = False  # set through the module (`host_scopes.TIMING = ...`) by the step trace


@contextmanager
def scope(name: str) -> Iterator[None]:
    with record_function_or_nullcontext(f"qwenvl: {name}"):
        if not TIMING:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            HOST_MS[name] += (time.perf_counter() - start) * 1000


class _CollectionTimer:
    """A gc callback summing the collections' host milliseconds while TIMING is on (apart from `HOST_MS`: a
    collection can run while that dict is being read)."""

    def __init__(self) -> None:
        self.started, self.ms = 0.0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif TIMING and self.started:
            self.ms += (time.perf_counter() - self.started) * 1000


_COLLECTION_TIMER = _CollectionTimer()


def time_collections() -> None:
    """Times this process's garbage collections into the step records (once per process)."""
    if _COLLECTION_TIMER not in gc.callbacks:
        gc.callbacks.append(_COLLECTION_TIMER)


def take_host_ms() -> dict[str, float]:
    """The host milliseconds per scope since the last call (rounded), and a fresh count."""
    taken = {name: round(ms, 3) for name, ms in HOST_MS.items()}
    HOST_MS.clear()
    collections, _COLLECTION_TIMER.ms = _COLLECTION_TIMER.ms, 0.0
    if collections:
        taken["gc"] = round(collections, 3)
    return taken

"""Named scopes of our engine-side code: each shows in a torch-profiler trace as `qwenvl: <name>` (vLLM's
`record_function_or_nullcontext`: on with VLLM_CUSTOM_SCOPES_FOR_PROFILING=1) and, while our step trace is
on in this process (`qwenvl_vllm.serving.step_trace` turns `TIMING` on), adds its host milliseconds to
`HOST_MS`, which the trace writes into the next step's record: where an engine step's host time goes, on
every traced `vllm serve` side, without a profiler. Only where the scheduler and the model share a process
(vLLM's uni-process executor, its default on one GPU); under a multi-process executor (`-tp 2`) the
model's scopes are not timed and the records hold the scheduler's alone. Python's garbage collections in
this process show as `gc` (`time_collections`): a long step with nothing else on the host is one of them,
or the GPU.

With `SYNC_CHECK` on as well (`QWENVL_VLLM_SYNC_CHECK`, through the step trace), each scope runs under
torch's CUDA sync debug mode and counts the synchronising calls made inside it (its own, not its inner
scopes') into `SYNCS`, which the trace writes as `syncs`. Why (twentieth visit): the steps that queue a new
image cost 5-7 ms more on slow hosts, 1.3 ms on a fast one, as if the host's work in them did not overlap
the GPU's; a sync there would do that. torch's mode sees its own synchronising calls (`.item()`, `.tolist()`
of device tensors, blocking copies, `nonzero`), not a driver's implicit wait in a pageable copy."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from vllm.v1.utils import record_function_or_nullcontext

HOST_MS: defaultdict[str, float] = defaultdict(float)
SYNCS: defaultdict[str, int] = defaultdict(int)
TIMING = False  # set through the module (`host_scopes.TIMING = ...`) by the step trace
SYNC_CHECK = False  # likewise, with TIMING, where CUDA is available
SYNC_MESSAGE = "called a synchronizing CUDA operation"  # torch's warning in its sync debug mode "warn"


@contextmanager
def scope(name: str) -> Iterator[None]:
    with record_function_or_nullcontext(f"qwenvl: {name}"):
        if not TIMING:
            yield
            return
        start = time.perf_counter()
        try:
            with counting_syncs(name) if SYNC_CHECK else nullcontext():
                yield
        finally:
            HOST_MS[name] += (time.perf_counter() - start) * 1000


@contextmanager
def counting_syncs(name: str) -> Iterator[None]:
    """Adds the synchronising CUDA calls this thread makes inside to `SYNCS[name]`. The debug mode is the
    process's: other threads' syncs meanwhile (vLLM's output thread) are dropped, other warnings pass on."""
    owner, previous = threading.get_ident(), torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():  # restores showwarning and the filters
        warnings.simplefilter("always")
        show = warnings.showwarning

        def count(message, category, filename, lineno, file=None, line=None) -> None:
            if SYNC_MESSAGE not in str(message):
                show(message, category, filename, lineno, file, line)
            elif threading.get_ident() == owner:
                SYNCS[name] += 1

        warnings.showwarning = count
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)


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


def take_syncs() -> dict[str, int]:
    """The synchronising calls per scope since the last call, and a fresh count."""
    taken = dict(SYNCS)
    SYNCS.clear()
    return taken


def take_host_ms() -> dict[str, float]:
    """The host milliseconds per scope since the last call (rounded), and a fresh count."""
    taken = {name: round(ms, 3) for name, ms in HOST_MS.items()}
    HOST_MS.clear()
    collections, _COLLECTION_TIMER.ms = _COLLECTION_TIMER.ms, 0.0
    if collections:
        taken["gc"] = round(collections, 3)
    return taken

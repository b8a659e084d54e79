"""Peak device memory, polled through NVML: vLLM's engine runs in a child process, so the parent's
torch.cuda counters see nothing; NVML sees every process on the GPU (the benchmark is alone on it)."""

from __future__ import annotations

import threading
import time


def _nvml():
    try:
        from vllm.third_party import pynvml
    except ImportError:  # pragma: no cover - older vLLM layouts
        import pynvml
    return pynvml


class PeakMemory:
    """`with PeakMemory() as mem:` ... `mem.peak_gib()`; `mem.reset()` starts a new window."""

    def __init__(self, device: int = 0, interval_s: float = 0.02) -> None:
        self.device, self.interval_s = device, interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.baseline_gib: float | None = None

    def __enter__(self) -> PeakMemory:
        try:
            nvml = _nvml()
            nvml.nvmlInit()
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self.device)
            self._used = lambda: nvml.nvmlDeviceGetMemoryInfo(self._handle).used
        except Exception:  # no NVML (CPU machine): report nothing rather than fail the benchmark
            return self
        self.baseline_gib = self._used() / 2**30
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._used())
            time.sleep(self.interval_s)

    def reset(self) -> None:
        self._peak = 0

    def peak_gib(self) -> float | None:
        return self._peak / 2**30 if self._thread else None

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

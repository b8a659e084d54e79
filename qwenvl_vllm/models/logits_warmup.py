"""The logits GEMM run once at every batch-size band before serving (`QWENVL_VLLM_WARM_LOGITS`, on).

Why (ninth visit, issue 12): under the paced slicing scheduler a few steps of the c=64 ramp take ~25 ms
more than their neighbours, the first time the batch's request count enters a new band of 8 (33, 41, 49,
57 requests), in three server runs; not Python's GC, not our host code. A code reading points at vLLM's V2
runner computing the logits outside any CUDA graph (`[requests, hidden] x [hidden, vocab]`): cuBLAS picks
its kernel by the row count, and CUDA loads a kernel at its first launch (lazy module loading), a stall the
host then waits through. vLLM warms the sampler at its largest batch only. Running the logits at both ends
of every band of 8 rows, up to `max_num_seqs`, on the first logits call (the engine's profiling run, whose
own call has `max_num_seqs` rows: no higher memory peak) loads those kernels before any request.
Measured (tenth visit, round-10 README): in the two c=64 step traces with it no step exceeds 34 ms
(the ninth visit's four: 6 steps each of 37-52 ms), and the client's ITL p99 under the paced slicer fell
from 36.0 to 30.6 ms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ROW_BAND = 8  # the long steps came as the request count entered each new band of 8 (gone when warmed by it)


def band_rows(max_rows: int) -> list[int]:
    """Both ends of every band of `ROW_BAND` rows, up to `max_rows`."""
    ends = {min(n, max_rows) for lo in range(1, max_rows + 1, ROW_BAND) for n in (lo, lo + ROW_BAND - 1)}
    return sorted(ends)


class LogitsWarmup:
    """Runs the logits at every band once, on the first call it sees."""

    def __init__(self, max_rows: int, enabled: bool) -> None:
        self.max_rows, self.pending = max_rows, enabled

    def before(self, compute: Callable[[torch.Tensor], object], hidden_states: torch.Tensor) -> None:
        if not self.pending:
            return
        self.pending = False
        for rows in band_rows(self.max_rows):
            compute(hidden_states.new_zeros(rows, hidden_states.shape[-1]))

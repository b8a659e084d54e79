"""The slicer's tower slices on a side CUDA stream, beside the step's language model instead of before it.

Why (issue 12, twenty-second visit): a slicer's step runs its tower slices, then its language model, on one
stream, so the step takes the sum: ~10 ms of tower, ~6 ms of a 1k-token prefill chunk and ~4 ms of decodes and
fixed cost at c=64, one image admitted per ~20-ms step, which is what holds the first wave's TTFT back. The
decodes' small kernels leave most SMs idle; on a side stream of lower priority the tower's kernels fill them
while the language model's kernels still go first (`QWENVL_VLLM_LM_STREAM_PRIORITY`, as for encode ahead).
The step budget learns the shorter steps and gives the tower more per step (models.step_budget).
Twenty-third visit: the admitting steps' median 20.2 to 18.1 ms, c=64 1.05x the req/s and a 3% lower
TTFT p99 than on one stream; small, since the tower and the prefill are both compute-bound.

What keeps it correct:
- the side stream waits for the main stream before each step's launches (the rows were made there);
- a step whose embeddings come from a job launched on the side stream waits for that job's event (the
  scheduler holds such prefills until then, so this should not wait; counted when it does);
- a job's tensors are made on the side stream; its rows (made on the main stream) and its output (read on
  the main stream) are recorded on the other stream, so the allocator reuses neither too early.
Without CUDA (or with `QWENVL_VLLM_SLICES_ON_SIDE_STREAM` off) everything stays on the current stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from qwenvl_vllm.log import RareEvents
from qwenvl_vllm.models.encoder_stream import PROGRESS, storage_key

if TYPE_CHECKING:
    from qwenvl_vllm.models.tower_slices import TowerJob


class SliceStream:
    """Where the slicer launches: a side stream (`stream`), or inline on the current stream (None)."""

    def __init__(self, stream: torch.cuda.Stream | None = None) -> None:
        self.stream = stream
        self._running: dict[int, TowerJob] = {}  # output storage -> its job, launched on the side stream
        self.waits_on_unfinished = RareEvents("a step waited for its image's tower slices on the side stream")

    @property
    def side(self) -> bool:
        return self.stream is not None and PROGRESS.scheduling

    def adopt(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        """A job queued for the side stream: its rows are read there, its output on the main stream."""
        if self.side:
            rows.record_stream(self.stream)
            out.record_stream(torch.cuda.current_stream(self.stream.device))

    @contextmanager
    def launching(self) -> Iterator[None]:
        """Where a job's slices run and its tensors are made (and freed): after the main stream's work."""
        if not self.side:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        with torch.cuda.stream(self.stream):
            yield

    def launched(self, job: TowerJob) -> None:
        """A job's last slice was launched (under `launching`)."""
        if self.side and job.event is not None:
            self._running[job.key] = job

    def wait_for(self, embeddings: Iterable[torch.Tensor]) -> None:
        """The current stream waits for the side-stream jobs these embeddings come from."""
        if not self._running:
            return
        for key in [k for k, job in self._running.items() if job.query()]:
            del self._running[key]
        main = torch.cuda.current_stream(self.stream.device)
        for job in {id(j): j for j in (self._running.get(storage_key(e)) for e in embeddings) if j}.values():
            self.waits_on_unfinished.note()
            main.wait_event(job.event)

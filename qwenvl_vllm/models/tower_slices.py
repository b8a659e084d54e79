"""The vision tower spread over engine steps: a bounded slice of its work before each step's language model.

Why (issue 12, seventh visit): a step takes the sum of its GPU work, so a step that encodes one 1024x768
image makes its decodes wait for the whole tower (~15 ms on an H200), on a side stream or not. Under a
slicing scheduler (`qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedAsyncScheduler`) an image's encode
is queued when vLLM schedules it, and each step launches the next slices of the queue before its language
model: the work that brings the step to `QWENVL_VLLM_STEP_TARGET_MS` (models.step_budget), or with the target
off about `QWENVL_VLLM_TOWER_STEP_PATCH_LAYERS` patches x blocks in all (`QWENVL_VLLM_TOWER_BACKLOG_SCALE`
times either while requests wait in the scheduler). The scheduler holds the image's tokens until its encode
has finished (`PROGRESS`); a step that needs embeddings whose encode is still queued finishes the queue up
to them first. Everything runs on the model's stream in order, so no event is needed between slices, and
the outputs vLLM caches are written by the last slice.
Until a slicing scheduler exists in this process (the engine's profiling runs), encodes run whole at once.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Generator, Iterable

import torch

from qwenvl_vllm.models.encoder_stream import PROGRESS, storage_key
from qwenvl_vllm.models.host_scopes import scope
from qwenvl_vllm.models.slice_stream import SliceStream
from qwenvl_vllm.models.step_budget import StepBudget
from qwenvl_vllm.settings import SMALL_BATCH_DECODES

SLICES_PER_STEP = 5  # a step's budget in about this many slices: fine enough to stay near the budget
Slices = Generator[None, None, torch.Tensor]  # each next() launches one slice; its value is the output


# What a tower spread over later steps would get wrong: an encoder-cache transfer exports the outputs when
# they are returned (still empty here), and LoRA adapters are set per step, not per encode.
UNSLICEABLE = (("ec_transfer_config", "encoder-cache transfer"), ("lora_config", "LoRA"))


def check_sliceable(vllm_config: object) -> None:
    for name, what in UNSLICEABLE:
        if getattr(vllm_config, name, None) is not None:
            raise ValueError(f"the slicing scheduler (tower spread over steps) does not support {what}")


def run_to_end(slices: Slices) -> torch.Tensor:
    while True:
        try:
            next(slices)
        except StopIteration as stop:
            return stop.value


class TowerJob:
    """One item's encode: its slices, the tensor its output goes to, and whether it has finished. The job
    holds its output weakly: once vLLM lets go of it, nothing is left to compute and the job ends without
    launching more. (vLLM keeps a finished or aborted request's encoder output until the cache needs the
    space, so an aborted request's queued encode usually still runs: bounded work, not a leak.)"""

    def __init__(self, slices: Slices, out: torch.Tensor, slice_cost: int) -> None:
        self.slices, self.slice_cost, self.key = slices, slice_cost, storage_key(out)
        self._out = weakref.ref(out)
        self.launched = False  # every slice launched, or the job abandoned
        self.event: torch.cuda.Event | None = None

    def launch_next(self) -> int:
        """Launches the next slice; the work launched (0 for an abandoned job)."""
        out = self._out()
        if out is None:
            self.slices.close()
            self.launched = True
            return 0
        try:
            next(self.slices)
        except StopIteration as stop:
            out.copy_(stop.value)
            self.launched = True
            if out.is_cuda:
                self.event = torch.cuda.Event()
                self.event.record()
        return self.slice_cost

    def query(self) -> bool:
        """Finished on the device (what the scheduler's holds wait for)."""
        return self.launched and (self.event is None or self.event.query())


def step_budget(
    fixed: int,
    backlog_scale: float,
    target: StepBudget | None,
    tokens: int,
    admits: bool = False,
    small_scale: float = 1.0,
) -> int:
    """A step's tower work in patches x blocks: the target's room for a step of `tokens` (that queued a new
    encode if `admits`), or the fixed budget; either times `backlog_scale` while requests wait, and times
    `small_scale` while the batch is small (also benchmarks/sched_sim.py's rule)."""
    scale = backlog_scale if PROGRESS.backlog else 1.0
    if PROGRESS.decodes <= SMALL_BATCH_DECODES:
        scale *= small_scale
    return target.patch_layers(tokens, scale, admits) if target else int(fixed * scale)


class TowerSlicer:
    """The queue of encodes; `before_lm` is called once per step, before the language model's forward."""

    def __init__(
        self,
        patch_layers_per_step: int,
        backlog_scale: float = 1.0,
        step_budget: StepBudget | None = None,
        small_scale: float = 1.0,
        stream: SliceStream | None = None,
    ) -> None:
        self.budget, self.backlog_scale, self.step_budget = patch_layers_per_step, backlog_scale, step_budget
        self.small_scale = small_scale
        self.stream = stream or SliceStream()
        self._queue: deque[TowerJob] = deque()
        self._jobs: dict[int, TowerJob] = {}  # output storage -> its job, until launched
        self._admitted = False  # a job was queued since the last step's launch
        PROGRESS.active = True

    def submit(
        self, slices: Slices, out: torch.Tensor, slice_cost: int, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Queues a job made under `self.stream.launching()`; `rows`: its input, made on the main stream."""
        job = TowerJob(slices, out, slice_cost)
        if not PROGRESS.scheduling:
            while not job.launched:
                job.launch_next()
        else:
            if rows is not None:
                self.stream.adopt(rows, out)
            self._queue.append(job)
            self._jobs[job.key] = job
            self._admitted = True
            weakref.finalize(out, self._forget, job)  # its storage may be reused by another tensor
        return out

    def job_of(self, output: torch.Tensor) -> TowerJob | None:
        return self._jobs.get(storage_key(output))

    def before_lm(self, embeddings: Iterable[torch.Tensor], tokens: int = 0) -> None:
        """`tokens`: the step's scheduled tokens (what a step-time target leaves the tower room by)."""
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return
        # the step-time target only once a scheduler serves: the engine's profiling runs teach it nothing
        targeted = self.step_budget if PROGRESS.scheduling else None
        embeddings = tuple(embeddings)  # read twice
        budget = step_budget(
            self.budget, self.backlog_scale, targeted, tokens, self._admitted, self.small_scale
        )
        self._admitted = False
        with scope("finish_through"):
            with self.stream.launching():
                spent = self._finish_through(embeddings)
            self.stream.wait_for(embeddings)
        with scope("tower_slices"), self.stream.launching():
            while self._queue and (spent == 0 or spent + self._queue[0].slice_cost <= budget):
                spent += self._launch_front()
        PROGRESS.tower_work += spent
        if targeted:
            targeted.launched(spent)

    def _finish_through(self, embeddings: Iterable[torch.Tensor]) -> int:
        """Launches every queued slice up to the last job these embeddings come from; the work launched."""
        needed = {id(job) for job in (self._jobs.get(storage_key(e)) for e in embeddings) if job is not None}
        spent = 0
        while needed and self._queue:
            job = self._queue[0]
            needed.discard(id(job))
            while not job.launched:
                spent += self._launch_front()
        return spent

    def _launch_front(self) -> int:
        job = self._queue[0]
        launched = job.launch_next()
        if job.launched:
            self._queue.popleft()
            self._forget(job)
            self.stream.launched(job)
        return launched

    def _forget(self, job: TowerJob) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

"""Encode-ahead schedulers: an image is encoded in a step before the one that prefills its tokens.

vLLM schedules an image's encoder input in the step whose tokens cover the image, so the step's decodes wait
for the tower. Here, when vLLM schedules a new encoder input whose placeholder starts after the tokens
already computed, the step only prefills the text before the placeholder; the image is encoded in that step
on the tower's own CUDA stream (`qwenvl_vllm.models.encoder_stream`), alongside the language model. Its tokens
are held back until the encode has finished (at most `MAX_HOLD_S`), then prefilled from vLLM's encoder cache
as usual. Scheduling is otherwise vLLM's own: budgets, the encoder cache's accounting, chunked prefill,
preemption and aborts are unchanged.

Use: `vllm serve ... --scheduler-cls qwenvl_vllm.serving.encode_ahead.EncodeAheadAsyncScheduler` (vLLM's
default async scheduling); `EncodeAheadScheduler` with `--no-async-scheduling`. The model puts its tower on
a side stream when it sees one of these schedulers in the config. `EncodeAheadPacedAsyncScheduler` also
caps the encoder tokens per step (`qwenvl_vllm.serving.scheduler`), so that one side-stream encode
competes with fewer decode steps at a time. `EncodeAheadGraphedAsyncScheduler` also keeps every step
within the language model's CUDA graphs (`qwenvl_vllm.serving.step_graphs`). `EncodeAheadSlicedAsyncScheduler`
has Qwen2-VL spread each image's tower over the following steps, a bounded slice per step
(`qwenvl_vllm.models.tower_slices`), in graphed steps of at most 1024 tokens;
`EncodeAheadSlicedPacedAsyncScheduler` admits one image per step, in 1536-token steps.
"""

from __future__ import annotations

import time

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from qwenvl_vllm.log import RareEvents, logger
from qwenvl_vllm.models.encoder_stream import PROGRESS
from qwenvl_vllm.serving.scheduler import EncoderPacing
from qwenvl_vllm.serving.step_trace import StepTracing
from qwenvl_vllm.settings import get_settings

SLICED_STEP_TOKENS = 1024  # a 1024x768 image's prefill (999 tokens) in one step of ~5.5 ms on an H200
SLICED_PACED_STEP_TOKENS = 1536  # ... beside up to ~500 decodes and text
MAX_HOLD_S = 1.0  # a safety bound, not a knob: a hold normally ends with its encode (tens of ms)
# Under the slicing scheduler a hold lasts while the queue ahead drains (~1-2 s for a cohort of 64 images at
# c=64); the bound only keeps a hold from lasting forever if the scheduler's count of encodes and the
# model's ever disagreed
SLICED_MAX_HOLD_S = 10.0
# items vLLM's runner puts into the encoder cache itself: the model never encodes them, so they get no ordinal
NOT_ENCODED_MODALITIES = ("prompt_embeds",)


def _prompt_computed(request: Request) -> bool:
    """Past its prompt: it decodes (the holds protect its tokens) and is no longer being admitted."""
    return request.num_computed_tokens >= request.num_prompt_tokens


class _EncodeAhead:
    """Mixin over vLLM's Scheduler: defers each new image's tokens to a later step than its encode."""

    uses_encoder_stream = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        PROGRESS.reset()  # the engine's profiling runs encoded dummy items before we existed
        PROGRESS.scheduling = True
        self._ordinal = 0
        self._issued: dict[str, tuple[int, float]] = {}  # mm_hash -> (launch ordinal, time)
        self.expired_holds = RareEvents(f"an image's encode outlasted its {self._hold_bound()} s hold")
        logger.info(
            "qwenvl-vllm: encoding images ahead of their prefill; holding tokens until encoded: %s",
            "on" if PROGRESS.active else "off (no side-stream encoder in this process: deferral only)",
        )

    def _holds_now(self) -> bool:
        """Whether this step holds back tokens of images still encoding."""
        return True

    def _hold_bound(self) -> float:
        return MAX_HOLD_S  # read when used: tests shorten it

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        self._holding = self._holds_now()
        output = super().schedule(throttle_prefills)
        now = time.monotonic()
        for req_id, input_ids in output.scheduled_encoder_inputs.items():
            features = self.requests[req_id].mm_features
            for i in input_ids:
                if features[i].modality in NOT_ENCODED_MODALITIES:
                    continue
                self._ordinal += 1
                self._issued[features[i].identifier] = (self._ordinal, now)
        for mm_hash in list(self._issued):
            self._in_flight(mm_hash)  # forgets what has finished (most never reach a hold check)
        return output

    def _in_flight(self, mm_hash: str) -> bool:
        issued = self._issued.get(mm_hash)
        if issued is None:
            return False
        ordinal, at = issued
        finished = not PROGRESS.active or ordinal <= PROGRESS.finished_items()
        if not finished and time.monotonic() - at <= self._hold_bound():
            return True
        if not finished:
            self.expired_holds.note()
        del self._issued[mm_hash]
        return False

    def _deferral_point(self, request: Request, fresh: list[int], done: int, end: int) -> int | None:
        """Where this step's tokens must stop: before the first placeholder encoded now or still encoding."""
        for i, feature in enumerate(request.mm_features):
            start = feature.mm_position.offset
            if start == end > done and not self._encoded_or_encoding(feature.identifier):
                # a text chunk ending right at an image not encoded yet (vLLM could not schedule its encode):
                # one token short, so that a later step starts before the image and encodes it ahead
                # (a step starting at the image would encode and use it at once); a running request with
                # only that token left waits for the encode to be scheduled
                if end - 1 > done:
                    return end - 1
                if request.status == RequestStatus.RUNNING:
                    return done
            if start < done or start >= end:
                continue  # already being consumed, or beyond this step
            if i in fresh:
                # start == done: deferring would schedule no token and so no encode; encode and use it now
                return start if start > done else None
            if self._holding and self._in_flight(feature.identifier):
                # 0 tokens for a waiting request would stop vLLM from scheduling the waiting queue
                running = request.status == RequestStatus.RUNNING
                return start if start > done or running else None
        return None

    def _encoded_or_encoding(self, mm_hash: str) -> bool:
        # `cached` keeps freeable entries too: still encoded
        return mm_hash in self.encoder_cache_manager.cached or mm_hash in self._issued

    def _try_schedule_encoder_inputs(
        self,
        request: Request,
        num_computed_tokens: int,
        num_new_tokens: int,
        encoder_compute_budget: int,
        shift_computed_tokens: int = 0,
    ) -> tuple[list[int], int, int, list[int]]:
        fresh, num_new_tokens, budget, external = super()._try_schedule_encoder_inputs(
            request, num_computed_tokens, num_new_tokens, encoder_compute_budget, shift_computed_tokens
        )
        done = num_computed_tokens + shift_computed_tokens
        stop = self._deferral_point(request, fresh, done, done + num_new_tokens)
        if stop is not None:
            num_new_tokens = min(num_new_tokens, stop - done)
        return fresh, num_new_tokens, budget, external


class EncodeAheadScheduler(StepTracing, _EncodeAhead, Scheduler):
    pass


class EncodeAheadAsyncScheduler(StepTracing, _EncodeAhead, AsyncScheduler):
    pass


class EncodeAheadPacedScheduler(StepTracing, EncoderPacing, _EncodeAhead, Scheduler):
    pass


class EncodeAheadPacedAsyncScheduler(StepTracing, EncoderPacing, _EncodeAhead, AsyncScheduler):
    pass


class EncodeAheadGraphedAsyncScheduler(EncodeAheadAsyncScheduler):
    """Encode ahead, steps of at most 2048 tokens, each a CUDA graph (`qwenvl_vllm.serving.step_graphs`)."""

    step_tokens = 2048


class _TowerSlicing:
    """Mixin over `_EncodeAhead`: the model spreads each image's tower over the following steps
    (`qwenvl_vllm.models.tower_slices`), and tokens are held only while some request decodes: with no
    decode to protect, the step that needs an image finishes its encode first."""

    slices_tower = True

    # The queue advances with every step and tokens are held only while steps run (some request decodes),
    # so a hold ends when the queue ahead of it has run; expiring sooner would make its step finish that
    # whole queue at once.
    def _hold_bound(self) -> float:
        return SLICED_MAX_HOLD_S

    def _holds_now(self) -> bool:
        return any(_prompt_computed(r) for r in self.running)

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        output = super().schedule(throttle_prefills)
        PROGRESS.decodes = sum(1 for r in self.running if _prompt_computed(r))
        PROGRESS.backlog = self._backlog(PROGRESS.decodes)  # the slicer does more while it is set
        return output

    def _backlog(self, decodes: int) -> bool:
        return len(self.waiting) > 0  # requests this step could not take


class EncodeAheadSlicedScheduler(StepTracing, _TowerSlicing, _EncodeAhead, Scheduler):
    step_tokens = SLICED_STEP_TOKENS


class EncodeAheadSlicedAsyncScheduler(StepTracing, _TowerSlicing, _EncodeAhead, AsyncScheduler):
    """Encode ahead with the tower in slices over the steps, each step a CUDA graph of at most
    `step_tokens` tokens (`qwenvl_vllm.serving.step_graphs`)."""

    step_tokens = SLICED_STEP_TOKENS


class _SlicedPacing(EncoderPacing):
    """Encoder pacing for the slicing schedulers: at most a step's tokens of new images per step (one
    1024x768 image), or `QWENVL_VLLM_ENCODER_STEP_TOKENS` if lower. A step that admits images pays host
    work per image (~8 ms each in round 8's traces), and one image's prefill fills most of a step anyway.
    Steps of 1536 tokens hold that prefill beside 64 decodes (1024 would split it over two steps at c=64),
    and the tower's budget grows while `QWENVL_VLLM_TOWER_BACKLOG_REQUESTS` (12) requests have not computed
    their prompts (vLLM's waiting queue alone is mostly empty: requests enter it only briefly)."""

    step_tokens = SLICED_PACED_STEP_TOKENS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._backlog_requests = get_settings().tower_backlog_requests

    def _encoder_step_cap(self) -> int:
        step = min(self.step_tokens, self.max_num_scheduled_tokens)  # the user may cap steps lower
        cap = super()._encoder_step_cap()
        return min(cap, step) if cap > 0 else step

    def _backlog(self, decodes: int) -> bool:
        # requests whose prompt is not computed yet (new, or preempted and recomputing: their images need
        # the tower again); those parked in vLLM's skipped-waiting queue (grammar, remote KV) are not counted
        admitting = len(self.running) - decodes
        return admitting + len(self.waiting) >= self._backlog_requests


class EncodeAheadSlicedPacedScheduler(StepTracing, _SlicedPacing, _TowerSlicing, _EncodeAhead, Scheduler):
    pass


class EncodeAheadSlicedPacedAsyncScheduler(
    StepTracing, _SlicedPacing, _TowerSlicing, _EncodeAhead, AsyncScheduler
):
    """The slicing scheduler admitting one image per step, in 1536-token steps."""

"""Schedulers that pace the vision encoder: a bounded number of encoder tokens per engine step.

Why: vLLM 0.26 lets one step encode as many images as `max_num_batched_tokens` allows (its encoder budget
equals the token budget and is not separately settable), and every decode in that step waits for all of
them; with 1024x768 images that is ~8 images, >100 ms. Here each step stops admitting encoder inputs once
`QWENVL_VLLM_ENCODER_STEP_TOKENS` (in the LM tokens the encoder outputs) are scheduled, while the token
budget for prefill and decode stays as configured, so the tower's work is spread over more, shorter steps.
The cap is soft: the first request to encode in a step gets vLLM's whole budget, so an item larger than the
cap (a 16k-token image) is still scheduled, alone. (A fixed lower budget cannot do this: it must stay above
the largest possible item, 16384 tokens for Qwen2-VL's default max_pixels, which is above vLLM's own.)

Use: `vllm serve ... --scheduler-cls qwenvl_vllm.serving.scheduler.EncoderPacedAsyncScheduler` (vLLM's
default async scheduling); `EncoderPacedScheduler` with `--no-async-scheduling`.
"""

from __future__ import annotations

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request

from qwenvl_vllm.log import logger
from qwenvl_vllm.serving.step_trace import StepTracing
from qwenvl_vllm.settings import get_settings


def step_allowance(budget_left: int, step_cap: int, spent: int) -> int:
    """Encoder tokens one request may still use in this step: vLLM's remaining budget for the step's first
    encoding request, then what is left under the cap (0 cap: vLLM's budget, no pacing)."""
    if step_cap <= 0 or spent == 0:
        return budget_left
    return min(budget_left, max(step_cap - spent, 0))


class EncoderPacing:
    """Mixin (before vLLM's scheduler class): counts the encoder tokens scheduled in the current step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._step_spent = 0
        self._step_cap = self._encoder_step_cap()
        logger.info(
            "qwenvl-vllm: encoder tokens per step capped at %d (soft; vLLM's budget: %d)",
            self._step_cap,
            self.max_num_encoder_input_tokens,
        )

    def _encoder_step_cap(self) -> int:
        return get_settings().encoder_step_tokens

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        self._step_spent = 0
        return super().schedule(throttle_prefills)

    def _try_schedule_encoder_inputs(
        self,
        request: Request,
        num_computed_tokens: int,
        num_new_tokens: int,
        encoder_compute_budget: int,
        shift_computed_tokens: int = 0,
    ) -> tuple[list[int], int, int, list[int]]:
        allowed = step_allowance(encoder_compute_budget, self._step_cap, self._step_spent)
        inputs, new_tokens, left, external = super()._try_schedule_encoder_inputs(
            request, num_computed_tokens, num_new_tokens, allowed, shift_computed_tokens
        )
        used = allowed - left
        self._step_spent += used
        return inputs, new_tokens, encoder_compute_budget - used, external


class EncoderPacedScheduler(StepTracing, EncoderPacing, Scheduler):
    pass


class EncoderPacedAsyncScheduler(StepTracing, EncoderPacing, AsyncScheduler):
    pass


class TracedAsyncScheduler(StepTracing, AsyncScheduler):
    """vLLM's default (async) scheduler, unchanged, with the step trace when it is set."""

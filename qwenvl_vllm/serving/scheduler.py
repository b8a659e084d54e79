"""Schedulers that pace the vision encoder: a bounded number of encoder tokens per engine step.

Why: vLLM 0.26 lets one step encode as many images as `max_num_batched_tokens` allows (its encoder budget
equals the token budget and is not separately settable), and every decode in that step waits for all of
them; with 1024x768 images that is ~8 images, >100 ms. Here the encoder budget per step is its own setting
(`QWENVL_VLLM_ENCODER_STEP_TOKENS`, in the LM tokens the encoder outputs), while the token budget for
prefill and decode stays as configured, so the tower's work is spread over more, shorter steps. The budget
never drops below the largest single item, which would otherwise never be scheduled.

Use: `vllm serve ... --scheduler-cls qwenvl_vllm.serving.scheduler.EncoderPacedAsyncScheduler` (vLLM's
default async scheduling); `EncoderPacedScheduler` with `--no-async-scheduling`.
"""

from __future__ import annotations

from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.encoder_budget import MultiModalBudget
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from qwenvl_vllm.log import logger
from qwenvl_vllm.settings import get_settings


def paced_encoder_budget(configured: int, step_tokens: int, largest_item: int) -> int:
    """Encoder tokens per step: the setting, but at least one whole largest item, at most vLLM's own."""
    if configured <= 0 or step_tokens <= 0:
        return configured
    return min(configured, max(step_tokens, largest_item))


class _EncoderPacing:
    """Mixin: after vLLM's scheduler is built, lower its per-step encoder budget."""

    def _pace_encoder(self, mm_registry: object) -> None:
        configured = self.max_num_encoder_input_tokens
        if configured <= 0:  # no multimodal inputs
            return
        budget = MultiModalBudget(self.vllm_config, mm_registry)
        largest = max(budget.mm_max_toks_per_item.values(), default=0)
        self.max_num_encoder_input_tokens = paced_encoder_budget(
            configured, get_settings().encoder_step_tokens, largest
        )
        logger.info(
            "qwenvl-vllm: encoder budget %d tokens per step (vLLM's: %d, largest item: %d)",
            self.max_num_encoder_input_tokens,
            configured,
            largest,
        )


class EncoderPacedScheduler(_EncoderPacing, Scheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pace_encoder(kwargs.get("mm_registry", MULTIMODAL_REGISTRY))


class EncoderPacedAsyncScheduler(_EncoderPacing, AsyncScheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pace_encoder(kwargs.get("mm_registry", MULTIMODAL_REGISTRY))

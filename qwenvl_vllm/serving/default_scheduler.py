"""`QWENVL_VLLM_SCHEDULER=<name>`: one of our schedulers as the engine's default for Qwen2-VL, set by the
plugin's config hook where the user passed no `--scheduler-cls` (then no long class path is needed).

The hook runs before vLLM decides whether async scheduling is on (and platforms may still turn it off), so
it configures a dispatcher: a class that the engine core builds as its scheduler and that returns the
family's async or sync variant as async scheduling turned out. Left alone (with a log line saying why):
a user's own scheduler, pooling models, unchunked prefill, multi-process executors (our schedulers see
the model's encodes only in the same process), LoRA, encoder-cache transfer and speculative decoding.
"""

from __future__ import annotations

from qwenvl_vllm.log import logger
from qwenvl_vllm.models.tower_slices import UNSLICEABLE
from qwenvl_vllm.serving import encode_ahead as ea
from qwenvl_vllm.settings import get_settings

SHARED_ATTRIBUTES = ("step_tokens", "slices_tower", "uses_encoder_stream")  # read from the configured class


class _Either:
    """Built by vLLM's engine core as its scheduler: an instance of `async_variant` when async scheduling
    is on, else of `sync_variant`; the variants' class attributes are copied for the plugin's checks."""

    sync_variant: type
    async_variant: type

    def __init_subclass__(cls) -> None:
        for name in SHARED_ATTRIBUTES:
            if hasattr(cls.async_variant, name):
                setattr(cls, name, getattr(cls.async_variant, name))

    def __new__(cls, *args: object, vllm_config: object, **kwargs: object):
        on = vllm_config.scheduler_config.async_scheduling
        variant = cls.async_variant if on else cls.sync_variant
        return variant(*args, vllm_config=vllm_config, **kwargs)


class SlicedScheduler(_Either):
    sync_variant, async_variant = ea.EncodeAheadSlicedScheduler, ea.EncodeAheadSlicedAsyncScheduler


class SlicedPacedScheduler(_Either):
    sync_variant, async_variant = ea.EncodeAheadSlicedPacedScheduler, ea.EncodeAheadSlicedPacedAsyncScheduler


SCHEDULERS = {"sliced": SlicedScheduler, "sliced_paced": SlicedPacedScheduler}


def apply_default_scheduler(vllm_config: object) -> None:
    name = get_settings().scheduler
    if name is None:
        return
    if name not in SCHEDULERS:
        raise ValueError(f"QWENVL_VLLM_SCHEDULER={name!r}: expected one of {sorted(SCHEDULERS)}")
    reason = _reason_to_leave(vllm_config)
    if reason:
        logger.info("qwenvl-vllm: QWENVL_VLLM_SCHEDULER=%s not applied: %s", name, reason)
        return
    cls = SCHEDULERS[name]
    vllm_config.scheduler_config.scheduler_cls = f"{cls.__module__}.{cls.__qualname__}"
    logger.info("qwenvl-vllm: scheduler %s (QWENVL_VLLM_SCHEDULER=%s)", cls.__qualname__, name)


def _reason_to_leave(vllm_config: object) -> str | None:
    if vllm_config.scheduler_config.scheduler_cls is not None:
        return "--scheduler-cls given"
    if vllm_config.model_config.runner_type != "generate":
        return f"a {vllm_config.model_config.runner_type} model"
    if not vllm_config.scheduler_config.enable_chunked_prefill:
        return "chunked prefill is off (its steps are capped)"
    backend = vllm_config.parallel_config.distributed_executor_backend
    if backend not in (None, "uni"):
        return f"the {backend} executor runs the model in other processes"
    for attribute, what in (*UNSLICEABLE, ("speculative_config", "speculative decoding")):
        if getattr(vllm_config, attribute, None) is not None:
            return f"{what} is configured"
    return None

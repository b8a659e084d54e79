"""`QWENVL_VLLM_SCHEDULER`: the plugin's config hook makes one of our schedulers the engine's default for
Qwen2-VL (CPU: vLLM's real config construction and scheduler classes)."""

from __future__ import annotations

import pytest
from helpers import scheduler_for

from qwenvl_vllm.serving import encode_ahead as ea
from qwenvl_vllm.serving.default_scheduler import SlicedPacedScheduler

PACED_PATH = "qwenvl_vllm.serving.default_scheduler.SlicedPacedScheduler"


def _config(ckpt: str, scheduler_cls: str | None = None, backend: str | None = None, chunked: bool = True):
    """vLLM's engine config as `vllm serve` builds it (the hook runs in VllmConfig's construction)."""
    from vllm.config import DeviceConfig, ModelConfig, ParallelConfig, SchedulerConfig, VllmConfig

    sched = SchedulerConfig(
        max_num_batched_tokens=8192,
        max_model_len=4096,
        is_encoder_decoder=False,
        scheduler_cls=scheduler_cls,
        enable_chunked_prefill=chunked,
    )
    return VllmConfig(
        model_config=ModelConfig(model=ckpt, max_model_len=4096),
        scheduler_config=sched,
        parallel_config=ParallelConfig(distributed_executor_backend=backend),
        device_config=DeviceConfig(device="cpu"),
    )


def test_unset_leaves_vllms_scheduler(ckpt: str, monkeypatch) -> None:
    monkeypatch.delenv("QWENVL_VLLM_SCHEDULER", raising=False)
    assert _config(ckpt).scheduler_config.scheduler_cls is None


def test_a_name_sets_the_dispatcher_and_its_step_cap(ckpt: str, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_SCHEDULER", "sliced_paced")
    config = _config(ckpt)
    assert config.scheduler_config.scheduler_cls == PACED_PATH
    assert (
        config.scheduler_config.get_scheduler_cls() is SlicedPacedScheduler
    )  # as the engine core resolves it
    assert config.scheduler_config.max_num_scheduled_tokens == 1536  # the step cap follows the choice
    assert config.compilation_config.max_cudagraph_capture_size == 1536


def test_a_users_scheduler_is_kept(ckpt: str, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_SCHEDULER", "sliced_paced")
    mine = "vllm.v1.core.sched.async_scheduler.AsyncScheduler"
    assert _config(ckpt, mine).scheduler_config.scheduler_cls == mine


def test_a_multi_process_executor_keeps_vllms_scheduler(ckpt: str, monkeypatch) -> None:
    # our schedulers see the model's encodes only in their own process
    monkeypatch.setenv("QWENVL_VLLM_SCHEDULER", "sliced_paced")
    assert _config(ckpt, backend="mp").scheduler_config.scheduler_cls is None


def test_unchunked_prefill_keeps_vllms_scheduler(ckpt: str, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_SCHEDULER", "sliced_paced")
    assert _config(ckpt, chunked=False).scheduler_config.scheduler_cls is None


def test_an_unknown_name_is_a_clear_error(ckpt: str, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_SCHEDULER", "fastest")
    with pytest.raises(ValueError, match=r"QWENVL_VLLM_SCHEDULER='fastest'.*sliced_paced"):
        _config(ckpt)


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_the_dispatcher_builds_the_variant_async_scheduling_asks_for(ckpt: str, async_scheduling) -> None:
    model = scheduler_for(ckpt, ea.EncodeAheadSlicedPacedAsyncScheduler, 16384)
    model.vllm_config.scheduler_config.async_scheduling = async_scheduling
    built = SlicedPacedScheduler(
        vllm_config=model.vllm_config,
        kv_cache_config=model.kv_cache_config,
        structured_output_manager=model.structured_output_manager,
        block_size=16,
    )
    variants = {True: ea.EncodeAheadSlicedPacedAsyncScheduler, False: ea.EncodeAheadSlicedPacedScheduler}
    assert type(built) is variants[async_scheduling]
    for name in ("step_tokens", "slices_tower", "uses_encoder_stream"):  # the plugin reads the dispatcher's
        assert getattr(SlicedPacedScheduler, name) == getattr(type(built), name)

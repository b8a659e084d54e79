"""A scheduler that declares `step_tokens` (encode ahead, graphed) gets its step cap and CUDA-graph size from
the plugin's config hook when vLLM builds the engine config; what the user set is kept."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qwenvl_vllm.settings import GRAPH_TOKENS

GRAPHED = "qwenvl_vllm.serving.encode_ahead.EncodeAheadGraphedAsyncScheduler"
AHEAD = "qwenvl_vllm.serving.encode_ahead.EncodeAheadAsyncScheduler"


def _config(
    ckpt: str,
    scheduler_cls: str | None,
    scheduled: int | None = None,
    graphs: int | None = None,
    chunked: bool = True,
    batched: int = 8192,
):
    """vLLM's engine config as `vllm serve` builds it (the hook runs in VllmConfig's construction)."""
    from vllm.config import CompilationConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig

    model = ModelConfig(model=ckpt, max_model_len=4096)
    sched = SchedulerConfig(
        max_num_batched_tokens=batched,
        max_num_scheduled_tokens=scheduled,
        max_model_len=4096,
        is_encoder_decoder=False,
        scheduler_cls=scheduler_cls,
        enable_chunked_prefill=chunked,
    )
    config = VllmConfig(
        model_config=model,
        scheduler_config=sched,
        compilation_config=CompilationConfig(max_cudagraph_capture_size=graphs),
        device_config=DeviceConfig(device="cpu"),
    )
    return config.scheduler_config, config.compilation_config


@pytest.mark.parametrize(
    "cls,tokens",
    [
        (GRAPHED, 2048),
        ("qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedAsyncScheduler", 1024),
        ("qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedPacedAsyncScheduler", 1536),
    ],
)
def test_graphed_schedulers_set_step_cap_and_graph_size(ckpt: str, cls: str, tokens: int) -> None:
    scheduler, compilation = _config(ckpt, cls)
    assert scheduler.max_num_scheduled_tokens == tokens
    assert compilation.max_cudagraph_capture_size == tokens


def test_user_choices_are_kept(ckpt: str) -> None:
    scheduler, compilation = _config(ckpt, GRAPHED, scheduled=1024, graphs=256)
    assert scheduler.max_num_scheduled_tokens == 1024 and compilation.max_cudagraph_capture_size == 256


def test_other_schedulers_keep_vllms_step_size_and_get_the_graph_tokens(ckpt: str) -> None:
    scheduler, compilation = _config(ckpt, AHEAD)
    plain_scheduler, plain_compilation = _config(ckpt, None)
    assert scheduler.max_num_scheduled_tokens == plain_scheduler.max_num_scheduled_tokens
    assert compilation.max_cudagraph_capture_size == GRAPH_TOKENS
    assert plain_compilation.max_cudagraph_capture_size == GRAPH_TOKENS


def test_graph_tokens_setting(ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_GRAPH_TOKENS", "1024")
    assert _config(ckpt, None)[1].max_cudagraph_capture_size == 1024
    monkeypatch.setenv("QWENVL_VLLM_GRAPH_TOKENS", "0")  # left to vLLM (its default, computed on CUDA)
    assert _config(ckpt, None)[1].max_cudagraph_capture_size is None


def test_graph_tokens_stay_within_a_step(ckpt: str) -> None:
    assert _config(ckpt, None, batched=1024)[1].max_cudagraph_capture_size == 1024


def test_graph_tokens_keep_the_users_capture_sizes(ckpt: str) -> None:
    assert _config(ckpt, None, graphs=256)[1].max_cudagraph_capture_size == 256


def test_unchunked_prefill_keeps_vllms_step_size(ckpt: str) -> None:
    # a prompt longer than a capped step would never be scheduled without chunking (and block the queue)
    scheduler, compilation = _config(ckpt, GRAPHED, chunked=False)
    assert scheduler.max_num_scheduled_tokens != 2048
    assert compilation.max_cudagraph_capture_size == GRAPH_TOKENS  # graphs cap nothing


SLICED_PACED = "qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedPacedAsyncScheduler"


def _mode_after_hook(ckpt: str, scheduler_cls: str | None, mode: str | None = None) -> object:
    """`cudagraph_mode` as our config hook leaves it (vLLM's CPU platform later turns graphs off)."""
    from vllm.config import CompilationConfig, ModelConfig, SchedulerConfig

    from qwenvl_vllm.model_registry.config_hooks import Qwen2VLConfig

    config = SimpleNamespace(
        model_config=ModelConfig(model=ckpt, max_model_len=4096),
        scheduler_config=SchedulerConfig(
            max_num_batched_tokens=8192,
            max_model_len=4096,
            is_encoder_decoder=False,
            scheduler_cls=scheduler_cls,
        ),
        compilation_config=CompilationConfig(cudagraph_mode=mode),
        parallel_config=SimpleNamespace(distributed_executor_backend=None),
    )
    Qwen2VLConfig.verify_and_update_config(config)
    return config.compilation_config.cudagraph_mode


def test_slicers_get_whole_step_graphs(ckpt: str) -> None:
    from vllm.config import CUDAGraphMode

    assert _mode_after_hook(ckpt, SLICED_PACED) == CUDAGraphMode.FULL


def test_full_graphs_only_for_slicers_and_only_where_the_user_chose_none(
    ckpt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm.config import CUDAGraphMode

    assert _mode_after_hook(ckpt, None) is None  # vLLM's default follows
    assert _mode_after_hook(ckpt, AHEAD) is None
    assert _mode_after_hook(ckpt, SLICED_PACED, "PIECEWISE") == CUDAGraphMode.PIECEWISE
    monkeypatch.setenv("QWENVL_VLLM_SLICER_FULL_GRAPHS", "0")
    assert _mode_after_hook(ckpt, SLICED_PACED) is None

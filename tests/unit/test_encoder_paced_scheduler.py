"""The encoder-paced schedulers: vLLM's own scheduling, with fewer encoder tokens per step (CPU, no model)."""

from __future__ import annotations

import pytest
import torch

from qwenvl_vllm.checkpoint.writer import write_checkpoint
from qwenvl_vllm.serving.scheduler import EncoderPacedAsyncScheduler, paced_encoder_budget

IMAGE_TOKENS = 999  # a 1024x768 image
PROMPT = 1024


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    from qwenvl_vllm.model_registry import register

    register()
    return str(write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path_factory.mktemp("sched")))


def _scheduler(ckpt: str, cls: type, batched_tokens: int):
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    model = ModelConfig(model=ckpt, max_model_len=4096, limit_mm_per_prompt={"image": 1, "video": 0})
    sched = SchedulerConfig(
        max_num_batched_tokens=batched_tokens, max_num_seqs=64, max_model_len=4096, is_encoder_decoder=False
    )
    config = VllmConfig(
        model_config=model,
        scheduler_config=sched,
        cache_config=CacheConfig(block_size=16, enable_prefix_caching=False),
        device_config=DeviceConfig(device="cpu"),
    )
    config.cache_config.num_gpu_blocks = 4096  # set by the engine after profiling
    spec = FullAttentionSpec(block_size=16, num_kv_heads=1, head_size=16, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=4096, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l0"], spec)])
    assert issubclass(cls, Scheduler)
    return cls(
        vllm_config=config,
        kv_cache_config=kv,
        structured_output_manager=StructuredOutputManager(config),
        block_size=16,
    )


def _image_request(i: int):
    from vllm import SamplingParams
    from vllm.multimodal.inputs import MultiModalFeatureSpec, PlaceholderRange
    from vllm.v1.request import Request

    feature = MultiModalFeatureSpec(
        data=None,
        modality="image",
        identifier=f"image-{i}",
        mm_position=PlaceholderRange(offset=10, length=IMAGE_TOKENS),
        mm_hash=f"image-{i}",
    )
    return Request(
        request_id=f"r{i}",
        prompt_token_ids=[1] * PROMPT,
        sampling_params=SamplingParams(max_tokens=4),
        pooling_params=None,
        mm_features=[feature],
    )


def _encoder_tokens_first_step(scheduler, n: int) -> int:
    """Encoder tokens of the first step for n waiting one-image requests (the others' text before the
    image may still be prefilled: vLLM schedules up to a placeholder it cannot encode yet)."""
    for i in range(n):
        scheduler.add_request(_image_request(i))
    out = scheduler.schedule()
    return IMAGE_TOKENS * sum(len(ids) for ids in out.scheduled_encoder_inputs.values())


def test_budget_formula() -> None:
    assert paced_encoder_budget(16384, 2048, 999) == 2048
    assert paced_encoder_budget(16384, 2048, 9000) == 9000  # one whole largest item always fits
    assert paced_encoder_budget(16384, 0, 999) == 16384  # 0: vLLM's budget
    assert paced_encoder_budget(1024, 2048, 999) == 1024  # never above vLLM's own


def test_paced_scheduler_encodes_fewer_images_per_step(ckpt: str, monkeypatch) -> None:
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    monkeypatch.setenv("QWENVL_VLLM_ENCODER_STEP_TOKENS", "2048")
    plain = _scheduler(ckpt, AsyncScheduler, 16384)
    paced = _scheduler(ckpt, EncoderPacedAsyncScheduler, 16384)
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.encoder_budget import MultiModalBudget

    largest = max(MultiModalBudget(paced.vllm_config, MULTIMODAL_REGISTRY).mm_max_toks_per_item.values())
    budget = max(2048, largest)  # the tiny model's largest image fills its 4096-token context
    assert plain.max_num_encoder_input_tokens == 16384
    assert paced.max_num_encoder_input_tokens == budget
    plain_tokens = _encoder_tokens_first_step(plain, 12)
    paced_tokens = _encoder_tokens_first_step(paced, 12)
    assert plain_tokens > budget  # vLLM alone encodes as many as its token budget holds in one step
    assert 0 < paced_tokens <= budget

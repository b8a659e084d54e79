"""The encoder-paced schedulers: vLLM's own scheduling, with fewer encoder tokens per step (CPU, no model)."""

from __future__ import annotations

import pytest
from helpers import image_request, scheduler_for

from qwenvl_vllm.checkpoint.writer import write_checkpoint
from qwenvl_vllm.serving.scheduler import EncoderPacedAsyncScheduler, paced_encoder_budget

IMAGE_TOKENS = 999  # a 1024x768 image
PROMPT = 1024


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    from qwenvl_vllm.model_registry import register

    register()
    return str(write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path_factory.mktemp("sched")))


def _encoder_tokens_first_step(scheduler, n: int) -> int:
    """Encoder tokens of the first step for n waiting one-image requests (the others' text before the
    image may still be prefilled: vLLM schedules up to a placeholder it cannot encode yet)."""
    for i in range(n):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT))
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
    plain = scheduler_for(ckpt, AsyncScheduler, 16384)
    paced = scheduler_for(ckpt, EncoderPacedAsyncScheduler, 16384)
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

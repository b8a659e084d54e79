"""The encoder-paced schedulers: vLLM's own scheduling, with fewer encoder tokens per step (CPU, no model)."""

from __future__ import annotations

from helpers import finish_step, image_request, scheduler_for

from qwenvl_vllm.serving.scheduler import EncoderPacedAsyncScheduler, EncoderPacedScheduler, step_allowance

IMAGE_TOKENS = 999  # a 1024x768 image
PROMPT = 1024


def _encoder_tokens_first_step(scheduler, n: int) -> int:
    """Encoder tokens of the first step for n waiting one-image requests (the others' text before the
    image may still be prefilled: vLLM schedules up to a placeholder it cannot encode yet)."""
    for i in range(n):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT))
    out = scheduler.schedule()
    return IMAGE_TOKENS * sum(len(ids) for ids in out.scheduled_encoder_inputs.values())


def test_step_allowance() -> None:
    assert step_allowance(16384, 2048, 0) == 16384  # the step's first encoding request: vLLM's budget
    assert step_allowance(15385, 2048, 999) == 1049  # then what the cap leaves
    assert step_allowance(14386, 2048, 1998) == 50
    assert step_allowance(100, 2048, 999) == 100  # never above vLLM's remaining budget
    assert step_allowance(16384, 2048, 4000) == 0
    assert step_allowance(15385, 0, 999) == 15385  # 0: no pacing


def _paced(ckpt: str, monkeypatch, step_tokens: int):
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    monkeypatch.setenv("QWENVL_VLLM_ENCODER_STEP_TOKENS", str(step_tokens))
    return scheduler_for(ckpt, AsyncScheduler, 16384), scheduler_for(ckpt, EncoderPacedAsyncScheduler, 16384)


def test_paced_scheduler_encodes_fewer_images_per_step(ckpt: str, monkeypatch) -> None:
    plain, paced = _paced(ckpt, monkeypatch, 2048)
    assert paced.max_num_encoder_input_tokens == plain.max_num_encoder_input_tokens  # items of any size fit
    assert _encoder_tokens_first_step(plain, 12) > 2048  # vLLM alone encodes as many as its budget holds
    assert _encoder_tokens_first_step(paced, 12) == 2 * IMAGE_TOKENS  # the cap, in whole images


def test_an_item_above_the_cap_is_scheduled_alone(ckpt: str, monkeypatch) -> None:
    _, paced = _paced(ckpt, monkeypatch, 500)
    assert _encoder_tokens_first_step(paced, 4) == IMAGE_TOKENS


def test_every_step_encodes_up_to_the_cap_until_all_are_encoded(ckpt: str, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_ENCODER_STEP_TOKENS", "2048")
    paced = scheduler_for(ckpt, EncoderPacedScheduler, 16384)  # the synchronous variant
    for i in range(6):
        paced.add_request(image_request(i, IMAGE_TOKENS, PROMPT))
    encoded = []
    for _ in range(4):
        out = paced.schedule()
        encoded.append(sum(len(ids) for ids in out.scheduled_encoder_inputs.values()))
        finish_step(paced, out, PROMPT)
    assert encoded == [2, 2, 2, 0]

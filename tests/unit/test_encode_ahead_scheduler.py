"""The encode-ahead schedulers on vLLM's real scheduler (CPU, no model): an image is encoded a step before
its tokens, its tokens wait for the encode, and aborts give the encoder cache back."""

from __future__ import annotations

import pytest
from helpers import finish_step, image_request, scheduler_for

from qwenvl_vllm.models.encoder_stream import PROGRESS
from qwenvl_vllm.serving import encode_ahead
from qwenvl_vllm.serving.encode_ahead import (
    EncodeAheadAsyncScheduler,
    EncodeAheadPacedAsyncScheduler,
    EncodeAheadScheduler,
    EncodeAheadSlicedPacedAsyncScheduler,
)
from qwenvl_vllm.settings import TOWER_BACKLOG_REQUESTS

IMAGE_TOKENS = 999  # a 1024x768 image
PROMPT = 1024
TEXT_BEFORE = 10  # tokens before the image placeholder


class _Encode:
    """Stands in for the CUDA event of one side-stream encode (what the model records after launching)."""

    def __init__(self) -> None:
        self.done = False

    def query(self) -> bool:
        return self.done


@pytest.fixture
def side_stream(monkeypatch):
    """PROGRESS as a model encoding on a side stream in this process leaves it."""
    monkeypatch.setattr(PROGRESS, "active", True)
    yield PROGRESS
    PROGRESS.reset()


def _step(scheduler) -> tuple[dict[str, int], dict[str, list[int]]]:
    out = scheduler.schedule(False)  # as vLLM's engine core calls it (throttle_prefills)
    return dict(out.num_scheduled_tokens), dict(out.scheduled_encoder_inputs)


def _one_image_request(
    ckpt: str, cls: type = EncodeAheadScheduler, batched_tokens: int = 16384, offset: int = TEXT_BEFORE
):
    """A scheduler of `cls` holding one waiting request r0 with one 1024x768 image."""
    scheduler = scheduler_for(ckpt, cls, batched_tokens)
    scheduler.add_request(image_request(0, IMAGE_TOKENS, PROMPT, offset=offset))
    return scheduler


def _launch(progress, items: int) -> _Encode:
    encode = _Encode()
    progress.add(items, encode)
    return encode


def test_plain_vllm_encodes_and_prefills_in_one_step(ckpt: str) -> None:
    from vllm.v1.core.sched.scheduler import Scheduler

    scheduler = _one_image_request(ckpt, Scheduler)
    assert _step(scheduler) == ({"r0": PROMPT}, {"r0": [0]})


def test_image_tokens_wait_for_their_encode(ckpt: str, side_stream) -> None:
    scheduler = _one_image_request(ckpt)
    assert _step(scheduler) == ({"r0": TEXT_BEFORE}, {"r0": [0]})  # the text before it, and its encode
    encode = _launch(side_stream, 1)
    assert _step(scheduler) == ({}, {})  # still encoding: the image's tokens are held
    encode.done = True
    assert _step(scheduler) == ({"r0": PROMPT - TEXT_BEFORE}, {})  # from vLLM's encoder cache
    assert scheduler.expired_holds.count == 0


def test_other_requests_run_while_one_waits(ckpt: str, side_stream) -> None:
    scheduler = _one_image_request(ckpt)
    _step(scheduler)
    _launch(side_stream, 1)
    scheduler.add_request(image_request(1, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    assert _step(scheduler) == ({"r1": TEXT_BEFORE}, {"r1": [0]})


def test_hold_is_bounded(ckpt: str, side_stream, monkeypatch) -> None:
    monkeypatch.setattr(encode_ahead, "MAX_HOLD_S", 0.0)
    scheduler = _one_image_request(ckpt)
    _step(scheduler)
    _launch(side_stream, 1)  # never finishes (a model and a scheduler that disagree must not hang)
    assert _step(scheduler) == ({"r0": PROMPT - TEXT_BEFORE}, {})
    assert scheduler.expired_holds.count == 1  # logged: a serve log shows it beside a latency tail


def test_no_hold_without_a_side_stream_in_this_process(ckpt: str) -> None:
    assert not PROGRESS.active  # e.g. a multi-process executor: the scheduler cannot see the encodes
    scheduler = _one_image_request(ckpt)
    assert _step(scheduler) == ({"r0": TEXT_BEFORE}, {"r0": [0]})
    assert _step(scheduler) == ({"r0": PROMPT - TEXT_BEFORE}, {})


def test_prompt_embeddings_items_do_not_shift_the_holds(ckpt: str, side_stream) -> None:
    # vLLM's runner puts `prompt_embeds` items into the encoder cache itself: the model never sees them, so
    # counting them would make every later image wait for one encode too many
    scheduler = scheduler_for(ckpt, EncodeAheadScheduler, 16384)
    scheduler.add_request(image_request(0, 64, PROMPT, offset=TEXT_BEFORE, modality="prompt_embeds"))
    scheduler.add_request(image_request(1, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    tokens, encodes = _step(scheduler)
    assert encodes == {"r0": [0], "r1": [0]}
    encode = _launch(side_stream, 1)  # the image only
    encode.done = True
    tokens, _ = _step(scheduler)
    assert tokens["r1"] == PROMPT - TEXT_BEFORE  # its hold ended with its encode
    assert scheduler.expired_holds.count == 0


def test_image_at_the_computed_boundary_is_encoded_and_used_at_once(ckpt: str, side_stream) -> None:
    scheduler = _one_image_request(ckpt, offset=0)
    assert _step(scheduler) == ({"r0": PROMPT}, {"r0": [0]})  # deferring would schedule nothing


def test_abort_while_encoding_frees_the_encoder_cache(ckpt: str, side_stream) -> None:
    from vllm.v1.request import RequestStatus

    scheduler = scheduler_for(ckpt, EncodeAheadScheduler, 16384)
    cache = scheduler.encoder_cache_manager
    for i in range(3):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    assert _step(scheduler)[1] == {"r0": [0], "r1": [0], "r2": [0]}
    _launch(side_stream, 3)
    assert cache.num_freeable_slots == cache.cache_size - 3 * IMAGE_TOKENS
    scheduler.finish_requests(["r0", "r1", "r2"], RequestStatus.FINISHED_ABORTED)
    assert cache.num_freeable_slots == cache.cache_size
    assert not cache.cached.get("image-0") and not cache.request_cached_ids
    assert _step(scheduler) == ({}, {})


def test_async_variant_defers_the_same_way(ckpt: str, side_stream) -> None:
    scheduler = _one_image_request(ckpt, EncodeAheadAsyncScheduler)
    assert _step(scheduler) == ({"r0": TEXT_BEFORE}, {"r0": [0]})


def test_paced_variant_encodes_ahead_up_to_the_cap(ckpt: str, side_stream, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_ENCODER_STEP_TOKENS", "2048")
    scheduler = scheduler_for(ckpt, EncodeAheadPacedAsyncScheduler, 16384)
    assert EncodeAheadPacedAsyncScheduler.uses_encoder_stream  # the model makes its side stream for it
    for i in range(4):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    tokens, encodes = _step(scheduler)
    assert encodes == {"r0": [0], "r1": [0]}  # two images' worth of encoder tokens
    # every image's tokens wait; the images not encoded yet keep one text token for the step that encodes
    # them (a step starting at an image would encode and use it at once)
    assert tokens == {"r0": TEXT_BEFORE, "r1": TEXT_BEFORE, "r2": TEXT_BEFORE - 1, "r3": TEXT_BEFORE - 1}


@pytest.mark.parametrize(
    "setting,steps,cap",
    [(None, None, 1536), ("0", None, 1536), ("4096", None, 1536), ("512", None, 512), (None, 1024, 1024)],
)
def test_sliced_pacing_never_exceeds_a_step(ckpt: str, side_stream, monkeypatch, setting, steps, cap) -> None:
    # the setting only lowers the cap (the default 2048 would admit two images per 1536-token step); so
    # does a user's lower step cap (--max-num-scheduled-tokens)
    if setting is not None:
        monkeypatch.setenv("QWENVL_VLLM_ENCODER_STEP_TOKENS", setting)
    scheduler = scheduler_for(ckpt, EncodeAheadSlicedPacedAsyncScheduler, 16384, scheduled_tokens=steps)
    assert scheduler._step_cap == cap


def test_sliced_paced_variant_admits_one_image_per_step(ckpt: str, side_stream) -> None:
    scheduler = scheduler_for(ckpt, EncodeAheadSlicedPacedAsyncScheduler, 16384)
    assert EncodeAheadSlicedPacedAsyncScheduler.slices_tower  # the model queues its tower in slices for it
    for i in range(3):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    tokens, encodes = _step(scheduler)
    assert encodes == {"r0": [0]}
    assert tokens == {"r0": TEXT_BEFORE, "r1": TEXT_BEFORE - 1, "r2": TEXT_BEFORE - 1}
    tokens, encodes = _step(scheduler)
    assert encodes == {"r1": [0]}  # the next step admits the next image


@pytest.mark.parametrize(
    "setting,admitting,backlog",
    [
        (None, TOWER_BACKLOG_REQUESTS - 1, False),
        (None, TOWER_BACKLOG_REQUESTS, True),
        ("5", 4, False),
        ("5", 5, True),
    ],
)
def test_sliced_paced_budget_grows_with_requests_before_their_first_token(
    ckpt: str, side_stream, monkeypatch, setting: str | None, admitting: int, backlog: bool
) -> None:
    if setting is not None:
        monkeypatch.setenv("QWENVL_VLLM_TOWER_BACKLOG_REQUESTS", setting)
    scheduler = scheduler_for(ckpt, EncodeAheadSlicedPacedAsyncScheduler, 16384)
    for i in range(3):  # three requests that decode (images at their start: encoded and used at once)
        scheduler.add_request(image_request(100 + i, IMAGE_TOKENS, PROMPT, offset=0))
    for _ in range(3):
        finish_step(scheduler, scheduler.schedule(False), PROMPT)
    assert all(r.num_computed_tokens >= r.num_prompt_tokens for r in scheduler.running)
    for i in range(admitting):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    _step(scheduler)  # the new ones running, each at the text before its image
    assert not scheduler.waiting and len(scheduler.running) == admitting + 3
    assert side_stream.backlog is backlog  # the decoding ones do not count


def test_chunked_prefill_of_an_encoded_image(ckpt: str, side_stream) -> None:
    scheduler = _one_image_request(ckpt, batched_tokens=512)
    assert _step(scheduler) == ({"r0": TEXT_BEFORE}, {"r0": [0]})
    _launch(side_stream, 1).done = True
    assert _step(scheduler) == ({"r0": 512}, {})  # the image's first chunk, from the encoder cache
    assert _step(scheduler) == ({"r0": PROMPT - TEXT_BEFORE - 512}, {})  # the rest, no second encode


def test_preemption_between_encode_and_prefill(ckpt: str, side_stream) -> None:
    """A KV pool too small for both prompts: the second request is preempted after its image was encoded
    ahead, resumes from vLLM's encoder cache (no second encode), both finish, and the cache is whole again."""
    from vllm.v1.request import RequestStatus

    scheduler = scheduler_for(ckpt, EncodeAheadScheduler, 16384, num_blocks=100)  # 1600 tokens of KV
    for i in range(2):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    encoded, preempted = [], set()
    for _ in range(12):
        out = scheduler.schedule(False)
        new = [req for req, ids in out.scheduled_encoder_inputs.items() for _ in ids]
        _launch(side_stream, len(new)).done = True  # the model's side stream, finished at once
        encoded += new
        requests = scheduler.requests.values()
        preempted |= {r.request_id for r in requests if r.status == RequestStatus.PREEMPTED}
        finish_step(scheduler, out, PROMPT)
    cache = scheduler.encoder_cache_manager
    assert preempted == {"r1"} and sorted(encoded) == ["r0", "r1"]
    assert not scheduler.requests  # both finished (4 tokens each)
    assert cache.num_freeable_slots == cache.cache_size and not any(cache.cached.values())


def test_token_cap_spreads_prefills_while_images_encode_ahead(ckpt: str, side_stream) -> None:
    """`--max-num-scheduled-tokens 2048` (serve_bench's ours_ahead_2k): every waiting image is encoded in
    the first step (vLLM's encoder budget is kept), then the held prompts are prefilled ~2 per step."""
    scheduler = scheduler_for(ckpt, EncodeAheadAsyncScheduler, 16384, scheduled_tokens=2048)
    for i in range(6):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    out = scheduler.schedule(False)
    assert sorted(out.scheduled_encoder_inputs) == [f"r{i}" for i in range(6)]
    assert dict(out.num_scheduled_tokens) == {f"r{i}": TEXT_BEFORE for i in range(6)}
    _launch(side_stream, 6).done = True
    finish_step(scheduler, out, PROMPT)
    prefilled = 0
    for _ in range(4):
        out = scheduler.schedule(False)
        assert out.total_num_scheduled_tokens <= 2048 and not out.scheduled_encoder_inputs
        prefilled += out.total_num_scheduled_tokens
        finish_step(scheduler, out, PROMPT)
    assert prefilled >= 6 * (PROMPT - TEXT_BEFORE)  # all prompts, with no step above the cap

"""The slicing scheduler and our Qwen2-VL together, stepped as vLLM's model runner steps them (CPU): each
step's new encoder inputs go to `embed_multimodal` (queued), the image rows the step prefills are gathered
from the outputs as views, and `embed_input_ids` merges them. Every image row any step uses must equal the
whole tower's, while encodes really run over several steps and prefills really wait for them."""

from __future__ import annotations

import pytest
import torch
from helpers import config_stub, finish_step, image_request, scheduler_for

from qwenvl_vllm.models.encoder_stream import PROGRESS
from qwenvl_vllm.serving.encode_ahead import EncodeAheadSlicedScheduler

GRID = [1, 4, 6]  # 24 patches: 6 image tokens in the tiny model
IMAGE_TOKENS, PROMPT, OFFSET, REQUESTS = 6, 40, 5, 6
SLICED = "qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedAsyncScheduler"


@pytest.fixture
def model(build, ckpt: str, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("QWENVL_VLLM_TOWER_STEP_PATCH_LAYERS", "1024")  # one block (of 2) per step
    monkeypatch.setattr(PROGRESS, "scheduling", True)
    monkeypatch.setattr(PROGRESS, "backlog", False)
    model = build(ckpt)
    model.load_weights(load_file(f"{ckpt}/model.safetensors").items())
    yield model
    PROGRESS.reset()
    PROGRESS.active = False


def _pixels(i: int) -> torch.Tensor:
    return torch.randn(24, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(100 + i))


def _run(model, ckpt: str) -> tuple[dict[int, torch.Tensor], dict[str, int], int]:
    """Steps the engine dry; the image rows each request was given, steps between encode and first use,
    and how many steps ran."""
    from qwenvl_vllm.constants import IMAGE_TOKEN_ID

    scheduler = scheduler_for(ckpt, EncodeAheadSlicedScheduler, 64, scheduled_tokens=64)
    for i in range(REQUESTS):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=OFFSET, max_tokens=6))
    cache: dict[str, torch.Tensor] = {}  # the runner's encoder cache
    rows = {i: torch.full((IMAGE_TOKENS, 128), float("nan")) for i in range(REQUESTS)}
    encoded_at: dict[str, int] = {}
    waited: dict[str, int] = {}
    steps = 0
    while scheduler.requests and steps < 500:
        out = scheduler.schedule(False)
        for req_id in out.scheduled_encoder_inputs:
            i = int(req_id[1:])
            cache[req_id] = model.embed_multimodal(
                pixel_values=_pixels(i), image_grid_thw=torch.tensor([GRID])
            )[0]
            encoded_at[req_id] = steps
        ids, mm, used = [], [], []
        for req_id, n in out.num_scheduled_tokens.items():
            done = scheduler.requests[req_id].num_computed_tokens  # already includes this step's n
            start, end = max(done - n, OFFSET), min(done, OFFSET + IMAGE_TOKENS)
            positions = range(done - n, done)
            ids += [IMAGE_TOKEN_ID if OFFSET <= p < OFFSET + IMAGE_TOKENS else 1 for p in positions]
            if start < end:
                mm.append(cache[req_id][start - OFFSET : end - OFFSET])  # a view, as vLLM's gather gives
                used.append((req_id, start, end, len(ids) - done + start))
                waited.setdefault(req_id, steps - encoded_at[req_id])
        if ids:
            input_ids = torch.tensor(ids)
            with torch.inference_mode():
                embeds = model.embed_input_ids(input_ids, mm, is_multimodal=input_ids == IMAGE_TOKEN_ID)
            for req_id, start, end, at in used:
                rows[int(req_id[1:])][start - OFFSET : end - OFFSET] = embeds[at : at + end - start]
        finish_step(scheduler, out, PROMPT)
        for req_id in [r for r, req in scheduler.requests.items() if req.is_finished()]:
            scheduler.requests.pop(req_id)
        steps += 1
    return rows, waited, steps


def test_every_image_row_a_step_uses_is_the_whole_towers(model, ckpt: str) -> None:
    with torch.inference_mode():
        want = {i: model.embed_multimodal(pixel_values=_pixels(i), image_grid_thw=torch.tensor([GRID]))[0]
                for i in range(REQUESTS)}  # fmt: skip
    model._init_encoder_stream(config_stub(SLICED))
    assert model._tower_slicer is not None
    rows, waited, steps = _run(model, ckpt)
    for i in range(REQUESTS):
        assert torch.equal(rows[i], want[i]), i
    assert steps < 500 and len(waited) == REQUESTS
    assert max(waited.values()) >= 2  # some prefill waited steps for its slices (the feature was exercised)
    assert not model._tower_slicer._queue

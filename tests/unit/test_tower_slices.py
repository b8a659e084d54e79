"""The vision tower in slices over engine steps (CPU): the sliced encode equals the whole one, the queue
launches a bounded amount per step, a step that needs an image finishes its encode first, and the
slicing scheduler holds an image's tokens only while some request decodes. (CUDA graphs of the slices:
tests/gpu/test_qwen2_vl_vision_gpu.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import config_stub, finish_step, image_request, scheduler_for

from qwenvl_vllm.models.encoder_stream import PROGRESS, SideStreamEmbedding
from qwenvl_vllm.models.tower_slices import TowerSlicer
from qwenvl_vllm.serving.encode_ahead import EncodeAheadSlicedAsyncScheduler, EncodeAheadSlicedScheduler
from qwenvl_vllm.settings import STEP_TARGET_SMALL_MS

SLICED = "qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedAsyncScheduler"
GRID = [1, 4, 6]  # 24 patches


@pytest.fixture
def serving(monkeypatch):
    """PROGRESS as it is once a slicing scheduler runs in this process."""
    monkeypatch.setattr(PROGRESS, "scheduling", True)
    monkeypatch.setattr(PROGRESS, "active", True)
    monkeypatch.setattr(PROGRESS, "backlog", False)
    monkeypatch.setattr(PROGRESS, "decodes", 0)
    PROGRESS.reset()
    yield PROGRESS
    PROGRESS.reset()


@pytest.fixture(scope="module")
def tower(vllm_cpu):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    cfg = Qwen2VLVisionConfig(
        depth=5, embed_dim=32, num_heads=2, mlp_ratio=4, hidden_size=64, patch_size=14,
        temporal_patch_size=2, spatial_merge_size=2, in_channels=3, hidden_act="quick_gelu",
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2VisionTower(cfg, prefix="visual").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, p[0].numel() ** -0.5 if p.dim() > 1 else 0.1)
    return model


def _pixels(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(seed))


def _count_slices(slices) -> tuple[int, torch.Tensor]:
    launched = 0
    while True:
        try:
            next(slices)
            launched += 1
        except StopIteration as stop:
            return launched + 1, stop.value


@pytest.mark.parametrize("patch_layers,slices", [(5 * 1024, 5), (10 * 1024, 3), (15 * 1024, 2), (10**6, 1)])
def test_sliced_encode_equals_the_whole_one(tower, patch_layers: int, slices: int) -> None:
    """Slices of patch_layers // 1024 // 5 blocks (24 patches pad to one 1024-patch bucket), same bytes."""
    pixels = _pixels(24)
    with torch.inference_mode():
        want = tower(pixels, [GRID])
        gen, cost = tower.forward_slices(pixels, [GRID], patch_layers)
        launched, got = _count_slices(gen)
    assert launched == slices and cost == min(patch_layers // 1024 // 5, 5) * 1024
    assert torch.equal(got, want)


def _job(log: list, name: str, slices: int, value: float, rows: int = 2):
    def gen():
        for i in range(slices - 1):
            log.append((name, i))
            yield
        log.append((name, slices - 1))
        return torch.full((rows, 3), value)

    return gen()


def test_before_serving_an_encode_runs_whole(monkeypatch) -> None:
    """The engine's profiling encodes before any scheduler exists: nothing may stay queued."""
    monkeypatch.setattr(PROGRESS, "scheduling", False)
    log: list = []
    out = TowerSlicer(100).submit(_job(log, "a", 3, 1.0), torch.zeros(2, 3), 50)
    assert len(log) == 3 and torch.equal(out, torch.ones(2, 3))


def test_each_step_launches_about_its_budget_in_order(serving) -> None:
    log: list = []
    slicer = TowerSlicer(100)
    a = slicer.submit(_job(log, "a", 3, 1.0), torch.zeros(2, 3), 50)
    b = slicer.submit(_job(log, "b", 2, 2.0), torch.zeros(2, 3), 50)
    assert log == [] and not slicer.job_of(a).query()
    slicer.before_lm([])
    assert log == [("a", 0), ("a", 1)]
    slicer.before_lm([])
    assert log[2:] == [("a", 2), ("b", 0)] and torch.equal(a, torch.ones(2, 3))
    assert slicer.job_of(a) is None and not slicer.job_of(b).query()
    slicer.before_lm([])
    assert torch.equal(b, torch.full((2, 3), 2.0)) and slicer.job_of(b) is None


@pytest.mark.parametrize("backlog,launched", [(False, 2), (True, 3)])
def test_the_budget_grows_while_requests_wait(serving, monkeypatch, backlog: bool, launched: int) -> None:
    monkeypatch.setattr(PROGRESS, "backlog", backlog)
    log: list = []
    slicer = TowerSlicer(100, backlog_scale=1.5)
    out = slicer.submit(_job(log, "a", 4, 1.0), torch.zeros(2, 3), 50)
    slicer.before_lm([])
    assert len(log) == launched and out is not None


@pytest.mark.parametrize("max_seqs,backlog", [(1, True), (2, False)])
def test_the_scheduler_tells_the_slicer_when_requests_wait(ckpt: str, serving, max_seqs, backlog) -> None:
    """Requests a step could not take (here: one sequence at a time) mean the engine is behind."""
    scheduler = scheduler_for(ckpt, EncodeAheadSlicedScheduler, 2048, max_num_seqs=max_seqs)
    for i in range(2):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    scheduler.schedule(False)
    assert PROGRESS.backlog is backlog


def test_a_slice_over_the_budget_still_runs_alone(serving) -> None:
    log: list = []
    slicer = TowerSlicer(10)
    out = slicer.submit(_job(log, "a", 2, 1.0), torch.zeros(2, 3), 50)
    slicer.before_lm([])
    slicer.before_lm([])
    assert log == [("a", 0), ("a", 1)] and torch.equal(out, torch.ones(2, 3))


def test_an_encode_vllm_dropped_is_not_run(serving) -> None:
    """An aborted request's output leaves vLLM's encoder cache: its queued slices are skipped, the encode
    counts as finished, and later encodes run (nothing stays queued for it)."""
    log: list = []
    slicer = TowerSlicer(50)
    aborted = slicer.submit(_job(log, "a", 3, 1.0), torch.zeros(2, 3), 50)
    job = slicer.job_of(aborted)
    kept = slicer.submit(_job(log, "b", 1, 2.0), torch.zeros(2, 3), 50)
    del aborted
    slicer.before_lm([])
    assert log == [("b", 0)] and job.query() and torch.equal(kept, torch.full((2, 3), 2.0))
    assert not slicer._queue and not slicer._jobs


def test_a_step_using_an_image_finishes_its_encode_first(serving) -> None:
    """Up to that image (earlier ones first: one stream, in order), not beyond it."""
    log: list = []
    slicer = TowerSlicer(50)
    a = slicer.submit(_job(log, "a", 3, 1.0), torch.zeros(2, 3), 50)
    b = slicer.submit(_job(log, "b", 4, 2.0, rows=4), torch.zeros(4, 3), 50)
    c = slicer.submit(_job(log, "c", 2, 3.0), torch.zeros(2, 3), 50)
    slicer.before_lm([b[1:3]])  # a view of b's output, as vLLM's gather passes it
    assert [name for name, _ in log] == ["a"] * 3 + ["b"] * 4
    assert torch.equal(a, torch.ones(2, 3)) and torch.equal(b, torch.full((4, 3), 2.0))
    assert not slicer.job_of(c).query()


def test_progress_counts_an_item_when_its_last_slice_is_launched(serving) -> None:
    log: list = []
    slicer = TowerSlicer(50)
    out = slicer.submit(_job(log, "a", 2, 1.0), torch.zeros(2, 3), 50)
    PROGRESS.add(1, slicer.job_of(out))
    PROGRESS.add(1, None)  # a ready embedding behind it
    slicer.before_lm([])
    assert PROGRESS.finished_items() == 0
    slicer.before_lm([])
    assert PROGRESS.finished_items() == 2


def test_only_models_that_can_slice_get_a_slicer() -> None:
    class Sliceable(SideStreamEmbedding):
        supports_tower_slices = True

    sliceable, other = Sliceable(), SideStreamEmbedding()
    sliceable._init_encoder_stream(config_stub(SLICED))
    other._init_encoder_stream(config_stub(SLICED))
    assert sliceable._tower_slicer is not None and sliceable._encoder_stream is None
    assert other._tower_slicer is None and other._encoder_stream is not None  # Qwen-VL: the side stream
    PROGRESS.active = False


@pytest.mark.parametrize("small_ms,scale", [("0", 1.0), ("12", 0.75), (None, STEP_TARGET_SMALL_MS / 16)])
def test_the_slicer_gets_the_small_batch_target_from_the_settings(monkeypatch, small_ms, scale) -> None:
    class Sliceable(SideStreamEmbedding):
        supports_tower_slices = True

    monkeypatch.setenv("QWENVL_VLLM_STEP_TARGET_MS", "16")
    monkeypatch.delenv("QWENVL_VLLM_STEP_TARGET_SMALL_MS", raising=False)
    if small_ms is not None:
        monkeypatch.setenv("QWENVL_VLLM_STEP_TARGET_SMALL_MS", small_ms)
    model = Sliceable()
    model._init_encoder_stream(config_stub(SLICED))
    assert model._tower_slicer.small_scale == scale
    PROGRESS.active = False


@pytest.mark.parametrize("field", ["ec_transfer_config", "lora_config"])
def test_slicing_refuses_what_it_would_get_wrong(field: str) -> None:
    class Sliceable(SideStreamEmbedding):
        supports_tower_slices = True

    config = config_stub(SLICED, **{field: object()})
    with pytest.raises(ValueError, match="slicing scheduler"):
        Sliceable()._init_encoder_stream(config)


def test_scheduler_asks_for_slices_and_graphed_steps() -> None:
    assert (
        EncodeAheadSlicedAsyncScheduler.slices_tower and EncodeAheadSlicedAsyncScheduler.uses_encoder_stream
    )
    assert EncodeAheadSlicedAsyncScheduler.step_tokens == EncodeAheadSlicedScheduler.step_tokens == 1024


IMAGE_TOKENS, PROMPT, TEXT_BEFORE = 999, 1024, 10


def _step(scheduler) -> dict[str, int]:
    out = scheduler.schedule(False)
    finish_step(scheduler, out, PROMPT)
    return dict(out.num_scheduled_tokens)


def test_tokens_are_held_only_while_a_request_decodes(ckpt: str, serving) -> None:
    scheduler = scheduler_for(ckpt, EncodeAheadSlicedScheduler, 16384)
    scheduler.add_request(image_request(0, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE, max_tokens=50))
    assert _step(scheduler) == {"r0": TEXT_BEFORE}  # its encode is queued in this step
    first = SimpleNamespace(done=False)
    serving.add(1, SimpleNamespace(query=lambda: first.done))  # still in slices
    assert _step(scheduler) == {"r0": PROMPT - TEXT_BEFORE}  # nothing decodes: it finishes the encode now
    first.done = True  # (that step's embed_input_ids ran the rest of its slices)
    assert _step(scheduler) == {"r0": 1}  # r0 decodes
    scheduler.add_request(image_request(1, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    assert _step(scheduler) == {"r0": 1, "r1": TEXT_BEFORE}
    encode = SimpleNamespace(done=False)
    serving.add(1, SimpleNamespace(query=lambda: encode.done))
    assert _step(scheduler) == {"r0": 1}  # r1's image tokens wait while r0 decodes
    encode.done = True
    assert _step(scheduler) == {"r0": 1, "r1": PROMPT - TEXT_BEFORE}


def test_the_scheduler_tells_the_slicer_how_many_requests_decode(ckpt: str, serving) -> None:
    """Requests past their prompt once the step is scheduled (the small-batch target reads the count)."""
    serving.active = False  # every encode counts as finished: no holds
    scheduler = scheduler_for(ckpt, EncodeAheadSlicedScheduler, 16384)
    for i in range(2):
        scheduler.add_request(image_request(i, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE, max_tokens=50))
    _step(scheduler)  # the text before each image, their encodes queued
    assert serving.decodes == 0
    _step(scheduler)  # the rest of both prompts
    assert serving.decodes == 2
    scheduler.add_request(image_request(2, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    assert _step(scheduler) == {"r0": 1, "r1": 1, "r2": TEXT_BEFORE} and serving.decodes == 2


@pytest.mark.parametrize("step_target", ["0", "20"])
def test_sliced_model_embeds_equal_the_whole_tower(build, ckpt, serving, monkeypatch, step_target) -> None:
    """Our Qwen2-VL under the slicing scheduler: embed_multimodal queues, embed_input_ids (the step that
    uses the image) finishes the encode, and the token embeddings equal those of the unsliced model; with
    a step-time target too (the slicer then sizes steps by the step's tokens)."""
    monkeypatch.setenv("QWENVL_VLLM_STEP_TARGET_MS", step_target)
    from safetensors.torch import load_file

    from qwenvl_vllm.constants import IMAGE_TOKEN_ID

    model = build(ckpt)
    model.load_weights(load_file(f"{ckpt}/model.safetensors").items())
    input_ids = torch.randint(0, 1000, (40,), generator=torch.Generator().manual_seed(1))
    input_ids[5:11] = IMAGE_TOKEN_ID  # one image of 6 tokens, one of 2
    input_ids[30:32] = IMAGE_TOKEN_ID
    is_mm = input_ids == IMAGE_TOKEN_ID
    pixels, grids = _pixels(32, seed=2), [[1, 4, 6], [1, 2, 4]]
    kwargs = dict(pixel_values=pixels, image_grid_thw=torch.tensor(grids))
    with torch.inference_mode():
        # the reference encodes one image per tower call, as the slices do (a batch of two differs in
        # the last bits on CPU: other GEMM shapes)
        whole = [
            *model.embed_multimodal(pixel_values=pixels[:24], image_grid_thw=torch.tensor(grids[:1])),
            *model.embed_multimodal(pixel_values=pixels[24:], image_grid_thw=torch.tensor(grids[1:])),
        ]
        want = model.embed_input_ids(input_ids, whole, is_multimodal=is_mm)
        model._init_encoder_stream(config_stub(SLICED))
        assert (model._tower_slicer.step_budget is not None) == (float(step_target) > 0)
        items = model.embed_multimodal(**kwargs)
        assert PROGRESS.launched == 2 and PROGRESS.finished_items() == 0  # queued, not run
        got = model.embed_input_ids(input_ids, items, is_multimodal=is_mm)
    assert PROGRESS.finished_items() == 2 and torch.equal(got, want)


@pytest.mark.parametrize("sliced_bound,held", [(60.0, True), (0.0, False)])
def test_sliced_holds_have_their_own_bound(ckpt: str, serving, monkeypatch, sliced_bound, held) -> None:
    """Not the 1 s of the side-stream scheduler (a queue of images may take longer to drain), but a bound."""
    from qwenvl_vllm.serving import encode_ahead

    monkeypatch.setattr(encode_ahead, "MAX_HOLD_S", 0.0)
    monkeypatch.setattr(encode_ahead, "SLICED_MAX_HOLD_S", sliced_bound)
    scheduler = scheduler_for(ckpt, EncodeAheadSlicedScheduler, 16384)
    scheduler.add_request(image_request(0, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE, max_tokens=50))
    serving.add(1, SimpleNamespace(query=lambda: True))
    _step(scheduler), _step(scheduler)  # r0 prefilled and decoding
    scheduler.add_request(image_request(1, IMAGE_TOKENS, PROMPT, offset=TEXT_BEFORE))
    assert _step(scheduler) == {"r0": 1, "r1": TEXT_BEFORE}
    serving.add(1, SimpleNamespace(query=lambda: False))  # never finishes
    want = {"r0": 1} if held else {"r0": 1, "r1": PROMPT - TEXT_BEFORE}
    assert _step(scheduler) == want


def test_slices_stay_inline_without_cuda(monkeypatch, serving, tower) -> None:
    """QWENVL_VLLM_SLICES_ON_SIDE_STREAM on a CPU engine: no side stream, the same encode as the whole tower
    (the side stream itself: tests/gpu/test_slice_stream_gpu.py)."""

    class Sliceable(SideStreamEmbedding):
        supports_tower_slices = True

    monkeypatch.setenv("QWENVL_VLLM_SLICES_ON_SIDE_STREAM", "1")
    model = Sliceable()
    model._init_encoder_stream(config_stub(SLICED))
    slicer = model._tower_slicer
    assert slicer.stream.stream is None and not slicer.stream.side
    rows = _pixels(24)
    with torch.no_grad(), slicer.stream.launching():
        slices, cost = tower.forward_slices(rows, [GRID], slicer.budget)
        out = torch.empty(6, tower.out_hidden_size)
    with torch.no_grad():
        slicer.submit(slices, out, cost, rows=rows)
        slicer.before_lm([out])
        want = tower(rows, [GRID])
    assert torch.equal(out, want)

"""The vision warm-up (`QWENVL_VLLM_WARM_TOWER`): what it feeds the tower, that it runs the tower's forward
and its eager encode once, on the first call only (the logits', or the forward's on a pipeline rank before
the last), and never when off or without a tower. On CPU (the kernels' torch paths);
tests/gpu/test_tower_warmup_gpu.py checks on CUDA that no kernel compiles after it."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
from helpers import TINY_VISION

from qwenvl_vllm.geometry import QWEN2_VL
from qwenvl_vllm.models import tower_warmup
from qwenvl_vllm.models.tower_warmup import (
    WARM_DECODED,
    WARM_GRID,
    TowerWarmup,
    encoding_tower,
    warm_qwen2,
    warm_rows,
    warmup_of,
)


@pytest.fixture(scope="module")
def tower(vllm_cpu):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    return Qwen2VisionTower(Qwen2VLVisionConfig(**TINY_VISION), prefix="visual").eval()


def _count_calls(monkeypatch, tower) -> list[str]:
    calls: list[str] = []
    forward, encode = tower.forward, tower.encode

    def counted_forward(*args, **kwargs):
        calls.append("forward")
        return forward(*args, **kwargs)

    def counted_encode(*args, **kwargs):
        calls.append("encode")
        return encode(*args, **kwargs)

    monkeypatch.setattr(tower, "forward", counted_forward)
    monkeypatch.setattr(tower, "encode", counted_encode)
    return calls


def test_device_pixel_rows_need_a_resize_of_an_image_and_a_video(tower) -> None:
    t, h, w = WARM_GRID
    assert WARM_DECODED != (h * QWEN2_VL.patch_size, w * QWEN2_VL.patch_size)  # the resize kernels run
    rows, grids = warm_rows(tower, QWEN2_VL, device_pixels=True)
    assert grids == [WARM_GRID, WARM_GRID]
    assert rows.shape == (2 * t * h * w, tower.patch_dim) and rows.dtype == tower.dtype
    assert rows.abs().sum() > 0  # normalised black pixels, not the zeros of the CPU-pixels rows
    zeros, _ = warm_rows(tower, QWEN2_VL, device_pixels=False)
    assert zeros.shape == rows.shape and not zeros.any()


def test_runs_forward_and_eager_encode_once(monkeypatch, tower) -> None:
    calls = _count_calls(monkeypatch, tower)
    warmup = TowerWarmup(enabled=True)
    warmup.before(partial(warm_qwen2, tower, QWEN2_VL, True))
    # forward itself ends in encode on CPU (no graphs), then the eager encodes of one item and of both
    assert calls == ["forward", "encode", "encode", "encode"]
    warmup.before(partial(warm_qwen2, tower, QWEN2_VL, True))
    assert len(calls) == 4


def test_off_or_without_a_tower_runs_nothing(monkeypatch, tower) -> None:
    calls = _count_calls(monkeypatch, tower)
    TowerWarmup(enabled=False).before(partial(warm_qwen2, tower, QWEN2_VL, True))
    without = TowerWarmup(enabled=True)
    without.before(None)
    assert calls == [] and not without.pending


def test_the_model_warms_its_own_tower_and_not_vllms_stand_in(build, ckpt) -> None:
    """With media disabled vLLM replaces the tower by a stand-in that raises when called: nothing to warm."""
    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    assert isinstance(build(ckpt)._tower_to_warm(), Qwen2VisionTower)
    text_only = build(ckpt, limit_mm_per_prompt={"image": 0, "video": 0})
    assert not isinstance(text_only.visual, Qwen2VisionTower)
    assert text_only._tower_to_warm() is None


@pytest.mark.parametrize(
    ("first_rank", "last_rank", "at_forward_calls"), [(True, True, 0), (True, False, 4), (False, False, 0)]
)
def test_the_rank_that_computes_no_logits_warms_at_its_forward(
    monkeypatch, tower, first_rank: bool, last_rank: bool, at_forward_calls: int
) -> None:
    """Pipeline parallelism: the tower lives on the first rank, the logits run on the last; a middle rank
    has no tower and warms nothing, once."""
    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    group = SimpleNamespace(is_first_rank=first_rank, is_last_rank=last_rank)
    monkeypatch.setattr(tower_warmup, "get_pp_group", lambda: group)
    calls = _count_calls(monkeypatch, tower)

    def factory():  # as the models build it: None where this rank holds no tower
        return warmup_of(encoding_tower(tower, Qwen2VisionTower), warm_qwen2, QWEN2_VL)

    warmup = TowerWarmup(enabled=True)
    warmup.at_forward(factory)
    assert (len(calls), warmup.pending) == (at_forward_calls, last_rank)
    warmup.at_logits(factory)
    assert (len(calls), warmup.pending) == (4 if first_rank else 0, False)

"""The step-time target for the sliced tower (CPU, a simulated clock): the tower gets the room a step's own
work leaves, the fixed part is learned from measured steps (apart for the steps that queue a new image),
stalls are not learned from, and the slicer uses the target instead of its fixed budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwenvl_vllm.models import step_budget as sb
from qwenvl_vllm.models.encoder_stream import PROGRESS
from qwenvl_vllm.models.step_budget import StepBudget
from qwenvl_vllm.models.tower_slices import TowerSlicer
from qwenvl_vllm.settings import SMALL_BATCH_DECODES


class Clock:
    def __init__(self) -> None:
        self.ms = 0.0

    def __call__(self) -> float:
        return self.ms / 1000


def _tower_ms(patch_layers: int) -> float:
    return patch_layers / sb.PATCH_LAYERS_PER_MS


def test_the_tower_gets_what_the_steps_tokens_leave() -> None:
    budget = StepBudget(25.0, clock=Clock())
    decodes_only, with_prefill = budget.patch_layers(64), budget.patch_layers(64 + 1026)
    assert _tower_ms(decodes_only) == pytest.approx(25.0 - sb.INITIAL_FIXED_MS - 0.064 * 5.5, abs=1e-3)
    assert _tower_ms(decodes_only) - _tower_ms(with_prefill) == pytest.approx(1.026 * 5.5, abs=1e-3)
    assert budget.patch_layers(10_000) == 0  # a step full of prefill leaves the tower nothing


@pytest.mark.parametrize("true_fixed_ms", [1.0, 8.0])
def test_steps_settle_at_the_target_whatever_the_fixed_cost(true_fixed_ms: float) -> None:
    """A step really takes true_fixed + prefill + its tower work; the periods come to the target."""
    clock = Clock()
    budget = StepBudget(25.0, clock=clock)
    periods = []
    for step in range(300):
        tokens = 64 + (1026 if step % 3 else 0)
        work = budget.patch_layers(tokens)
        budget.launched(work)
        period = true_fixed_ms + tokens / 1000 * sb.PREFILL_MS_PER_1K_TOKENS + _tower_ms(work)
        clock.ms += period
        periods.append(period)
    assert budget.fixed_ms == pytest.approx(true_fixed_ms, abs=0.05)
    assert max(periods[-30:]) == pytest.approx(25.0, abs=0.1)


def test_the_backlog_scales_the_target() -> None:
    budget = StepBudget(20.0, clock=Clock())
    plain, scaled = budget.patch_layers(1090), budget.patch_layers(1090, scale=1.5)
    assert _tower_ms(scaled) - _tower_ms(plain) == pytest.approx(10.0, abs=1e-3)


def test_a_stall_is_not_learned_from() -> None:
    clock = Clock()
    budget = StepBudget(25.0, clock=clock)
    budget.launched(budget.patch_layers(64))
    clock.ms += 10_000  # the engine was idle
    budget.launched(budget.patch_layers(64))
    assert budget.fixed_ms == sb.INITIAL_FIXED_MS


def test_a_needed_encode_over_the_budget_is_predicted_as_launched() -> None:
    """The step that had to finish an image's encode is expected long: no lesson that steps are slow."""
    clock = Clock()
    budget = StepBudget(25.0, clock=clock)
    room = budget.patch_layers(64)
    budget.launched(room * 2)
    clock.ms += sb.INITIAL_FIXED_MS + 0.064 * sb.PREFILL_MS_PER_1K_TOKENS + _tower_ms(room * 2)
    budget.patch_layers(64)
    assert budget.fixed_ms == pytest.approx(sb.INITIAL_FIXED_MS, abs=1e-6)


def test_the_target_must_be_positive() -> None:
    with pytest.raises(ValueError, match="QWENVL_VLLM_STEP_TARGET_MS"):
        StepBudget(-5.0)
    with pytest.raises(ValueError, match="QWENVL_VLLM_STEP_TARGET_MARGIN"):
        StepBudget(18.0, margin=-1.0)


def test_the_margin_leaves_deviations_free() -> None:
    plain, kept = StepBudget(25.0, clock=Clock()), StepBudget(25.0, clock=Clock(), margin=2.0)
    freed = _tower_ms(plain.patch_layers(1090)) - _tower_ms(kept.patch_layers(1090))
    assert freed == pytest.approx(2.0 * sb.INITIAL_DEVIATION_MS, abs=1e-3)


def _noisy_steps(margin: float, noise_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps of 64 decodes and a 1k-token chunk that really take 4 ms + prefill + tower + noise: their
    periods and the learned deviation after each, past a warm-up of 500 steps."""
    clock = Clock()
    budget = StepBudget(25.0, clock=clock, margin=margin)
    periods, deviations = [], []
    for noise in noise_ms:
        work = budget.patch_layers(1090)
        budget.launched(work)
        period = 4.0 + 1.09 * sb.PREFILL_MS_PER_1K_TOKENS + _tower_ms(work) + noise
        clock.ms += period
        periods.append(period)
        deviations.append(budget.deviation_ms)
    return np.array(periods[500:]), np.array(deviations[500:])


def test_the_deviation_is_learned_and_the_margin_bounds_the_tail() -> None:
    """Noise of mean absolute deviation 3 ms: learned as ~3 (plus the mean learner's own jitter); margin 1.5
    brings the p90 period to the target (the mean learner alone leaves it ~5 ms over), at ~1.5 deviations less
    tower work per step."""
    noise = np.random.default_rng(0).laplace(0.0, 3.0, size=3000)  # E|x| = 3
    periods, _ = _noisy_steps(0.0, noise)
    margined, deviations = _noisy_steps(1.5, noise)
    assert deviations.mean() == pytest.approx(3.0, rel=0.2)
    assert np.percentile(periods, 90) > 25.0 + 4.0
    assert np.percentile(margined, 90) == pytest.approx(25.0, abs=1.0)
    assert periods.mean() - margined.mean() == pytest.approx(1.5 * deviations.mean(), rel=0.05)


def test_steps_without_tower_work_teach_no_deviation() -> None:
    clock = Clock()
    budget = StepBudget(5.0, clock=clock, margin=1.0)  # 64 decodes and 1k tokens leave no room
    for step in range(50):
        budget.launched(budget.patch_layers(1090))
        clock.ms += 20.0 if step % 2 else 2.0
    assert budget.deviation_ms == sb.INITIAL_DEVIATION_MS


def _two_class_steps(admit_cost: bool, extra_ms: float = 6.0) -> tuple[StepBudget, np.ndarray, np.ndarray]:
    """Every third step queues a new image and really costs `extra_ms` more than its tokens and tower work
    say (the twentieth visit's fit: +5 to +7 ms on noisy hosts); the periods of both kinds past a warm-up."""
    clock = Clock()
    budget = StepBudget(25.0, clock=clock, admit_cost=admit_cost)
    admitting, plain = [], []
    for step in range(600):
        admits = step % 3 == 0
        work = budget.patch_layers(1090, admits=admits)
        budget.launched(work)
        period = 4.0 + (extra_ms if admits else 0.0) + 1.09 * sb.PREFILL_MS_PER_1K_TOKENS + _tower_ms(work)
        clock.ms += period
        if step >= 300:
            (admitting if admits else plain).append(period)
    return budget, np.array(admitting), np.array(plain)


def test_admitting_steps_learn_their_own_extra_cost() -> None:
    """Both kinds of step come to the target; one cost for all leaves the admitting ones over it and the
    others under, by the extra cost's share."""
    budget, admitting, plain = _two_class_steps(admit_cost=True)
    assert [budget.fixed_ms, budget.admit_ms] == pytest.approx([4.0, 6.0], abs=0.05)
    assert admitting.max() == pytest.approx(25.0, abs=0.1) and plain.max() == pytest.approx(25.0, abs=0.1)
    one_cost, admitting, plain = _two_class_steps(admit_cost=False)
    assert one_cost.admit_ms == 0.0
    assert admitting.mean() > 25.0 + 3.0 and plain.mean() < 25.0 - 1.5


def test_without_admitting_steps_the_budget_is_unchanged() -> None:
    clock = Clock()
    split, single = StepBudget(25.0, clock=clock, admit_cost=True), StepBudget(25.0, clock=clock)
    for _ in range(20):
        split.launched(room := split.patch_layers(1090))
        assert single.patch_layers(1090) == room
        single.launched(room)
        clock.ms += 30.0
    assert split.fixed_ms == single.fixed_ms and split.admit_ms == 0.0


class FixedRoom:
    """Stands in for a StepBudget: room for `room` patches x blocks; records what was launched."""

    def __init__(self, room: int) -> None:
        self.room, self.calls, self.launched_work = room, [], []

    def patch_layers(self, tokens: int, scale: float, admits: bool = False) -> int:
        self.calls.append((tokens, scale, admits))
        return self.room

    def launched(self, work: int) -> None:
        self.launched_work.append(work)


def _job(slices: int):
    def gen():
        for _ in range(slices - 1):
            yield
        return torch.ones(2, 3)

    return gen()


@pytest.mark.parametrize("backlog,scale", [(False, 1.0), (True, 4.0)])
def test_the_slicer_launches_the_targets_room(monkeypatch, backlog: bool, scale: float) -> None:
    """Not its fixed budget (50: one slice); the target scaled while requests wait."""
    monkeypatch.setattr(PROGRESS, "scheduling", True)
    monkeypatch.setattr(PROGRESS, "backlog", backlog)
    PROGRESS.reset()
    room = FixedRoom(150)
    slicer = TowerSlicer(50, backlog_scale=4.0, step_budget=room)
    out = slicer.submit(_job(5), torch.zeros(2, 3), 50)  # held: vLLM keeps the output it asked for
    slicer.before_lm([], tokens=1090)
    assert room.calls == [(1090, scale, True)] and room.launched_work == [150] and PROGRESS.tower_work == 150
    assert not slicer.job_of(out).query()  # two of five slices left
    slicer.before_lm([], tokens=64)  # no new encode queued since the last step
    assert room.calls[1:] == [(64, scale, False)]
    PROGRESS.reset()


@pytest.mark.parametrize("decodes,scale", [(SMALL_BATCH_DECODES, 0.75), (SMALL_BATCH_DECODES + 1, 1.0)])
def test_a_small_batch_gets_its_own_target(monkeypatch, decodes: int, scale: float) -> None:
    """QWENVL_VLLM_STEP_TARGET_SMALL_MS as a scale of the target, while few requests decode."""
    monkeypatch.setattr(PROGRESS, "scheduling", True)
    monkeypatch.setattr(PROGRESS, "backlog", True)
    monkeypatch.setattr(PROGRESS, "decodes", decodes)
    room = FixedRoom(150)
    small = sb.small_batch_scale(16.0, 12.0)
    slicer = TowerSlicer(50, backlog_scale=2.0, step_budget=room, small_scale=small)
    slicer.submit(_job(5), torch.zeros(2, 3), 50)
    slicer.before_lm([], tokens=64)
    assert room.calls == [(64, 2.0 * scale, True)]
    PROGRESS.reset()


def test_the_small_batch_scale() -> None:
    assert sb.small_batch_scale(16.0, 12.0) == 0.75
    assert sb.small_batch_scale(16.0, 0.0) == sb.small_batch_scale(0.0, 12.0) == 1.0  # unset, or no target
    with pytest.raises(ValueError, match="STEP_TARGET_SMALL_MS"):
        sb.small_batch_scale(16.0, -1.0)


def test_the_engines_profiling_runs_teach_the_target_nothing(monkeypatch) -> None:
    """Before a scheduler serves (profiling, warm-up forwards back to back) the fixed budget applies."""
    monkeypatch.setattr(PROGRESS, "scheduling", False)
    room = FixedRoom(150)
    TowerSlicer(50, step_budget=room).before_lm([], tokens=64)
    assert room.calls == [] and room.launched_work == []

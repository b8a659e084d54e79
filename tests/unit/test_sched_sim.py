"""The serving simulator (benchmarks/sched_sim.py) on small closed loops: its API-server model, and vLLM's
real schedulers under it (default: a cohort's images in one step; paced: one per step; encode ahead:
every request completes although image tokens wait for their encodes)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sched_sim  # noqa: E402

WORK = sched_sim.Workload(concurrency=8, requests=16, max_tokens=8)


def test_api_lane_shares_then_serialises() -> None:
    lane = sched_sim.ApiLane(shared_ms=3.0, serial_ms=5.0)
    for i in range(4):
        lane.submit(f"r{i}")
    assert lane.next_done() == pytest.approx(17.0)  # 4 x 3 ms shared, then 5 ms alone
    out = lane.advance(100.0)
    assert [t for t, _ in out] == pytest.approx([17.0, 22.0, 27.0, 32.0])
    assert lane.advance(200.0) == [] and lane.next_done() is None


def test_two_lanes_split_a_cohort() -> None:
    api = sched_sim.ApiServer(shared_ms=3.0, serial_ms=5.0, servers=2)
    for i in range(4):
        api.submit(f"r{i}")
    assert [t for t, _ in api.advance(100.0)] == pytest.approx([11.0, 11.0, 16.0, 16.0])


def _sim(ckpt: str, name: str, monkeypatch, step_tokens: int = 1024) -> sched_sim.Sim:
    monkeypatch.setenv("QWENVL_VLLM_ENCODER_STEP_TOKENS", str(step_tokens))
    return sched_sim.simulate(ckpt, name, sched_sim.Costs(), WORK)


def test_default_scheduler_encodes_a_cohort_in_one_step(ckpt: str, monkeypatch) -> None:
    sim = _sim(ckpt, "default", monkeypatch)
    assert max(encodes for _, encodes, _, _ in sim.steps) > 1
    assert all(len(times) == WORK.max_tokens for times in sim.tokens.values())
    assert len(sim.tokens) == WORK.requests


@pytest.mark.parametrize("name", ["paced", "ahead_paced", "sliced_paced"])
def test_paced_schedulers_encode_one_image_per_step(ckpt: str, name: str, monkeypatch) -> None:
    sim = _sim(ckpt, name, monkeypatch)
    assert max(encodes for _, encodes, _, _ in sim.steps) == 1
    assert len(sim.tokens) == WORK.requests


def test_encode_ahead_completes_with_its_holds(ckpt: str, monkeypatch) -> None:
    sim = _sim(ckpt, "ahead", monkeypatch)
    assert len(sim.tokens) == WORK.requests
    assert all(len(times) == WORK.max_tokens for times in sim.tokens.values())
    assert sim.side == []  # every encode launched on the side stream ended


def test_sliced_tower_keeps_steps_with_decodes_near_the_budget(ckpt: str, monkeypatch) -> None:
    """The slicing scheduler in the simulator: every request completes, every queued encode ends, and the
    steps that carry decodes stay within the LM's work plus one step's tower budget (no whole-queue
    steps; the scheduler holds images' tokens while requests decode)."""
    costs = sched_sim.Costs(graph_max_tokens=1024, host_ms_per_image=0.0, step_target_ms=0.0)
    sim = sched_sim.simulate(ckpt, "sliced", costs, WORK, scheduled_tokens=1024)
    assert len(sim.tokens) == WORK.requests and sim.side == []
    lm_max = costs.base_ms + costs.per_seq_ms * WORK.concurrency + 1.024 * costs.prefill_ms_per_1k
    decode_steps = [step[3] for step, decodes in zip(sim.steps, sim.step_decodes, strict=True) if decodes]
    tower_max = costs.tower_step_ms * costs.tower_backlog_scale  # while requests wait
    assert decode_steps and max(decode_steps) <= lm_max + tower_max + 1e-6


def test_a_step_target_holds_the_steady_steps_at_the_target(ckpt: str, monkeypatch) -> None:
    """The slicer under QWENVL_VLLM_STEP_TARGET_MS in the simulator (the real StepBudget on the simulated
    clock, a fixed cost unlike its first guess): once it has learned the fixed cost, steps with decodes and
    tower work stay near the target, apart from those that must finish an image's encode."""
    costs = sched_sim.Costs(graph_max_tokens=1536, host_ms_per_image=0.0, base_ms=7.0, step_target_ms=24.0)
    sim = sched_sim.simulate(ckpt, "sliced", costs, WORK, scheduled_tokens=1536)
    assert len(sim.tokens) == WORK.requests and sim.side == []
    assert sim.step_budget.fixed_ms == pytest.approx(7.0 + costs.per_seq_ms * WORK.concurrency, abs=0.5)
    late = [step[3] for step, decodes in zip(sim.steps, sim.step_decodes, strict=True) if decodes][-40:]
    assert np.median(late) <= 24.0 + 0.5


def test_replayed_noise_lands_on_the_steps_of_its_kind(ckpt: str, monkeypatch) -> None:
    """Residuals replayed per step: the tower-launching steps' set on steps with tower work, the other on the
    rest, in order, and a step never shorter than the floor; no noise (zeros) changes nothing."""
    costs = sched_sim.Costs(graph_max_tokens=1536, host_ms_per_image=0.0, step_target_ms=0.0)
    plain = sched_sim.simulate(ckpt, "sliced", costs, WORK, scheduled_tokens=1536)
    zeros = (np.zeros(3), np.zeros(3))
    silent = sched_sim.simulate(ckpt, "sliced", costs, WORK, scheduled_tokens=1536, noise=zeros)
    assert [s[3] for s in silent.steps] == pytest.approx([s[3] for s in plain.steps])
    noisy = sched_sim.simulate(
        ckpt, "sliced", costs, WORK, scheduled_tokens=1536, noise=(np.zeros(1), np.full(1, 50.0))
    )
    long_steps = [s[3] for s in noisy.steps if s[3] > 50.0]
    assert long_steps and len(long_steps) < len(noisy.steps)  # only the tower's steps
    floored = sched_sim.simulate(
        ckpt, "sliced", costs, WORK, scheduled_tokens=1536, noise=(np.full(1, -99.0),) * 2
    )
    assert min(s[3] for s in floored.steps) == sched_sim.MIN_STEP_MS


def test_a_host_bound_tower_step_costs_its_fit(ckpt: str, monkeypatch) -> None:
    """`--cost-trace`'s costs: a slicer step that launches tower work takes admit_ms + tower_factor x its
    tower ms beside the LM's work; steps without tower work do not pay admit_ms."""
    base = dict(graph_max_tokens=1536, host_ms_per_image=0.0, step_target_ms=0.0)
    plain = sched_sim.simulate(ckpt, "sliced", sched_sim.Costs(**base), WORK, scheduled_tokens=1536)
    bound = sched_sim.Costs(**base, tower_factor=0.5, admit_ms=6.0)
    host_bound = sched_sim.simulate(ckpt, "sliced", bound, WORK, scheduled_tokens=1536)
    assert len(host_bound.tokens) == WORK.requests and host_bound.side == []
    first_tower_step = next(i for i, s in enumerate(plain.steps) if s[1])  # the first image admitted
    before = [s[3] for s in plain.steps[:first_tower_step]]
    assert [s[3] for s in host_bound.steps[:first_tower_step]] == pytest.approx(before)
    lm_max = bound.base_ms + bound.per_seq_ms * WORK.concurrency + 1.536 * bound.prefill_ms_per_1k
    tower_max = bound.tower_step_ms * bound.tower_backlog_scale
    assert max(s[3] for s in host_bound.steps) <= lm_max + 6.0 + 0.5 * tower_max + 1e-6
    assert max(s[3] for s in host_bound.steps) > lm_max  # admit_ms is paid


def test_queuing_an_image_costs_its_fit(ckpt: str, monkeypatch) -> None:
    """With `--admit-by image` the steps that schedule a new encode are the admitting ones (admit_ms, their
    residuals), not those that launch tower work; with the budget's class off (the default; on:
    `--step-admit-cost`) it learns one fixed cost for every step."""
    classes = []
    noisy = sched_sim.Sim._noisy

    def spy(self, step_ms: float, admitting: bool) -> float:
        classes.append(admitting)
        return noisy(self, step_ms, admitting)

    monkeypatch.setattr(sched_sim.Sim, "_noisy", spy)
    base = dict(graph_max_tokens=1536, host_ms_per_image=0.0, step_target_ms=18.0, admit_ms=6.0)
    for admit_by in ("image", "tower"):
        classes.clear()
        costs = sched_sim.Costs(**base, admit_by=admit_by)
        sim = sched_sim.simulate(ckpt, "sliced", costs, WORK, scheduled_tokens=1536)
        queued = [s[1] > 0 for s in sim.steps]
        assert (classes == queued) == (admit_by == "image")
    for split in (True, False):
        costs = sched_sim.Costs(**base, admit_by="image", step_admit_cost=split)
        sim = sched_sim.simulate(ckpt, "sliced", costs, WORK, scheduled_tokens=1536)
        assert len(sim.tokens) == WORK.requests
        assert (sim.step_budget.admit_ms > 1.0) == split


def test_slice_overlap_hides_tower_time_beside_the_decodes(ckpt: str) -> None:
    """QWENVL_VLLM_SLICES_ON_SIDE_STREAM's model: the same requests served in less time."""
    base = dict(graph_max_tokens=1536, host_ms_per_image=0.0, step_target_ms=0.0)
    runs = {
        f: sched_sim.simulate(
            ckpt, "sliced", sched_sim.Costs(**base, slice_overlap=f), WORK, scheduled_tokens=1536
        )
        for f in (0.0, 1.0)
    }
    assert all(len(sim.tokens) == WORK.requests for sim in runs.values())
    elapsed = {f: sim.steps[-1][0] + sim.steps[-1][3] for f, sim in runs.items()}
    assert elapsed[1.0] < elapsed[0.0]

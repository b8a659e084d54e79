"""The schedulers' step trace (CPU, vLLM's real scheduler): one line per step with what it scheduled, read
back per time window and summarised as the serve benchmark reports it."""

from __future__ import annotations

import time

import pytest
from helpers import finish_step, image_request, scheduler_for

from qwenvl_vllm.serving import step_trace
from qwenvl_vllm.serving.encode_ahead import EncodeAheadAsyncScheduler
from qwenvl_vllm.serving.scheduler import TracedAsyncScheduler

PROMPT = 1024


@pytest.mark.parametrize("cls", [TracedAsyncScheduler, EncodeAheadAsyncScheduler])
def test_each_step_is_recorded_with_its_work(ckpt: str, cls: type, tmp_path, monkeypatch) -> None:
    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv("QWENVL_VLLM_STEP_TRACE", str(path))
    since = time.monotonic()
    scheduler = scheduler_for(ckpt, cls, 16384)
    for i in range(3):
        scheduler.add_request(image_request(i, 999, PROMPT, offset=0))  # image first: nothing to defer
    out = scheduler.schedule(False)
    finish_step(scheduler, out, PROMPT)
    out2 = scheduler.schedule(False)
    scheduler.flush_trace()
    steps = step_trace.window(step_trace.load(path), since, time.monotonic())
    assert len(steps) == 2
    first, second = steps
    assert first["prefill_tokens"] == out.total_num_scheduled_tokens == 3 * PROMPT
    assert first["encoder_inputs"] == 3 and first["decodes"] == 0 and first["running"] == 3
    assert second["decodes"] == len(out2.num_scheduled_tokens) == 3 and second["prefill_tokens"] == 0
    assert first["t"] <= second["t"] and first["sched_ms"] >= 0


def test_records_carry_the_host_time_of_our_scopes_since_the_last_one(ckpt: str, tmp_path, monkeypatch):
    from qwenvl_vllm.models import host_scopes

    monkeypatch.setattr(host_scopes, "TIMING", False)  # this test's switch, restored after it
    host_scopes.take_host_ms()  # nothing left from other tests
    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv("QWENVL_VLLM_STEP_TRACE", str(path))
    scheduler = scheduler_for(ckpt, TracedAsyncScheduler, 16384)
    scheduler.add_request(image_request(0, 999, PROMPT, offset=0))
    out = scheduler.schedule(False)
    with host_scopes.scope("embed_multimodal"):  # the model's work for that step
        time.sleep(0.02)
    finish_step(scheduler, out, PROMPT)
    scheduler.schedule(False)
    scheduler.flush_trace()
    first, second = step_trace.load(path)
    assert set(first["host_ms"]) - {"gc"} == {"schedule"}  # a collection may fall in any step
    assert second["host_ms"]["embed_multimodal"] >= 20.0
    assert set(second["host_ms"]) - {"gc"} == {"embed_multimodal", "update_from_output", "schedule"}
    host_scopes.TIMING = False
    host_scopes.take_host_ms()  # a collection timed while the trace was read
    with host_scopes.scope("embed_multimodal"):  # the trace off: nothing is counted
        pass
    assert host_scopes.take_host_ms() == {}


def test_garbage_collections_are_timed_while_the_trace_is_on(monkeypatch) -> None:
    import gc

    from qwenvl_vllm.models import host_scopes

    host_scopes.time_collections()
    host_scopes.time_collections()  # once per process however often asked
    assert sum(1 for c in gc.callbacks if c is host_scopes._COLLECTION_TIMER) == 1
    monkeypatch.setattr(host_scopes, "TIMING", False)
    host_scopes.take_host_ms()
    gc.collect()
    assert "gc" not in host_scopes.take_host_ms()
    host_scopes.TIMING = True
    garbage = [[i] for i in range(200_000)]  # a heap worth a measurable collection
    gc.collect()
    del garbage
    assert host_scopes.take_host_ms()["gc"] > 0


def test_host_time_is_grouped_by_the_images_a_step_admitted() -> None:
    steps = [
        {"t": 0.000, "encoder_inputs": 2},
        {"t": 0.030, "encoder_inputs": 0, "host_ms": {"embed_multimodal": 16.0, "schedule": 1.0}},
        {"t": 0.040, "encoder_inputs": 0, "host_ms": {"schedule": 0.5}},
        {"t": 0.050, "encoder_inputs": 0, "host_ms": {"schedule": 1.5, "tower_slices": 2.0}},
    ]
    assert step_trace.host_by_images_admitted(steps) == {
        "0": {"steps": 2, "gap_ms": 10.0, "schedule": 1.0, "tower_slices": 1.0},
        "2": {"steps": 1, "gap_ms": 30.0, "embed_multimodal": 16.0, "schedule": 1.0},
    }


def test_no_setting_writes_nothing(ckpt: str, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("QWENVL_VLLM_STEP_TRACE", raising=False)
    monkeypatch.chdir(tmp_path)
    scheduler = scheduler_for(ckpt, TracedAsyncScheduler, 16384)
    scheduler.add_request(image_request(0, 999, PROMPT, offset=0))
    scheduler.schedule(False)
    scheduler.flush_trace()
    assert scheduler._trace_file is None and not list(tmp_path.iterdir())


def test_the_trace_is_written_when_the_engine_empties(ckpt: str, tmp_path, monkeypatch) -> None:
    """Well within the once-a-second write: the last steps of a level reach the file when the last request
    finishes (the engine then stops calling schedule), and at shutdown."""
    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv("QWENVL_VLLM_STEP_TRACE", str(path))
    scheduler = scheduler_for(ckpt, TracedAsyncScheduler, 16384)
    scheduler.add_request(image_request(0, 999, PROMPT, offset=0, max_tokens=2))
    for _ in range(2):  # prefill with the first token, then the second: finished
        finish_step(scheduler, scheduler.schedule(False), PROMPT)
    assert not scheduler.get_num_unfinished_requests()
    assert len(step_trace.load(path)) == 2
    scheduler.add_request(image_request(1, 999, PROMPT, offset=0))
    scheduler.schedule(False)
    scheduler.shutdown()
    assert len(step_trace.load(path)) == 3


def test_load_keeps_the_window_only(tmp_path) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(f'{{"t": {t}, "sched_ms": 0.1}}\n' for t in (1.0, 2.0, 3.0)))
    assert [s["t"] for s in step_trace.window(step_trace.load(path), 1.5, 3.0)] == [2.0, 3.0]
    assert step_trace.load(tmp_path / "absent.jsonl") == []


def test_summary_names_the_steps_before_long_gaps() -> None:
    times = [0.0, 0.01, 0.02, 0.25, 0.26]  # one 230 ms gap, after the third step
    steps = [{"t": t, "sched_ms": 0.5, "prefill_tokens": 100 * i} for i, t in enumerate(times)]
    summary = step_trace.summarize(steps)
    assert summary["steps"] == 5 and summary["gap_max_ms"] == pytest.approx(230)
    (long,) = summary["gaps_over_100ms"]
    assert long["prefill_tokens"] == 200 and long["gap_ms"] == pytest.approx(230)
    assert summary["gap_p50_ms"] == pytest.approx(10)


def test_encode_ahead_steps_record_the_encodes_under_way(ckpt: str, tmp_path, monkeypatch) -> None:
    """With a side stream or slicer in the process (PROGRESS active): encodes given to the model and not
    finished, as the scheduler sees them at each step, and the tower work launched since the last record."""
    from types import SimpleNamespace

    from qwenvl_vllm.models.encoder_stream import PROGRESS

    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv("QWENVL_VLLM_STEP_TRACE", str(path))
    monkeypatch.setattr(PROGRESS, "active", True)
    scheduler = scheduler_for(ckpt, EncodeAheadAsyncScheduler, 16384)
    for i in range(2):
        scheduler.add_request(image_request(i, 999, PROMPT))
    scheduler.schedule(False)
    done = SimpleNamespace(query=lambda: True)
    PROGRESS.add(1, done), PROGRESS.add(1, SimpleNamespace(query=lambda: False))
    PROGRESS.tower_work += 300  # the slicer's launches in the step between the records
    scheduler.schedule(False)
    scheduler.flush_trace()
    steps = step_trace.load(path)
    assert [step["pending_encodes"] for step in steps] == [0, 1]
    assert [step["tower_work"] for step in steps] == [0, 300]
    PROGRESS.reset()


def test_decode_gap_p99_weighs_each_gap_by_the_decodes_that_waited_it() -> None:
    # 99 short gaps ending steps of 1 decode; one 50 ms gap ending a step of 64 decodes, one 80 ms gap
    # ending a step of none (a prefill-only step: no token waited on it)
    times = [0.0]
    decodes = [0]
    for _ in range(99):
        times.append(times[-1] + 0.005)
        decodes.append(1)
    times += [times[-1] + 0.05, times[-1] + 0.13]
    decodes += [64, 0]
    steps = [{"t": t, "sched_ms": 0.1, "decodes": d} for t, d in zip(times, decodes, strict=True)]
    summary = step_trace.summarize(steps)
    assert summary["gap_max_ms"] == pytest.approx(80)
    assert summary["decode_gap_p99_ms"] == pytest.approx(50)  # 64 of 163 decodes waited 50 ms
    assert (
        step_trace.summarize([{"t": 0.0, "sched_ms": 0.1}, {"t": 1.0, "sched_ms": 0.1}])["decode_gap_p99_ms"]
        is None
    )


def test_tower_work_is_summarised_in_milliseconds_at_the_towers_rate() -> None:
    from qwenvl_vllm.models.step_budget import PATCH_LAYERS_PER_MS

    steps = [{"t": i * 0.02, "sched_ms": 0.1, "encoder_inputs": 0, "decodes": 8, "tower_work": w}
             for i, w in enumerate([0, 10, 20, 30, 40])]  # fmt: skip
    for step in steps:
        step["tower_work"] *= PATCH_LAYERS_PER_MS
    summary = step_trace.summarize(steps)["tower_ms_per_step"]
    assert summary["p50"] == pytest.approx(20.0) and summary["max"] == pytest.approx(40.0)
    assert (
        step_trace.summarize([{k: v for k, v in s.items() if k != "tower_work"} for s in steps])[
            "tower_ms_per_step"
        ]
        is None
    )

"""CPU tests of the benchmark bookkeeping: vLLM log parsing and the summary tables (no GPU, no engine)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare  # noqa: E402
import step_fit  # noqa: E402
import step_trace_report  # noqa: E402
import summarize  # noqa: E402
import ttft_breakdown  # noqa: E402

LOG = """INFO [gpu_model_runner.py:4012] Model loading took 2.38 GiB memory and 3.1 seconds
INFO [gpu_worker.py:321] Available KV cache memory: 24.0 GiB
INFO [kv_cache_utils.py:1290] GPU KV cache size: 898,768 tokens
"""


def test_memory_from_log_reads_vllm_startup_lines() -> None:
    assert compare.memory_from_log(LOG) == {
        "weights_gib": 2.38,
        "kv_cache_gib": 24.0,
        "kv_cache_tokens": 898768.0,
    }
    assert compare.memory_from_log("nothing here") == {}


def _side(req_per_s: float, **extra: float) -> dict:
    return {"req_per_s": req_per_s, "input_tok_per_s": 1000.0, "output_tok_per_s": 64.0, **extra}


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    head = {"gpu": "GPU-X", "date": "2026-11-21", "vllm_version": "0.26.0", "config": {"ckpt": "/c/2b-gptq"}}
    ours = _side(30.0, ttft_single_ms=61.5, peak_gpu_gib=32.7, latency_repeats=5)
    w1 = head | {"workload": "W1", "ours": ours, "in_tree": _side(25.0, ttft_single_ms=50.0), "ratio": 1.2}
    (tmp_path / "W1.json").write_text(json.dumps(w1))
    level = {
        "concurrency": 16,
        "errors": 0,
        "ttft_p50_ms": 1,
        "ttft_p99_ms": 2,
        "itl_p50_ms": 3,
        "itl_p99_ms": 4,
    }
    serve = head | {
        "workload": "serve-c16",
        "ours": level | {"req_per_s": 9.0},
        "in_tree": level | {"req_per_s": 10.0},
        "ours_ahead": level | {"req_per_s": 9.5, "itl_p99_ms": 2.5},
    }
    (tmp_path / "serve-c16.json").write_text(json.dumps(serve | {"ratio": 0.9}))
    row = {"input_tokens": 258, "output_tokens": 7934, "tok_per_s": 227.3, "weights_plus_kv_gib": 13.1}
    seed = head | {"workload": "seed-table-qwen-vl-chat-int4", "rows": [row]}
    (tmp_path / "seed_qwen-vl-chat-int4.json").write_text(json.dumps(seed))
    (tmp_path / "seed_qwen-vl-chat-int4.rows.json").write_text(json.dumps([row]))  # the worker's raw rows
    return tmp_path


def test_summary_tables(
    results: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["summarize.py", str(results)])
    summarize.main()
    text = capsys.readouterr().out
    assert text.startswith("# GPU-X, vLLM 0.26.0, 2026-11-21")
    assert "| W1 | 30.00 | 25.00 | 1.200 |" in text
    assert "| W1 | 61.5 / 50.0 |" in text  # latency: ours / in-tree medians
    assert "| 16 | 9.00 | 10.00 | 0.900 |" in text
    assert "| 16 | ours_ahead | 9.50 | 1 / 2 | 3.0 / 2.5 | 0 |" in text  # every side, in one table
    assert "| qwen-vl-chat-int4 | 258 | 7934 | 227.3 | 13.10 | - |" in text
    assert text.count("qwen-vl-chat-int4 |") == 1  # the raw rows file is not a second table entry


def test_ttft_stages_add_up_to_the_ttft() -> None:
    """The breakdown's stages: the tower excludes GPU pixels, the forward excludes the tower, `other` is
    the rest of the request's time, so the stages sum to the TTFT."""
    watch = ttft_breakdown.Stopwatch()

    class Engine:
        def step(self, n: int) -> int:
            return n

    engine = Engine()
    watch.wrap(engine, "step", "schedule")
    assert engine.step(3) == 3 and engine.step(4) == 4 and watch.ms["schedule"] > 0
    ms = {"frontend": 2.0, "schedule": 0.5, "pixels": 1.0, "embed": 16.0, "execute": 30.0}
    ms |= {"update": 1.0, "mm_encoder": 17.5, "lm": 9.0, "sample": 0.5, "mm_reduce": 0.75, "mm_h2d": 0.25}
    stages = ttft_breakdown._stages(ms, 40.0)
    assert stages["encoder"] == 15.0 and stages["forward"] == 14.0 and stages["other"] == 7.5
    top = {k: v for k, v in stages.items() if "." not in k and k != "ttft_ms"}
    assert sum(top.values()) == stages["ttft_ms"] == 40.0
    parts = {k: v for k, v in stages.items() if k.startswith("forward.") and k.count(".") == 1}
    assert parts["forward.mm_batching"] == 1.5 and parts["forward.rest"] == 2.0
    assert sum(parts.values()) == stages["forward"]
    assert stages["forward.mm_batching.reduce"] == 0.75 and stages["forward.mm_batching.h2d"] == 0.25


def test_engine_itl_shares_from_a_prometheus_exposition() -> None:
    prometheus = pytest.importorskip("prometheus_client")
    import server_metrics

    registry = prometheus.CollectorRegistry()
    itl = prometheus.Histogram(
        "vllm:inter_token_latency_seconds", "", ["engine"], registry=registry,
        buckets=[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3],
    )  # fmt: skip
    for gap in (0.004, 0.3):  # before the level: must not count
        itl.labels("0").observe(gap)
    before = server_metrics.parse_histograms(prometheus.generate_latest(registry).decode())
    gaps = [0.004] * 6 + [0.06, 0.12, 0.25]
    for engine, gap in enumerate(gaps):
        itl.labels(str(engine % 2)).observe(gap)  # two engines' series are summed
    after = server_metrics.parse_histograms(prometheus.generate_latest(registry).decode())

    shares = server_metrics.engine_itl_shares(after, before)
    assert shares == pytest.approx({"over_50ms": 3 / 9, "over_100ms": 2 / 9, "over_200ms": 1 / 9})
    client = server_metrics.itl_shares([g * 1000 for g in gaps])
    assert client == pytest.approx(shares)
    nothing = server_metrics.engine_itl_shares({}, {})
    assert nothing == {"over_50ms": None, "over_100ms": None, "over_200ms": None}


def test_step_trace_report_groups_gaps_by_what_the_step_scheduled(tmp_path) -> None:
    def step(t: float, enc: int, pre: int, running: int = 64) -> dict:
        return {"t": t, "encoder_inputs": enc, "prefill_tokens": pre, "running": running, "decodes": 0}

    steps = [step(0.0, 0, 0), step(0.004, 8, 8000), step(0.184, 0, 0), step(0.188, 0, 0, running=0)]
    steps.append(step(0.400, 1, 1000))
    steps[2]["decodes"] = 64  # the 180 ms gap ends a step of 64 decodes: every one of them waited it
    groups = step_trace_report.group_gaps(steps)
    assert groups[("6-99", "6144-8191")] == [pytest.approx(180)]
    assert groups[("0", "0-2047")] == [pytest.approx(4), pytest.approx(4)]
    assert step_trace_report.idle_gaps(steps) == [pytest.approx(212)]
    trace = tmp_path / "steps_x.jsonl"
    trace.write_text("".join(json.dumps(s) + "\n" for s in steps))
    report = step_trace_report.report(trace)
    assert "| 6-99 | 6144-8191 | 1 | 180.0 | 180.0 |" in report
    assert "decode-weighted gap p99 (the engine's inter-token p99): 180.0 ms" in report


def test_serve_bench_output_lengths_spread_around_max_tokens() -> None:
    import serve_bench
    import serve_client

    assert serve_client.output_lengths(4, 64, 0) == [64] * 4
    lengths = serve_client.output_lengths(400, 64, 32)
    assert min(lengths) >= 32 and max(lengths) <= 96 and len(set(lengths)) > 20
    assert lengths == serve_client.output_lengths(400, 64, 32)  # seeded: the same for every side
    assert serve_bench.workload_name("1024x768", 64, 32) == "serve-c64-spread32"
    assert serve_bench.workload_name("1920x1080", 16) == "serve-1920x1080-c16"


def test_serve_bench_results_of_a_side_cut_short() -> None:
    """A side stopped by a time limit after some levels: those levels are reported, the rest are None."""
    import serve_bench

    sides = {"ours": [{"req_per_s": 2.0}, {"req_per_s": 3.0}], "in_tree": [{"req_per_s": 1.0}]}
    assert serve_bench.level_of(sides, "ours", 1) == {"req_per_s": 3.0}
    assert serve_bench.level_of(sides, "in_tree", 1) is None
    assert serve_bench.level_of(sides, "ours_sliced", 0) is None
    assert (
        serve_bench.ratio(serve_bench.level_of(sides, "ours", 0), serve_bench.level_of(sides, "in_tree", 0))
        == 2.0
    )


def test_serve_sides_name_real_settings_and_scheduler_classes() -> None:
    """A misspelt setting or class in a side would run the defaults under that side's name on the GPU."""
    import importlib

    import serve_bench

    settings_text = (Path(__file__).resolve().parents[2] / "qwenvl_vllm" / "settings.py").read_text()
    for name, (_, args, env) in serve_bench.SIDES.items():
        for key in env:
            if key.startswith("QWENVL_VLLM_"):
                assert f'"{key}"' in settings_text, (name, key)
        if "--scheduler-cls" in args:
            module, _, cls = args[args.index("--scheduler-cls") + 1].rpartition(".")
            assert hasattr(importlib.import_module(module), cls), (name, cls)


def _trace(
    rng, n: int = 400, noise_ms: float = 1.0, admit_ms: float = 0.0, image_ms: float = 0.0
) -> list[dict]:
    """Steps that cost 3 ms + 0.05 per decode + 6 per 1k prefill tokens + 0.9x the tower ms launched (+
    admit_ms if any; + image_ms if the step queued an image, a quarter of them), with Gaussian noise; an idle
    gap in the middle. A step's tower work is recorded by the step after it."""
    from qwenvl_vllm.models.step_budget import PATCH_LAYERS_PER_MS

    t, steps, launched = 0.0, [], 0.0
    for i in range(n):
        decodes, prefill = int(rng.integers(1, 64)), int(rng.choice([0, 1026]))
        images = int(rng.random() < 0.25)
        step = {"t": t, "decodes": decodes, "prefill_tokens": prefill, "tower_work": launched}
        steps.append(step | {"encoder_inputs": images})
        tower_ms = float(rng.choice([0.0, 5.0, 12.0]))
        launched = tower_ms * PATCH_LAYERS_PER_MS
        period = 3.0 + 0.05 * decodes + 6.0 * prefill / 1000 + 0.9 * tower_ms + rng.normal(0.0, noise_ms)
        period += (admit_ms if tower_ms else 0.0) + image_ms * images
        t += (period + (500.0 if i == n // 2 else 0.0)) / 1000
    return steps


def test_step_fit_recovers_the_costs_and_splits_the_residuals() -> None:
    import numpy as np

    fitted = step_fit.fit(_trace(np.random.default_rng(1)))
    got = [fitted.fixed_ms, fitted.ms_per_decode, fitted.ms_per_1k_prefill, fitted.tower_factor]
    assert got == pytest.approx([3.0, 0.05, 6.0, 0.9], abs=0.3)
    assert len(fitted.residuals) + len(fitted.admitting_residuals) == 398  # the idle gap left out
    assert 200 < len(fitted.admitting_residuals) < 330  # two of three tower choices launch work
    assert fitted.summary()["admitting_residual_sd_ms"] == pytest.approx(1.0, abs=0.2)
    with pytest.raises(ValueError, match="at least 4 steps"):
        step_fit.fit(_trace(np.random.default_rng(1), n=3))


def test_step_fit_by_class_finds_the_admitting_steps_extra_cost() -> None:
    import numpy as np

    steps = _trace(np.random.default_rng(2), admit_ms=7.0)
    by_class = step_fit.fit(steps, by_class=True)
    assert [by_class.admit_ms, by_class.tower_factor] == pytest.approx([7.0, 0.9], abs=0.4)
    assert step_fit.fit(steps).admit_ms == 0.0  # the plain fit folds it into the others


def test_step_trace_report_counts_syncs_by_admission() -> None:
    steps = [
        {"t": 0.0, "encoder_inputs": 1},
        {"t": 0.02, "encoder_inputs": 0, "syncs": {"device_pixels": 2}},
        {"t": 0.04, "encoder_inputs": 0, "syncs": {}},
        {"t": 0.06, "encoder_inputs": 0, "syncs": {"schedule": 1}},
    ]
    by = step_trace_report.step_trace.host_by_images_admitted(steps, "syncs")
    assert {images: {k: v for k, v in means.items() if k != "gap_ms"} for images, means in by.items()} == {
        "1": {"device_pixels": 2.0, "steps": 1},
        "0": {"schedule": 0.5, "steps": 2},
    }
    assert (
        step_trace_report.step_trace.host_by_images_admitted(
            [{"t": 0.0, "encoder_inputs": 1}, {"t": 0.1}], "syncs"
        )
        == {}
    )
    lines = step_trace_report._sync_lines(steps)
    assert lines[1:] == [
        "syncs per step, 0 images admitted (2 steps): schedule 0.50",
        "syncs per step, 1 images admitted (1 steps): device_pixels 2.00",
    ]


def test_step_fit_by_image_finds_the_cost_of_queuing_an_image() -> None:
    """The class of the steps that scheduled a new image's encode, apart from those that launched tower work:
    each fit finds its own class's cost, and its residuals split by that class."""
    import numpy as np

    steps = _trace(np.random.default_rng(3), image_ms=6.0)
    by_image = step_fit.fit(steps, by_class=True, admit_by="image")
    assert [by_image.admit_ms, by_image.tower_factor] == pytest.approx([6.0, 0.9], abs=0.4)
    assert 60 < len(by_image.admitting_residuals) < 140  # a quarter of the 398 steps
    assert by_image.summary()["admitting_residual_sd_ms"] == pytest.approx(1.0, abs=0.2)
    assert step_fit.fit(steps, by_class=True).admit_ms == pytest.approx(0.0, abs=0.6)
    with pytest.raises(ValueError, match="admit_by"):
        step_fit.fit(steps, admit_by="tokens")

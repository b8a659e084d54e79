"""CPU tests of `benchmarks/profile_digest.py` on a small hand-made torch-profiler trace."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import profile_digest  # noqa: E402

WORKER, OTHER = 7, 9  # thread ids


def _x(name: str, cat: str, ts: float, dur: float, tid: int = WORKER, correlation: int | None = None) -> dict:
    event = {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": 1, "tid": tid}
    if correlation is not None:
        event["args"] = {"correlation": correlation}
    return event


def _trace() -> list[dict]:
    return [
        # step 1: admits images (our embed scope), launches a kernel and a graph, blocks 3 ms in a sync
        _x("execute_context_2(30)_generation_40(40)", "user_annotation", 0, 10_000),
        _x("qwenvl: embed_multimodal", "user_annotation", 100, 4_000),
        _x("qwenvl: embed_multimodal", "user_annotation", 5_000, 1_000),
        _x("gpu_model_runner: forward", "user_annotation", 6_000, 3_000),
        _x("cudaLaunchKernel", "cuda_runtime", 200, 10, correlation=1),
        _x("cudaMemcpyAsync", "cuda_runtime", 4_000, 800),  # a pageable copy: it waited
        _x("cudaStreamSynchronize", "cuda_runtime", 300, 3_000),
        _x("cudaGraphLaunch", "cuda_runtime", 6_100, 20, correlation=2),
        _x("cudaLaunchKernel", "cuda_runtime", 6_200, 10, tid=OTHER, correlation=3),  # another thread's
        _x("void at::native::vectorized_elementwise_kernel<4>", "kernel", 400, 1_000, tid=100, correlation=1),
        _x("flash_fwd_kernel", "kernel", 7_000, 2_000, tid=100, correlation=2),
        _x("sm90_xmma_gemm_bf16", "kernel", 9_000, 500, tid=100, correlation=2),
        _x("flash_fwd_kernel", "kernel", 9_600, 9_000, tid=100, correlation=3),
        _x("cudaStreamSynchronize", "cuda_runtime", 10_100, 300),  # waits for the previous step's output
        _x("qwenvl: update_from_output", "user_annotation", 10_500, 300),
        _x("qwenvl: schedule", "user_annotation", 11_500, 200),
        _x("cudaLaunchKernel", "cuda_runtime", 11_000, 10, correlation=6),  # sampling, after the annotation
        _x("argmax_kernel", "kernel", 11_100, 200, tid=100, correlation=6),
        # host work by name: an op and a Python function in the model, one after it (sampling), one elsewhere
        _x("aten::copy_", "cpu_op", 150, 900),
        _x("gpu_model_runner.py(100): _prepare_inputs", "python_function", 120, 2_500),
        _x("aten::copy_", "cpu_op", 10_200, 50),  # after execute_model's span: not the model's
        _x("aten::copy_", "cpu_op", 6_300, 100, tid=OTHER),
        # step 2: decodes only, one Triton kernel and a copy
        _x("execute_context_0(0)_generation_42(42)", "user_annotation", 12_000, 2_000),
        _x("cudaLaunchKernel", "cuda_runtime", 12_100, 10, correlation=4),
        _x("cudaMemcpyAsync", "cuda_runtime", 12_200, 10, correlation=5),
        _x("triton_poi_fused_add_0", "kernel", 12_300, 700, tid=100, correlation=4),
        _x("aten::copy_", "cpu_op", 12_400, 300),
        _x("Memcpy HtoD (Pinned -> Device)", "gpu_memcpy", 13_000, 100, tid=100, correlation=5),
        # step 3 (last, no next step to measure a gap to)
        _x("execute_context_0(0)_generation_42(42)", "user_annotation", 15_000, 1_000),
        {"ph": "i", "name": "instant", "ts": 1, "pid": 1, "tid": WORKER},
    ]


def test_steps_get_their_scopes_blocking_calls_and_launched_gpu_work() -> None:
    result = profile_digest.digest(profile_digest.load_events_from(_trace()))
    first, second, third = result["per_step"]
    assert first["gap_ms"] == 12.0 and first["host_ms"] == 10.0
    assert first["new_images"] and first["context_requests"] == 2 and first["decodes"] == 40
    assert first["scopes_ms"] == {
        "gpu_model_runner: forward": 3.0,
        "qwenvl: embed_multimodal": 5.0,
        "qwenvl: schedule": 0.2,
        "qwenvl: update_from_output": 0.3,
    }
    # 2 ms between the model's end and the next step: 0.5 in our scopes, 0.3 waiting for the device
    assert first["unscoped_ms"] == 1.2
    assert first["blocked_ms"] == 4.1 and first["blocked_next_ms"] == 0.0
    # the other thread's launch (correlation 3) is not this step's work
    assert first["gpu_by_category_ms"] == {"attention": 2.0, "elementwise": 1.0, "gemm": 0.5, "other": 0.2}
    assert first["gpu_ms"] == 3.7 and first["gpu_span_ms"] == 10.9
    assert not second["new_images"] and second["gpu_by_category_ms"] == {"copy": 0.1, "triton": 0.7}
    assert second["blocked_ms"] == 0.0  # a copy's launch that returned at once did not wait
    assert "blocked_next_ms" not in third
    assert third["gap_ms"] is None and third["gpu_ms"] == 0.0


def test_groups_compare_steps_with_and_without_new_images() -> None:
    groups = profile_digest.digest(profile_digest.load_events_from(_trace()))["groups"]
    assert groups["new_images"]["steps"] == 1 and groups["no_new_images"]["steps"] == 2
    assert groups["no_new_images"]["gap_ms_mean"] == 3.0  # only step 2 has a next step
    assert groups["no_new_images"]["gpu_ms_mean"] == 0.4
    assert groups["new_images"]["scopes_ms_mean"]["qwenvl: embed_multimodal"] == 5.0


def test_host_names_rank_the_difference_between_the_kinds_of_step() -> None:
    names = profile_digest.digest(profile_digest.load_events_from(_trace()))["host_names"]
    # the Python function only in the admitting step (2.5 ms); the op: 0.9 there, 0.3 over two other steps
    assert names == [
        {"name": "gpu_model_runner.py(100): _prepare_inputs", "new_images_ms": 2.5, "no_new_images_ms": 0.0},
        {"name": "aten::copy_", "new_images_ms": 0.9, "no_new_images_ms": 0.15},
    ]


def test_load_events_reads_gzipped_chrome_traces(tmp_path: Path) -> None:
    path = tmp_path / "worker.pt.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": _trace()}, f)
    events = profile_digest.load_events(path)
    assert len(events) == len(_trace()) - 1  # the instant event has no duration
    assert profile_digest.digest(events)["steps"] == 3


def test_serve_profile_digests_every_trace_the_worker_wrote(tmp_path: Path, monkeypatch) -> None:
    import requests
    import serve_profile

    traces = tmp_path / "traces"
    traces.mkdir()
    monkeypatch.setattr(serve_profile, "TRACE_DIR", traces)
    posted: list[str] = []

    class _Ok:
        def raise_for_status(self) -> None:
            return None

    def post(url: str, timeout: float) -> _Ok:
        posted.append(url.rsplit("/", 1)[1])
        if url.endswith("/stop_profile"):  # the worker writes its trace when the window ends
            with gzip.open(traces / "rank0.pt.trace.json.gz", "wt") as f:
                json.dump({"traceEvents": _trace()}, f)
        return _Ok()

    monkeypatch.setattr(requests, "post", post)
    (traces / "stale.json.gz").write_text("from an earlier window")
    assert serve_profile.start("http://x") is None
    assert not (traces / "stale.json.gz").exists()
    out = tmp_path / "digest.json"
    groups = serve_profile.stop_and_digest("http://x", out)
    assert posted == ["start_profile", "stop_profile"]
    assert groups["rank0.pt.trace.json.gz"]["new_images"]["steps"] == 1
    assert groups["rank0.pt.trace.json.gz"]["host_names"][0]["new_images_ms"] == 2.5
    assert json.loads(out.read_text())["rank0.pt.trace.json.gz"]["steps"] == 3


def test_serve_profile_reports_a_server_without_the_profiler(tmp_path: Path, monkeypatch) -> None:
    import requests
    import serve_profile

    class _NotFound:
        def raise_for_status(self) -> None:
            raise requests.HTTPError("404 Client Error: Not Found")

    def post(url: str, timeout: float) -> _NotFound:  # a server started without --profiler-config
        return _NotFound()

    monkeypatch.setattr(requests, "post", post)
    monkeypatch.setattr(serve_profile, "TRACE_DIR", tmp_path)
    assert "404" in serve_profile.start("http://x")
    assert "stop_profile" in serve_profile.stop_and_digest("http://x", Path("unused"))["error"]


def test_serve_profile_reports_a_window_that_wrote_nothing_or_a_broken_trace(tmp_path, monkeypatch) -> None:
    import requests
    import serve_profile

    class _Ok:
        def raise_for_status(self) -> None:
            return None

    monkeypatch.setattr(requests, "post", lambda url, timeout: _Ok())
    monkeypatch.setattr(serve_profile, "TRACE_DIR", tmp_path)
    monkeypatch.setattr(serve_profile, "EXPORT_WAIT_S", 0)
    assert "no trace" in serve_profile.stop_and_digest("http://x", tmp_path / "out.json")["error"]
    (tmp_path / "rank0.pt.trace.json.gz").write_bytes(b"not gzip")
    error = serve_profile.stop_and_digest("http://x", tmp_path / "out.json")["error"]
    assert error.startswith("digest: ") and not (tmp_path / "out.json").exists()


def test_serve_profile_asks_for_stacks_over_a_shorter_window_only_when_told() -> None:
    import serve_profile

    plain, stacked = (json.loads(serve_profile.server_args(stack)[1]) for stack in (False, True))
    assert not plain["torch_profiler_with_stack"] and plain["max_iterations"] == serve_profile.PROFILED_STEPS
    assert stacked["torch_profiler_with_stack"]
    assert stacked["max_iterations"] == serve_profile.PROFILED_STEPS_WITH_STACK < serve_profile.PROFILED_STEPS

"""GPU check of `benchmarks/profile_digest.py` on a real torch-profiler trace (what the CPU tests hand-make):
a step annotated as vLLM's worker annotates it, eager kernels, a CUDA-graph replay and a synchronising call,
each attributed to the step that launched it. Run on the GPU machine: `python -m pytest
tests/gpu/test_profile_digest_gpu.py -q`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import profile_digest  # noqa: E402

pytestmark = pytest.mark.gpu


def _graph(x: torch.Tensor) -> torch.cuda.CUDAGraph:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(4):
            x.mul_(1.0001)
    return graph


def test_real_trace_steps_get_their_graph_kernels_scopes_and_syncs(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = torch.ones(1 << 20, device="cuda")
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
    graph = _graph(x)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        with torch.profiler.record_function("execute_context_1(999)_generation_3(3)"):
            with torch.profiler.record_function("qwenvl: embed_multimodal"):
                a @ a  # a GEMM
            graph.replay()
        torch.cuda.synchronize()  # the wait for the step's output, after its annotation
        with torch.profiler.record_function("execute_context_0(0)_generation_4(4)"):
            x.add_(1.0)
        torch.cuda.synchronize()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    result = profile_digest.digest(profile_digest.load_events(path))
    first, second = result["per_step"]
    assert first["new_images"] and not second["new_images"]
    assert first["context_tokens"] == 999 and second["decodes"] == 4
    assert first["gpu_by_category_ms"].get("gemm", 0) > 0  # the eager GEMM, by its launch's correlation
    graph_kernels = first["gpu_ms"] - first["gpu_by_category_ms"]["gemm"]
    assert graph_kernels > 0  # the replay's kernels, by the graph launch's correlation
    assert first["blocked_ms"] > 0  # the synchronize after its annotation, in its window
    assert second["gpu_ms"] > 0 and second["gpu_ms"] < first["gpu_ms"]

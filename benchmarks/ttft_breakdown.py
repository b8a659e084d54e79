"""Where one W1 request's time to first token goes, ours vs in-tree (GPU machine).

    python benchmarks/ttft_breakdown.py --ckpt DIR --out FILE [--repeats 10]

One request in flight at a time (a distinct 1024x768 image, 1024 prompt tokens, 1 output token), offline
`LLM.generate`, engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) and synchronous scheduling,
so that each stage can be timed where it runs; each side in its own process. Stages (median ms):
- `frontend`: vLLM's multimodal processor `apply` (tokenize, hash, pixels; images are decoded PIL images);
- `schedule`: the scheduler's `schedule()` calls;
- `pixels`: ours only, resize + normalise + patchify on the GPU (`uint8_rows`), CUDA-synchronised;
- `encoder`: the model's `embed_multimodal` (the tower) minus `pixels`, CUDA-synchronised;
- `forward`: the executor's `execute_model` + `sample_tokens` minus the encoder (inputs, prefill, sampling);
- `other`: the rest of `generate` (engine loop, output processing, detokenising).
The `forward.*` keys split `forward` by the model runner's methods (`RUNNER_PARTS`), each CUDA-synchronised:
`update` (request state, M-RoPE positions), `inputs`, `mm_batching` (the runner's encoder call minus the
model's `embed_multimodal`: grouping the items, moving them to the GPU), `gather` (encoder-cache lookup and
the input embeddings), `lm` (the language model's prefill), `sample`, and `rest`. `mm_batching.reduce` and
`mm_batching.h2d` are the parts of `mm_batching` spent merging each field's items (into pinned memory) and
copying them to the GPU.
The synchronisations cost a little; `ttft_ms` is measured on the same runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from report import print_and_save

HERE = Path(__file__).resolve().parent
WARMUP = 3
# Parts of `forward`: (object reached from the model runner, method, stage). vLLM 0.26 runs these models with
# its V2 model runner (vllm/v1/worker/gpu/model_runner.py); the V1 runner's methods are listed too.
RUNNER_PARTS = {
    "v2": (
        ("", "add_requests", "update"),
        ("", "update_requests", "update"),
        ("", "prepare_inputs", "inputs"),
        ("", "prepare_attn", "inputs"),
        ("model_state.encoder_runner", "execute_mm_encoder", "mm_encoder"),
        ("model_state.encoder_runner", "gather_mm_embeddings", "gather"),
        ("model_state.encoder_runner", "get_inputs_embeds", "gather"),
        ("model", "forward", "lm"),
        ("", "sample", "sample"),
    ),
    "v1": (
        ("", "_update_states", "update"),
        ("", "_prepare_inputs", "inputs"),
        ("", "_execute_mm_encoder", "mm_encoder"),
        ("", "_gather_mm_embeddings", "gather"),
        ("", "_model_forward", "lm"),
        ("", "_sample", "sample"),
    ),
}
PART_STAGES = ("update", "inputs", "gather", "lm", "sample")


def _owner(runner: object, path: str) -> object:
    for attr in filter(None, path.split(".")):
        runner = getattr(runner, attr)
    return runner


class Stopwatch:
    """Accumulates wall time per stage; `sync` calls it with the GPU drained on both ends."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)

    def wrap(self, owner: object, attr: str, stage: str, sync: bool = False) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            import torch

            if sync:
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                if sync:
                    torch.cuda.synchronize()
                self.ms[stage] += (time.perf_counter() - start) * 1000

        setattr(owner, attr, timed)


def _instrument(llm, watch: Stopwatch, ours: bool) -> None:
    from vllm.multimodal.processing.processor import BaseMultiModalProcessor

    core = llm.llm_engine.engine_core.engine_core
    runner = core.model_executor.driver_worker.worker.model_runner
    model = runner.get_model() if hasattr(runner, "get_model") else runner.model
    watch.wrap(BaseMultiModalProcessor, "apply", "frontend")
    watch.wrap(core.scheduler, "schedule", "schedule")
    watch.wrap(model, "embed_multimodal", "embed", sync=True)
    watch.wrap(core.model_executor, "execute_model", "execute", sync=True)
    watch.wrap(core.model_executor, "sample_tokens", "execute", sync=True)
    for path, attr, stage in RUNNER_PARTS["v2" if hasattr(runner, "model_state") else "v1"]:
        try:
            watch.wrap(_owner(runner, path), attr, stage, sync=True)
        except AttributeError:  # another vLLM: the part stays in forward.rest
            print(f"ttft_breakdown: no {path or 'runner'}.{attr} to time", file=sys.stderr)
    _instrument_mm_batching(watch)
    if ours:
        import qwenvl_vllm.models.qwen2_vl as ours_model

        watch.wrap(ours_model, "uint8_rows", "pixels", sync=True)


def _instrument_mm_batching(watch: Stopwatch) -> None:
    """Split `mm_batching`: merging each field's items (pinned host copies), their host-to-device copies."""
    import vllm.multimodal.inputs as mm_inputs

    for field in (mm_inputs.MultiModalBatchedField, mm_inputs.MultiModalFlatField):
        watch.wrap(field, "_reduce_data", "mm_reduce", sync=True)
    watch.wrap(mm_inputs, "_nested_tensors_h2d", "mm_h2d", sync=True)


def _stages(ms: dict[str, float], total: float) -> dict[str, float]:
    stages = {
        "frontend": ms["frontend"],
        "schedule": ms["schedule"],
        "pixels": ms["pixels"],
        "encoder": ms["embed"] - ms["pixels"],
        "forward": ms["execute"] - ms["embed"],
    }
    parts = {stage: ms.get(stage, 0.0) for stage in PART_STAGES}
    parts["mm_batching"] = ms.get("mm_encoder", ms["embed"]) - ms["embed"]
    parts["rest"] = stages["forward"] - sum(parts.values())
    batching = {f"forward.mm_batching.{k}": ms.get(f"mm_{k}", 0.0) for k in ("reduce", "h2d")}
    return (
        stages
        | {"other": total - sum(stages.values()), "ttft_ms": total}
        | {f"forward.{k}": v for k, v in parts.items()}
        | batching
    )


def worker(args: argparse.Namespace, ours: bool) -> dict:
    sys.path.insert(0, str(HERE))
    from vllm import LLM, SamplingParams
    from workloads import w1

    llm = LLM(
        args.ckpt,
        max_model_len=16384,
        kv_cache_memory_bytes=int(args.kv_cache_gib * 2**30),
        limit_mm_per_prompt={"image": 1},
        async_scheduling=False,
    )
    requests = w1(WARMUP + args.repeats)
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    for request in requests[:WARMUP]:
        llm.generate([request], params, use_tqdm=False)
    watch = Stopwatch()
    _instrument(llm, watch, ours)
    runs = []
    for request in requests[WARMUP:]:
        watch.ms.clear()
        start = time.perf_counter()
        llm.generate([request], params, use_tqdm=False)
        runs.append(_stages(watch.ms, (time.perf_counter() - start) * 1000))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _side(impl: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    env["QWENVL_VLLM_DISABLE"] = "1" if impl == "in_tree" else "0"
    cmd = [sys.executable, __file__, "--worker", impl, "--ckpt", args.ckpt, "--repeats", str(args.repeats)]
    cmd += ["--kv-cache-gib", str(args.kv_cache_gib)]
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "stages.json"  # not stdout: vLLM logs there too
        proc = subprocess.run([*cmd, "--out", str(result)], env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{impl} side exited {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}")
        return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--kv-cache-gib", type=float, default=24.0)
    parser.add_argument("--worker", choices=["ours", "in_tree"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.out).write_text(json.dumps(worker(args, ours=args.worker == "ours")))
        return 0
    import torch

    sides = {impl: _side(impl, args) for impl in ("ours", "in_tree")}
    result = {
        "gpu": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d"),
        "workload": "W1 single request, 1 output token",
        "ckpt": args.ckpt,
        "repeats": args.repeats,
        **sides,
        "ttft_ratio": sides["ours"]["ttft_ms"] / sides["in_tree"]["ttft_ms"],
    }
    print_and_save(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

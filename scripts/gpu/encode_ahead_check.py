"""GPU check of the encode-ahead scheduler (issue 12): same greedy outputs as vLLM's default scheduler, and
nothing left in the encoder caches after requests finish or are aborted mid-encode.

    python scripts/gpu/encode_ahead_check.py --ckpt DIR --out FILE [--kv-cache-gib 8] [--scheduler-cls CLS]

`--scheduler-cls`: which of our encode-ahead schedulers (default: EncodeAheadAsyncScheduler; with
EncodeAheadSlicedAsyncScheduler the tower runs in slices and the slicer's queue must also end empty).

Both sides are ours (the plugin), one engine each in its own subprocess, in-process engine core
(VLLM_ENABLE_V1_MULTIPROCESSING=0) so the worker can read the scheduler's and the runner's encoder caches.
Prompts: `qwen2_vl_parity.greedy_requests()` (text, images of eight sizes, two images, videos), 16 greedy
tokens. Batches differ between the schedulers (that is the point), and bf16 kernels may round differently
per batch shape, so the pass rule is the parity script's: identical prompt ids, and generated tokens
identical or diverging only at a near-tie. Abort: 16 one-image requests are added, the engine steps twice
(encodes in flight on the side stream or queued in slices, tokens held), all are aborted, the engine runs
dry, then serves one text request.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine_args import add_engine_args, engine_argv, run_json_worker
from qwen2_vl_parity import IMAGE, TIE_MARGIN, _image, _llm, _turn, greedy_compare, greedy_results

AHEAD = "qwenvl_vllm.serving.encode_ahead.EncodeAheadAsyncScheduler"


def _caches(llm) -> dict[str, Any]:
    core = llm.llm_engine.engine_core.engine_core
    manager = core.scheduler.encoder_cache_manager
    runner = core.model_executor.driver_worker.worker.model_runner
    runner_cache = runner.encoder_cache
    outputs = getattr(runner_cache, "encoder_outputs", runner_cache)  # V2: EncoderCache; V1: dict
    slicer = getattr(runner.model, "_tower_slicer", None)
    return {
        "slicer_queued": len(slicer._queue) if slicer is not None else 0,
        "scheduler_referenced": sum(1 for refs in manager.cached.values() if refs),
        "scheduler_freeable_slots": manager.num_freeable_slots,
        "scheduler_cache_size": manager.cache_size,
        "runner_entries": len(outputs),
    }


def _abort_mid_encode(llm) -> dict[str, Any]:
    from vllm import SamplingParams

    engine = llm.llm_engine
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    ids = [f"abort{i}" for i in range(16)]
    prompt = _turn(f"{IMAGE}Describe.")
    for i, rid in enumerate(ids):
        image = _image(756, 1036, 900 + i)  # a 1024x768 photo's size after smart_resize
        engine.add_request(rid, {"prompt": prompt, "multi_modal_data": {"image": image}}, params)
    engine.step()
    engine.step()
    during = _caches(llm)
    engine.abort_request(ids)
    _run_dry(engine)
    # one more request: its steps are where the runner lets go of what the aborted requests had in flight,
    # and (64 steps) where the tower slicer runs the aborted requests' queued encodes to their end
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
    engine.add_request("after_abort", {"prompt": _turn("Hello.")}, params)
    _run_dry(engine)
    return {"during": during, "after": _caches(llm)}


def _run_dry(engine) -> None:
    for _ in range(100):
        if not engine.has_unfinished_requests():
            return
        engine.step()


def worker(args: argparse.Namespace) -> dict[str, Any]:
    llm = _llm(args, **({"scheduler_cls": args.scheduler_cls} if args.side == "ahead" else {}))
    result: dict[str, Any] = {"results": greedy_results(llm), "after_generate": _caches(llm)}
    try:
        result["abort"] = _abort_mid_encode(llm)
    except Exception as exc:  # report, do not lose the greedy results
        result["abort_error"] = repr(exc)
    return result


def _run(side: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    argv = ["--worker", side, "--ckpt", args.ckpt, "--scheduler-cls", args.scheduler_cls, *engine_argv(args)]
    env = {"QWENVL_VLLM_DISABLE": "0", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    return run_json_worker(__file__, argv, out, **env)


def _clean(caches: dict[str, Any]) -> bool:
    freeable, size = caches["scheduler_freeable_slots"], caches["scheduler_cache_size"]
    return caches["scheduler_referenced"] == 0 and freeable == size and caches["slicer_queued"] == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--worker", choices=["default", "ahead"], dest="side")
    add_engine_args(parser)
    parser.add_argument("--tie-margin", type=float, default=TIE_MARGIN)
    parser.add_argument("--scheduler-cls", default=AHEAD)
    args = parser.parse_args()
    out = Path(args.out)
    if args.side:
        out.write_text(json.dumps(worker(args)))
        return 0
    default = _run("default", args, out.with_suffix(".default.json"))
    ahead = _run("ahead", args, out.with_suffix(".ahead.json"))
    greedy = greedy_compare(ahead["results"], default["results"], args.tie_margin)
    abort = ahead.get("abort")
    result = {
        "ckpt": args.ckpt,
        "scheduler": args.scheduler_cls,
        "greedy_vs_default": {k: v for k, v in greedy.items() if k != "entries"},
        "divergences": [e for e in greedy["entries"] if not e["tokens_equal"]],
        "caches_after_generate": ahead["after_generate"],
        "abort": abort if abort is not None else ahead.get("abort_error"),
    }
    result["pass"] = bool(
        greedy["pass"] and _clean(ahead["after_generate"]) and abort is not None and _clean(abort["after"])
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

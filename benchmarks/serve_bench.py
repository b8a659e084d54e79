"""Serving benchmark: `vllm serve` (ours, then in-tree) driven by an async OpenAI-compatible client.

  python benchmarks/serve_bench.py --ckpt DIR --concurrency 1 16 64 --out-dir DIR [--image-size WxH]
Each request: one distinct JPEG photo-sized image (default 1024x768; 1920x1080 and 4032x3024 are the
front-end-heavy workloads) as a base64 image_url, 64 streamed output tokens (ignore_eos, greedy). Reports
req/s, TTFT p50/p99, inter-token latency p50/p99, the share of gaps above 50/100/200 ms at the client and
in the engine (vLLM's `/metrics`: `server_metrics.py`), our schedulers' step gaps
(`qwenvl_vllm.serving.step_trace`, sides with our `--scheduler-cls`), the client's own event-loop lag
(`serve_client.py`; `--client-processes` spreads the streams over processes) and errors per concurrency,
and writes <out-dir>/serve-c<N>.json (serve-<WxH>-c<N>.json for other sizes) with the same top-level keys
as compare.py.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_profile  # noqa: E402
from compare import memory_from_log  # noqa: E402
from gpu_memory import PeakMemory  # noqa: E402
from serve_client import run_level, wait_ready  # noqa: E402
from server_metrics import engine_itl_shares, scrape  # noqa: E402
from workloads import random_rgb  # noqa: E402

PORT = 8021
KV_BUDGET = 24 * 2**30  # fixed for both sides, as in compare.py
WAVES = 4  # a level's requests are this many rounds of its concurrency (fewer for 12 MP photos: slow)
URL = f"http://127.0.0.1:{PORT}"


DEFAULT_SIZE = "1024x768"
IMAGE_SIZES = (DEFAULT_SIZE, "1920x1080", "4032x3024")


def jpeg_urls(count: int, size: str) -> list[str]:
    """`count` distinct photos, made in parallel: a 12 MP one takes ~2 s, and a run needs up to ~100."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    started = time.monotonic()
    with ProcessPoolExecutor(min(8, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        urls = list(pool.map(jpeg_url, range(count), [size] * count))
    progress(f"{count} {size} images in {time.monotonic() - started:.0f} s")
    return urls


def progress(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def jpeg_url(seed: int, size: str = DEFAULT_SIZE) -> str:
    width, height = (int(v) for v in size.split("x"))
    buf = io.BytesIO()
    Image.fromarray(random_rgb(height, width, seed)).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


AHEAD_MODULE = "qwenvl_vllm.serving.encode_ahead"
AHEAD = f"{AHEAD_MODULE}.EncodeAheadAsyncScheduler"
PACED = "qwenvl_vllm.serving.scheduler.EncoderPacedAsyncScheduler"
TRACED = "qwenvl_vllm.serving.scheduler.TracedAsyncScheduler"  # vLLM's scheduler, with the step trace
AHEAD_PACED = f"{AHEAD_MODULE}.EncodeAheadPacedAsyncScheduler"
GRAPHED = f"{AHEAD_MODULE}.EncodeAheadGraphedAsyncScheduler"  # asks for the step cap and graph size itself
SLICED = f"{AHEAD_MODULE}.EncodeAheadSlicedAsyncScheduler"  # the same, and the tower in slices over the steps
SLICED_PACED = f"{AHEAD_MODULE}.EncodeAheadSlicedPacedAsyncScheduler"
GRAPHS_2K = ["--max-cudagraph-capture-size", "2048", "--max-num-scheduled-tokens", "2048"]
# the slicers' settings that rounds 22 and 23 made defaults, off: the tNN sides keep their names' meaning
OLD_SLICER_DEFAULTS = {
    "QWENVL_VLLM_STEP_TARGET_SMALL_MS": "0",
    "QWENVL_VLLM_SLICER_FULL_GRAPHS": "0",
    "QWENVL_VLLM_SLICES_ON_SIDE_STREAM": "0",
}
FIXED_BUDGET = {"QWENVL_VLLM_STEP_TARGET_MS": "0"}  # the slicers' budget before the step target (round 13)
BACKLOG_12_17 = {
    **FIXED_BUDGET,
    "QWENVL_VLLM_TOWER_BACKLOG_SCALE": "1.7",
    "QWENVL_VLLM_TOWER_BACKLOG_REQUESTS": "12",
}
ONE_IMAGE_PER_STEP = {"QWENVL_VLLM_ENCODER_STEP_TOKENS": "1024"}  # a 1024x768 image is 999 encoder tokens
# name -> (plugin on, extra `vllm serve` arguments, extra environment); a side sets what its name says, the
# rest is the plugin's defaults when it runs (the slicers': a step target since round 13; see settings.py)
SIDES = {
    "ours": (True, [], {}),
    "ours_traced": (True, ["--scheduler-cls", TRACED], {}),
    "ours_paced": (True, ["--scheduler-cls", PACED], {}),
    "ours_paced_1k": (True, ["--scheduler-cls", PACED], ONE_IMAGE_PER_STEP),
    "ours_ahead": (True, ["--scheduler-cls", AHEAD], {}),
    "ours_ahead_equal": (True, ["--scheduler-cls", AHEAD], {"QWENVL_VLLM_LM_STREAM_PRIORITY": "0"}),
    # at most 2048 tokens per step (prefill chunks beside the decodes, not ~8k tokens, ~40 ms), while the
    # encoder budget stays vLLM's (`--max-num-batched-tokens` would lower both)
    "ours_ahead_2k": (True, ["--scheduler-cls", AHEAD, "--max-num-scheduled-tokens", "2048"], {}),
    "ours_ahead_paced": (True, ["--scheduler-cls", AHEAD_PACED], {}),
    # one image per side-stream encode: the tower's kernels are 1/8 as long, so a decode kernel waiting
    # for the SMs (the tower's GEMMs and FA3 hold them until they end) waits 1/8 as long
    "ours_ahead_paced_1k": (True, ["--scheduler-cls", AHEAD_PACED], ONE_IMAGE_PER_STEP),
    # two API-server processes share the front end's work (media decoding, our processor, streaming): does
    # the c=64 inter-token tail come from one busy API server?
    "ours_api2": (True, ["--api-server-count", "2"], {}),
    "ours_ahead_api2": (True, ["--scheduler-cls", AHEAD, "--api-server-count", "2"], {}),
    # Steps up to 2048 tokens as CUDA graphs (vLLM's default stops at 512: a 1k-token prefill step runs the
    # LM eagerly, ~30 ms of host time in the step traces) and at most 2048 tokens per step; with encode ahead
    # and/or one image per step, the mechanisms `benchmarks/sched_sim.py` ranks first
    "ours_g2k": (True, ["--scheduler-cls", TRACED, *GRAPHS_2K], {}),
    "ours_paced_1k_g2k": (True, ["--scheduler-cls", PACED, *GRAPHS_2K], ONE_IMAGE_PER_STEP),
    "ours_ahead_g2k": (True, ["--scheduler-cls", AHEAD, *GRAPHS_2K], {}),
    "ours_ahead_graphed": (True, ["--scheduler-cls", GRAPHED], {}),  # ours_ahead_g2k as one flag
    "ours_ahead_paced_1k_g2k": (True, ["--scheduler-cls", AHEAD_PACED, *GRAPHS_2K], ONE_IMAGE_PER_STEP),
    # the tower spread over the steps, ~20 of its 32 blocks per step (the default budget; 1.5x while requests
    # wait); with 28 (~13 ms); with no growth while requests wait
    "ours_sliced": (True, ["--scheduler-cls", SLICED], {}),
    "ours_sliced_28": (
        True,
        ["--scheduler-cls", SLICED],
        {"QWENVL_VLLM_TOWER_STEP_PATCH_LAYERS": str(28 * 4096)},
    ),
    "ours_sliced_flat": (
        True,
        ["--scheduler-cls", SLICED],
        {**FIXED_BUDGET, "QWENVL_VLLM_TOWER_BACKLOG_SCALE": "1"},
    ),
    # the same admitting one image per step (round 8: each admitted image adds ~8 ms of host work to its step)
    "ours_sliced_paced": (True, ["--scheduler-cls", SLICED_PACED], {}),
    # one torch thread in every process: does vLLM's pinning/stacking of the pixels (the only multi-MB host
    # op at admission) stall in OpenMP regions contended by the API server's threads?
    "ours_sliced_omp1": (True, ["--scheduler-cls", SLICED], {"OMP_NUM_THREADS": "1"}),
    # round 9: paced c=64 spent ~0.96 of an image's tower per step while 8+ requests were admitting, its
    # queue grew through the c=64 ramp (TTFT p99 +11% vs ours); at c=16 most steps counted as a backlog
    # (ITL p99 21.5 ms). A budget above one image per step; the same with a backlog from 12 requests
    "ours_sliced_paced_s17": (
        True,
        ["--scheduler-cls", SLICED_PACED],
        {**FIXED_BUDGET, "QWENVL_VLLM_TOWER_BACKLOG_SCALE": "1.7"},
    ),
    "ours_sliced_paced_b12_s17": (
        True,
        ["--scheduler-cls", SLICED_PACED],
        BACKLOG_12_17,
    ),
    # round 9's slow ramp steps (a new band of 8 requests): CUDA kernels loaded at start-up instead of at
    # first launch (confirms the cause: slower start, more memory), and the logits warmed per band (the fix;
    # the default since round 10, so the _warm sides now equal their names without it)
    "ours_sliced_paced_eager_modules": (
        True,
        ["--scheduler-cls", SLICED_PACED],
        {"CUDA_MODULE_LOADING": "EAGER"},
    ),
    "ours_sliced_paced_warm": (True, ["--scheduler-cls", SLICED_PACED], {"QWENVL_VLLM_WARM_LOGITS": "1"}),
    # the candidate default: round 9's budget settings (c=16 ITL p99 18.7 ms) with the ramp's fix beside them
    "ours_sliced_paced_warm_b12_s17": (
        True,
        ["--scheduler-cls", SLICED_PACED],
        {**BACKLOG_12_17, "QWENVL_VLLM_WARM_LOGITS": "1"},
    ),
    # round 10: with the ramp's slow steps gone (the warm-up, now the default), the client's ITL p99 sits
    # above the engine's longest step: streaming waits behind the API server's image work?
    # the slicers' defaults are their best: t16 x1.35, a 12-ms small-batch target, FULL graphs (round 22),
    # the slices on a side stream (round 23)
    "ours_sliced_paced_api2": (True, ["--scheduler-cls", SLICED_PACED, "--api-server-count", "2"], {}),
    # round 22: an admitting step is ~10 ms of tower, ~6 of prefill, ~4 of decodes and fixed cost, in order;
    # the tower's slices on a side stream beside the LM (models.slice_stream), for c=64's first-wave TTFT
    # (round 23's A/B: 1.05x req/s, TTFT p99 -3%; the default since, so `_side` is the default explicitly)
    "ours_sliced_paced_side_api2": (
        True,
        ["--scheduler-cls", SLICED_PACED, "--api-server-count", "2"],
        {"QWENVL_VLLM_SLICES_ON_SIDE_STREAM": "1"},
    ),
    "ours_sliced_paced_onestream_api2": (
        True,
        ["--scheduler-cls", SLICED_PACED, "--api-server-count", "2"],
        {"QWENVL_VLLM_SLICES_ON_SIDE_STREAM": "0"},
    ),
    # the README's main command: the paced slicer by the plugin's setting (its async/sync dispatcher)
    "ours_main": (True, ["--api-server-count", "2"], {"QWENVL_VLLM_SCHEDULER": "sliced_paced"}),
    "ours_sliced_paced_b12_s17_api2": (
        True,
        ["--scheduler-cls", SLICED_PACED, "--api-server-count", "2"],
        BACKLOG_12_17,
    ),
    # ours_sliced_paced chosen by the plugin's setting instead of the flag (the config hook's dispatcher)
    "ours_sliced_paced_env": (True, [], {"QWENVL_VLLM_SCHEDULER": "sliced_paced"}),
    # round 12: the paced slicer's steady steps took 25.5 ms at p50, 37.6 at most, at c=64 (budget 1x or 1.7x,
    # blind to the rest of the step); a step-time target gives each step the tower work its LM work leaves
    # room for (qwenvl_vllm.models.step_budget), two API servers as the round's paced side; sched_sim.py
    # ranks 18 and 20 ms first, 1.45x while 12 requests wait (benchmarks/results/2026-12-03-devcpu)
    # round 13: t18 ran c=64's engine at 27.1 ms (client 30.7); sched_sim gives x1.35 under backlog 24.7 ms
    # at -0.4% req/s (benchmarks/results/2026-12-03-h200-round13)
    **{
        f"ours_sliced_paced_t{target}{suffix}_api2": (
            True,
            ["--scheduler-cls", SLICED_PACED, "--api-server-count", "2"],
            {
                "QWENVL_VLLM_STEP_TARGET_MS": str(target),
                "QWENVL_VLLM_TOWER_BACKLOG_SCALE": scale,
                "QWENVL_VLLM_TOWER_BACKLOG_REQUESTS": "12",
                **OLD_SLICER_DEFAULTS,
                **extra,
            },
        )
        # round 19: t16 for c=64's tail (round 13's t18: 30.7 ms client p99, 1.16x ours' req/s to spend)
        # round 20: t16 x1.35 gave c=64 30.3 ms at 1.04x ours; the budget learning the extra cost of the
        # steps that queue an image apart (QWENVL_VLLM_STEP_ADMIT_COST) was round 21's `_s135` (then the
        # default), `_oneclass` the same without it: the A/B (one cost won; the default since, so `_s135`
        # is `_oneclass` now and `_s135_byimage` the other); `_synccheck` counts the synchronising calls
        # inside our host scopes into the step trace (step_trace_report.py prints the counts)
        for target, suffix, scale, extra in (
            (18, "", "1.45", {}),
            (20, "", "1.45", {}),
            (18, "_s135", "1.35", {}),
            (16, "", "1.45", {}),
            (16, "_s135", "1.35", {}),
            (16, "_s135_oneclass", "1.35", {"QWENVL_VLLM_STEP_ADMIT_COST": "0"}),
            (16, "_s135_byimage", "1.35", {"QWENVL_VLLM_STEP_ADMIT_COST": "1"}),
            # round 21: c=16 20.4-22.3 ms; a 12-ms target while <= 16 requests decode (sched_sim: 18.3-18.9)
            (16, "_s135_small12", "1.35", {"QWENVL_VLLM_STEP_TARGET_SMALL_MS": "12"}),
            (18, "_s135_small12", "1.35", {"QWENVL_VLLM_STEP_TARGET_SMALL_MS": "12"}),
            (16, "_s135_synccheck", "1.35", {"QWENVL_VLLM_SYNC_CHECK": "1"}),
        )
    },
    # round 14: on a noisy host the steps with tower work ran 7-10 ms over their fitted cost at p90; the
    # defaults (t18, x1.45) with 1.5 learned deviations kept free (models.step_budget); sched_sim.py with
    # that host's residuals: c=16 ITL p99 -4 ms, c=64 no gain, TTFT p99 up (benchmarks/results/*-devcpu)
    "ours_sliced_paced_m15_api2": (
        True,
        ["--scheduler-cls", SLICED_PACED, "--api-server-count", "2"],
        {"QWENVL_VLLM_STEP_TARGET_MARGIN": "1.5"},
    ),
    # vLLM's own 512-token graph limit for our default path (QWENVL_VLLM_GRAPH_TOKENS, 2048 since round 12)
    "ours_graphs_512": (True, [], {"QWENVL_VLLM_GRAPH_TOKENS": "0"}),
    # ours_sliced again, for --profile-side (the profiler slows the side it watches)
    "ours_sliced_profiled": (True, ["--scheduler-cls", SLICED], {}),
    "in_tree": (False, [], {}),
}
# round 21's profile: a step with a prefill chunk beside the decodes took ~8 ms more host time than a
# decode-only one (profiled); vLLM runs such mixed steps in piecewise graphs, attention eager in every layer,
# and whole-step graphs only for decode-only steps. FA3 allows whole-step graphs of mixed steps too.
FULL_GRAPHS = ["--compilation-config", '{"cudagraph_mode": "FULL"}']


def _with_args(side: str, more: list[str]) -> tuple[bool, list[str], dict[str, str]]:
    plugin, args, env = SIDES[side]
    return plugin, [*args, *more], env


PACED_T16 = "ours_sliced_paced_t16_s135_api2"  # round 21: c=64 ITL p99 27.2-28.0 ms
SIDES["ours_fullgraphs"] = _with_args("ours", FULL_GRAPHS)
SIDES[PACED_T16.replace("_api2", "_fullgraphs_api2")] = _with_args(PACED_T16, FULL_GRAPHS)
for _small12 in ("ours_sliced_paced_t16_s135_small12_api2", "ours_sliced_paced_t18_s135_small12_api2"):
    SIDES[_small12.replace("_api2", "_fullgraphs_api2")] = _with_args(_small12, FULL_GRAPHS)


def start(
    ckpt: str, impl: str, log: Path, serve_args: list[str], trace: Path, profiled: bool, stack: bool = False
) -> subprocess.Popen:
    plugin, extra, side_env = SIDES[impl]
    if profiled:
        serve_args = [*serve_args, *serve_profile.server_args(stack)]
        side_env = side_env | serve_profile.SERVER_ENV
    env = dict(os.environ, QWENVL_VLLM_DISABLE="0" if plugin else "1", **side_env)
    env["QWENVL_VLLM_STEP_TRACE"] = str(trace)  # only our schedulers write it
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", ckpt, "--served-model-name", "m"]
    cmd += ["--port", str(PORT), "--max-model-len", "16384", "--kv-cache-memory-bytes", str(KV_BUDGET)]
    cmd += ["--limit-mm-per-prompt", '{"image": 1}', *extra, *serve_args]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def run_server(
    args: argparse.Namespace,
    impl: str,
    images: list[str],
    log: Path,
    memory,
    on_level: Callable[[list[dict]], None],
) -> list[dict]:
    """The side's levels; `on_level` gets the finished ones after each (a time limit keeps them)."""
    trace = log.with_name(f"steps_{impl}.jsonl")
    trace.unlink(missing_ok=True)
    profiled = impl == args.profile_side
    proc = start(args.ckpt, impl, log, args.serve_args.split(), trace, profiled, args.profile_stack)
    windows: list[tuple[float, float]] = []
    offset, levels = 4, []
    try:
        wait_ready(proc, URL)
        progress(f"{impl} ready")
        run_level(URL, 2, images[:4], 8)  # warm-up
        for c in args.concurrency:
            n = requests_for(c, args.waves)
            memory.reset()
            profiling = profiled and c == args.profile_concurrency
            profile_error = serve_profile.start(URL) if profiling else None
            before, since = scrape(URL), time.monotonic()
            level_images = images[offset : offset + n]
            spread, processes = args.max_tokens_spread, args.client_processes
            level = run_level(URL, c, level_images, args.max_tokens, spread, processes)
            windows.append((since, time.monotonic()))
            engine = engine_itl_shares(scrape(URL), before)
            levels.append(level | {"engine_itl_share": engine, "peak_gpu_gib": memory.peak_gib()})
            if profiling:
                digest = log.with_name(f"profile_{impl}_c{c}.json")
                levels[-1]["profiled"] = (
                    {"error": profile_error} if profile_error else serve_profile.stop_and_digest(URL, digest)
                )
            offset += n
            progress(f"{impl} {levels[-1]}")
            on_level(levels)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    # imported here, not at the top: it loads vLLM, which the client processes (spawned, so they import
    # this module again) must not wait for
    from qwenvl_vllm.serving import step_trace

    traced = step_trace.load(trace)
    for level, (since, until) in zip(levels, windows, strict=True):
        steps = step_trace.window(traced, since, until)
        if steps:
            level["step_trace"] = step_trace.summarize(steps)
    return levels


def workload_name(size: str, concurrency: int, spread: int = 0) -> str:
    name = f"serve-c{concurrency}" if size == DEFAULT_SIZE else f"serve-{size}-c{concurrency}"
    return f"{name}-spread{spread}" if spread else name


def requests_for(concurrency: int, waves: int = WAVES) -> int:
    """Requests of a level: `waves` rounds of its concurrency, at least 8 per wave (32 by default)."""
    return waves * max(8, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--waves", type=int, default=WAVES, help="requests per level: this many times max(8, concurrency)"
    )
    parser.add_argument(
        "--max-tokens-spread",
        type=int,
        default=0,
        help="output lengths max_tokens +- this (0: all equal, the issue's workload; the clients then finish "
        "in lock step and arrive in cohorts)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=4,
        help="spread each level's workers over this many client processes (1: one event loop reads every "
        "stream, as before round 12, and adds ~8 ms to c=64's ITL p99 on the H200 host; 4: ~2.5 ms)",
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument(
        "--extra-sides",
        nargs="*",
        default=[],
        choices=[side for side in SIDES if side not in ("ours", "in_tree")],
        help="also run these (reported per side)",
    )
    parser.add_argument("--image-size", default=DEFAULT_SIZE, choices=IMAGE_SIZES)
    parser.add_argument(
        "--in-tree-last",
        action="store_true",
        help="run in-tree after the extra sides (a short lease then keeps our mechanisms' numbers first)",
    )
    parser.add_argument(
        "--no-in-tree", action="store_true", help="our sides only (a diagnostic run of our mechanisms)"
    )
    parser.add_argument(
        "--no-ours",
        action="store_true",
        help="in-tree and the extra sides only (a diagnostic run on a short lease)",
    )
    parser.add_argument(
        "--serve-args", default="", help="more `vllm serve` arguments for every side, e.g. '-tp 2'"
    )
    parser.add_argument(
        "--profile-side",
        choices=list(SIDES),
        help="run this side's server with vLLM's torch profiler and digest a window of one level "
        "(`serve_profile.py`: profile_<side>_c<N>.json beside the logs)",
    )
    parser.add_argument(
        "--profile-concurrency", type=int, default=64, help="the level --profile-side profiles"
    )
    parser.add_argument(
        "--profile-stack",
        action="store_true",
        help="with Python stacks: the digest's host_names then name Python functions, over a shorter window",
    )
    args = parser.parse_args()
    if args.waves < 1:
        parser.error(f"--waves must be at least 1, got {args.waves}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(requests_for(c, args.waves) for c in args.concurrency) + 4
    images = jpeg_urls(total, args.image_size)
    sides: dict[str, list[dict]] = {}
    extra = args.extra_sides
    order = ["ours", *extra, "in_tree"] if args.in_tree_last else ["ours", "in_tree", *extra]
    if args.no_in_tree:
        order.remove("in_tree")
    if args.no_ours:
        order.remove("ours")
    failed: dict[str, str] = {}

    def keep(impl: str, levels: list[dict]) -> None:
        sides[impl] = list(levels)  # a time limit or a failure later keeps them
        write_results(args, sides, out_dir, failed)

    for impl in order:
        log = out_dir / f"serve_bench_{impl}.log"
        try:
            with PeakMemory() as memory:
                levels = run_server(args, impl, images, log, memory, partial(keep, impl))
        except RuntimeError as exc:
            if impl in ("ours", "in_tree"):
                raise
            failed[impl] = str(exc)  # an experimental side that does not start is reported, not fatal
            print(impl, "failed:", exc, flush=True)
            write_results(args, sides, out_dir, failed)  # its finished levels (if any) stay, now named failed
            continue
        startup = memory_from_log(log.read_text())
        sides[impl] = [level | startup for level in levels]
        write_results(args, sides, out_dir, failed)  # after every side: a time limit keeps the finished ones


def ratio(ours: dict | None, in_tree: dict | None) -> float | None:
    return ours["req_per_s"] / in_tree["req_per_s"] if ours and in_tree and in_tree["req_per_s"] else None


def level_of(sides: dict[str, list[dict]], side: str, index: int) -> dict | None:
    """A side's result at its index-th concurrency; None where the side has not run (or not that far)."""
    levels = sides.get(side, [])
    return levels[index] if index < len(levels) else None


def write_results(
    args: argparse.Namespace, sides: dict[str, list[dict]], out_dir: Path, failed: dict[str, str]
) -> None:
    import torch
    import vllm

    extra = [side for side in args.extra_sides if side in sides]
    for i, c in enumerate(args.concurrency):
        name = workload_name(args.image_size, c, args.max_tokens_spread)
        ours, in_tree = level_of(sides, "ours", i), level_of(sides, "in_tree", i)
        result = {
            "gpu": torch.cuda.get_device_name(),
            "date": time.strftime("%Y-%m-%d"),
            "vllm_version": vllm.__version__,
            "workload": name,
            "ours": ours,
            "in_tree": in_tree,
            "ratio": ratio(ours, in_tree),
            **{side: level_of(sides, side, i) for side in extra},
            "config": {
                "ckpt": args.ckpt,
                "max_tokens": args.max_tokens,
                "waves": args.waves,
                "max_tokens_spread": args.max_tokens_spread,
                "image": f"{args.image_size} JPEG base64",
                "max_model_len": 16384,
                "kv_cache_budget_gib": KV_BUDGET / 2**30,
                "extra_sides": {side: [*SIDES[side][1], SIDES[side][2]] for side in extra},
                "sides_not_run": [
                    side for side in ("ours", *args.extra_sides, "in_tree") if side not in sides
                ],
                "sides_failed": failed,
                "serve_args": args.serve_args.split(),
            },
        }
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

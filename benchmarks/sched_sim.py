"""A closed-loop serving simulation: vLLM's real scheduler (ours or its own) driven on the CPU with a cost
model of the GPU and the API server, to compare scheduling policies before spending GPU time on them.

  python benchmarks/sched_sim.py --scheduler default paced ahead ahead_paced [--encoder-step-tokens 1024]
What is real: the scheduler classes (budgets, chunked prefill, encoder-cache accounting, our pacing and
encode-ahead holds). What is modelled (`Costs`, defaults fitted to the H200 step traces of
`benchmarks/results/2026-12-02-h200-round6/`, 2B GPTQ-Int4, 1024x768 images): a step's GPU time from its
decodes, prefill tokens and encoder tokens; the tower's side stream under encode ahead (`side_cost`: how
much of its work lengthens the steps it runs beside, 1 = none hidden, as measured at c=64); the API
server (64 requests arriving together: the first reaches the engine ~210 ms later, the rest ~5 ms apart, as
the traces show). Numbers are predictions to rank policies, not measurements. The slicers' defaults are the
plugin's (`qwenvl_vllm.settings`); predictions committed before 2026-12-03's thirteenth visit ran under the
earlier ones: `--step-target-ms 0 --tower-backlog-scale 1.5` and `QWENVL_VLLM_TOWER_BACKLOG_REQUESTS=8`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import step_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import finish_step, image_request, scheduler_for  # noqa: E402

from qwenvl_vllm.models.step_budget import (  # noqa: E402
    INITIAL_FIXED_MS,
    PATCH_LAYERS_PER_MS,
    PREFILL_MS_PER_1K_TOKENS,
    StepBudget,
    small_batch_scale,
)
from qwenvl_vllm.models.tower_slices import step_budget  # noqa: E402
from qwenvl_vllm.serving import step_trace  # noqa: E402
from qwenvl_vllm.settings import (  # noqa: E402
    STEP_TARGET_MARGIN,
    STEP_TARGET_MS,
    STEP_TARGET_SMALL_MS,
    TOWER_BACKLOG_SCALE,
    TOWER_STEP_MS,
    get_settings,
)


@dataclass
class Costs:
    base_ms: float = INITIAL_FIXED_MS  # a step's fixed cost (64 decodes: 3.5 ms measured)
    per_seq_ms: float = 0.003
    prefill_ms_per_1k: float = PREFILL_MS_PER_1K_TOKENS  # 6-8k-token prefill steps without encodes: 40-50 ms
    tower_ms_per_1k: float = 15.3  # encoder tokens; one 1024x768 image is 999
    # Steps over vLLM's largest CUDA-graph size run the LM eagerly and are bound by the host: a 1k-token
    # prefill step takes ~30 ms (GPU work ~9 ms), one with an image ~43 ms (trace: steps of 1-2 images).
    graph_max_tokens: int = 512
    eager_host_ms: float = 30.0
    # fitted on those steps; not explained (vLLM's merge of the embeddings does not block the host: GPU-tested
    # on the seventh visit)
    host_ms_per_image: float = 13.0
    api_shared_ms: float = 3.3  # API-server CPU per request, interleaved with the others' (see ApiLane)
    api_serial_ms: float = 4.7  # ... and one request at a time: a cohort's requests then reach the engine
    api_servers: int = 1
    side_cost: float = 1.0
    # the slicing scheduler: tower work launched per step (QWENVL_VLLM_TOWER_STEP_PATCH_LAYERS' default is 20
    # of a 1024x768 image's 32 blocks, ~15.3 x 20 / 32 ms), run in the step, not beside it
    tower_step_ms: float = TOWER_STEP_MS
    tower_backlog_scale: float = TOWER_BACKLOG_SCALE
    # QWENVL_VLLM_STEP_TARGET_MS for the slicer (0: the fixed budget above); the real StepBudget runs on the
    # simulated clock, learning this model's fixed cost as it would the GPU's
    step_target_ms: float = STEP_TARGET_MS
    step_target_small_ms: float = STEP_TARGET_SMALL_MS
    step_target_margin: float = STEP_TARGET_MARGIN  # QWENVL_VLLM_STEP_TARGET_MARGIN
    step_admit_cost: bool = False  # QWENVL_VLLM_STEP_ADMIT_COST
    # the slicer's steps that launch tower work: measured tower ms per assumed ms, and their extra fixed cost
    # (`--cost-trace`; host-bound, those steps fit ~0.5x and +6-10 ms: benchmarks/step_fit.py)
    tower_factor: float = 1.0
    admit_ms: float = 0.0
    admit_by: str = "tower"  # which steps pay admit_ms and get the admitting residuals (step_fit.fit's)
    # QWENVL_VLLM_SLICES_ON_SIDE_STREAM: the slices beside the LM; this share of the shorter of the tower's
    # time and the LM's decodes and fixed cost (its kernels leave SMs idle; the prefill's do not) is hidden
    slice_overlap: float = 0.0


@dataclass
class Workload:
    concurrency: int = 64
    requests: int = 256
    prompt: int = 1026
    image_tokens: int = 999
    offset: int = 15  # tokens before the image placeholder
    max_tokens: int = 64
    # each request's output length drawn uniformly from max_tokens +- this (0: all equal, as serve_bench's
    # ignore_eos requests, which keeps the closed loop's clients in lock step)
    max_tokens_spread: int = 0


class FinishedAt:
    """Stands in for a side-stream encode's CUDA event: finished once the simulated clock passes it."""

    def __init__(self, sim: Sim) -> None:
        self.sim, self.at = sim, None

    def query(self) -> bool:
        return self.at is not None and self.at <= self.sim.clock


def _past_placeholder(request) -> bool:
    return request.num_computed_tokens > request.mm_features[0].mm_position.offset


class ApiLane:
    """One API-server process: every request first shares its CPU with the others in it (`shared_ms` of
    work each: asyncio interleaves their parsing and media loading), then passes one at a time
    (`serial_ms`: processor and hand-off to the engine). A fit to cohort arrivals, not a CPU model: the two
    phases run side by side, so with staggered arrivals the server is faster than one CPU could be."""

    def __init__(self, shared_ms: float, serial_ms: float) -> None:
        self.shared_ms, self.serial_ms = shared_ms, serial_ms
        self.jobs: list[list] = []  # [remaining shared ms, request]
        self.clock = 0.0
        self.serial_free = 0.0
        self.ready: list[tuple[float, object]] = []  # (time out of the lane, request)

    def submit(self, request) -> None:
        self.jobs.append([self.shared_ms, request])

    def advance(self, until: float) -> list[tuple[float, object]]:
        while self.jobs:
            step = min(job[0] for job in self.jobs) * len(self.jobs)
            if self.clock + step > until:
                for job in self.jobs:
                    job[0] -= (until - self.clock) / len(self.jobs)
                break
            self.clock += step
            for job in self.jobs:
                job[0] -= step / len(self.jobs)
            for job in [j for j in self.jobs if j[0] <= 1e-9]:
                self.serial_free = max(self.clock, self.serial_free) + self.serial_ms
                self.ready.append((self.serial_free, job[1]))
            self.jobs = [job for job in self.jobs if job[0] > 1e-9]
        self.clock = max(self.clock, until)
        out = [item for item in self.ready if item[0] <= until]
        self.ready = [item for item in self.ready if item[0] > until]
        return out

    def next_done(self) -> float | None:
        if self.ready:
            return min(t for t, _ in self.ready)
        if not self.jobs:
            return None
        shared_end = self.clock + min(job[0] for job in self.jobs) * len(self.jobs)
        return max(shared_end, self.serial_free) + self.serial_ms


class ApiServer:
    """`--api-server-count` processes; connections are spread over them in turn."""

    def __init__(self, shared_ms: float, serial_ms: float, servers: int) -> None:
        self.lanes = [ApiLane(shared_ms, serial_ms) for _ in range(servers)]
        self.sent = 0

    def submit(self, request) -> None:
        self.lanes[self.sent % len(self.lanes)].submit(request)
        self.sent += 1

    def advance(self, until: float) -> list[tuple[float, object]]:
        return sorted((item for lane in self.lanes for item in lane.advance(until)), key=lambda x: x[0])

    def next_done(self) -> float | None:
        times = [t for t in (lane.next_done() for lane in self.lanes) if t is not None]
        return min(times) if times else None


@dataclass
class Sim:
    scheduler: object
    costs: Costs
    work: Workload
    side_stream: bool
    sliced: bool = False  # the tower in slices: queued like the side stream, run inside the steps
    clock: float = 0.0
    side: list = field(default_factory=list)  # [remaining ms, FinishedAt] in launch order
    submitted: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)  # (start ms, encodes, tokens, ms) per step
    step_decodes: list = field(default_factory=list)  # decoding requests per step
    lengths: dict = field(default_factory=dict)  # request id -> its output tokens
    encodes: dict = field(default_factory=dict)  # request id -> its image's encode (FinishedAt)
    _just_finished: list = field(default_factory=list)  # encodes finished within the current step
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    step_budget: StepBudget | None = None
    small_scale: float = 1.0  # the step target's scale while few requests decode (the slicer's)
    # measured residuals (ms) added to the steps: (steps without tower work, steps with), each replayed in its
    # recorded order from a random start (a noisy host's slow steps come in runs: lag-1 autocorrelation 0.5
    # in round 14's trace); None: the cost model alone (benchmarks/step_fit.py)
    noise: tuple[np.ndarray, np.ndarray] | None = None
    noise_iid: bool = False  # drawn with replacement instead (no runs of slow steps)
    _noise_at: list = field(default_factory=list)

    def run(self) -> dict:
        from qwenvl_vllm.models.encoder_stream import PROGRESS

        PROGRESS.reset()
        PROGRESS.active = self.side_stream
        if self.sliced and self.costs.step_target_ms:
            clock = lambda: self.clock / 1000  # noqa: E731
            c = self.costs
            self.step_budget = StepBudget(c.step_target_ms, clock, c.step_target_margin, c.step_admit_cost)
            self.small_scale = small_batch_scale(c.step_target_ms, c.step_target_small_ms)
        self.api = ApiServer(self.costs.api_shared_ms, self.costs.api_serial_ms, self.costs.api_servers)
        self.issued = 0
        for _ in range(self.work.concurrency):
            self._submit()
        finished = 0
        while finished < self.work.requests:
            for _, request in self.api.advance(self.clock):
                self.scheduler.add_request(request)
            out = self.scheduler.schedule()
            if out.total_num_scheduled_tokens == 0:
                self._idle()
                continue
            step_ms = self._step_ms(out, PROGRESS)
            encodes = sum(len(ids) for ids in out.scheduled_encoder_inputs.values())
            self.steps.append((self.clock, encodes, out.total_num_scheduled_tokens, step_ms))
            self.step_decodes.append(sum(1 for n in out.num_scheduled_tokens.values() if n == 1))
            self.clock += step_ms
            for req_id in finish_step(self.scheduler, out, self.work.prompt):
                self.tokens.setdefault(req_id, []).append(self.clock)
                if len(self.tokens[req_id]) == self.lengths[req_id]:
                    finished += 1
                    self._submit()
        PROGRESS.active = False
        return self._metrics()

    def _submit(self) -> None:
        """The client of a finished request sends its next one (it enters the API server now)."""
        if self.issued == self.work.requests:
            return
        w = self.work
        spread = int(self.rng.integers(-w.max_tokens_spread, w.max_tokens_spread + 1))
        length = w.max_tokens + spread
        request = image_request(self.issued, w.image_tokens, w.prompt, offset=w.offset, max_tokens=length)
        self.lengths[request.request_id] = length
        for _, ready in self.api.advance(self.clock):
            self.scheduler.add_request(ready)
        self.submitted[request.request_id] = self.clock
        self.api.submit(request)
        self.issued += 1

    def _idle(self) -> None:
        """Nothing to schedule: the clock moves to the next request out of the API server or, if sooner,
        the next side-stream encode's end (the tower alone on the GPU)."""
        api_at = self.api.next_done()
        if self.side and (api_at is None or self.clock + self.side[0][0] <= api_at):
            self.clock += self.side[0][0]
            self.side.pop(0)[1].at = self.clock
        elif api_at is not None:
            self._run_side(api_at - self.clock, end=api_at)
            self.clock = api_at + 1e-6
        else:
            raise RuntimeError("nothing scheduled and nothing to wait for")

    def _step_ms(self, out, progress) -> float:
        c = self.costs
        decodes = sum(1 for n in out.num_scheduled_tokens.values() if n == 1)
        prefill = out.total_num_scheduled_tokens - decodes
        light = c.base_ms + c.per_seq_ms * len(out.num_scheduled_tokens)  # fixed cost and decodes
        lm = light + prefill / 1000 * c.prefill_ms_per_1k
        encodes = [  # (request id, encoder tokens) of each encoder input scheduled in this step
            (r, self.scheduler.requests[r].mm_features[i].mm_position.length)
            for r, ids in out.scheduled_encoder_inputs.items()
            for i in ids
        ]
        tower_ms = sum(tokens for _, tokens in encodes) / 1000 * c.tower_ms_per_1k
        graphed = out.total_num_scheduled_tokens <= c.graph_max_tokens
        host = (0.0 if graphed else c.eager_host_ms) + c.host_ms_per_image * len(encodes)
        if not self.side_stream:
            return self._noisy(max(host, lm + tower_ms), admitting=bool(encodes))
        for req_id, tokens in encodes:
            event = FinishedAt(self)
            progress.add(1, event)
            self.side.append([tokens / 1000 * c.tower_ms_per_1k, event])
            self.encodes[req_id] = event
        self._just_finished = []
        if self.sliced:  # as the slicer: the encodes this step needs, then up to the step's budget
            used = self._run_side_through(self._needed(out))
            fixed = int(c.tower_step_ms * PATCH_LAYERS_PER_MS)
            tokens = out.total_num_scheduled_tokens
            budget, small = self.step_budget, self.small_scale
            work = step_budget(fixed, c.tower_backlog_scale, budget, tokens, bool(encodes), small)
            used += self._run_side(max(work / PATCH_LAYERS_PER_MS - used, 0.0), end=None)
            if self.step_budget is not None:
                self.step_budget.launched(int(used * PATCH_LAYERS_PER_MS))
        else:
            used = c.side_cost * self._run_side(max(lm, host), end=None)
        admitting = bool(encodes) if c.admit_by == "image" else used > 0
        tower_cost = used
        if self.sliced:
            hidden = c.slice_overlap * min(c.tower_factor * used, light)
            tower_cost = (c.admit_ms if admitting else 0.0) + c.tower_factor * used - hidden
        step = self._noisy(max(host, lm + tower_cost), admitting=admitting)
        for event in self._just_finished:
            event.at = self.clock + step
        return step

    def _noisy(self, step_ms: float, admitting: bool) -> float:
        if self.noise is None:
            return step_ms
        kind = 1 if admitting and len(self.noise[1]) else 0
        residuals = self.noise[kind]
        if self.noise_iid:
            return max(step_ms + float(self.rng.choice(residuals)), MIN_STEP_MS)
        if not self._noise_at:  # each kind's replay starts at a random step
            self._noise_at = [int(self.rng.integers(len(k))) if len(k) else 0 for k in self.noise]
        at = self._noise_at[kind]
        self._noise_at[kind] += 1
        return max(step_ms + float(residuals[at % len(residuals)]), MIN_STEP_MS)

    def _needed(self, out) -> set[int]:
        """The queued encodes whose image tokens this step prefills (the slicer finishes them first)."""
        requests = self.scheduler.requests  # their computed tokens already include this step's
        using = [r for r in out.num_scheduled_tokens if r in self.encodes and _past_placeholder(requests[r])]
        return {id(self.encodes[r]) for r in using if not self.encodes[r].query()}

    def _run_side_through(self, needed: set[int]) -> float:
        used = 0.0
        while needed and self.side:
            needed.discard(id(self.side[0][1]))
            used += self._run_side(self.side[0][0], end=None)
        return used

    def _run_side(self, budget_ms: float, end: float | None) -> float:
        """Side-stream work done beside `budget_ms` of other GPU time; the encodes it finishes end at `end`
        (None: with the step, which sets their time)."""
        used = 0.0
        while self.side and used < budget_ms - 1e-9:
            take = min(self.side[0][0], budget_ms - used)
            self.side[0][0] -= take
            used += take
            if self.side[0][0] <= 1e-9:
                event = self.side.pop(0)[1]
                self._just_finished.append(event)
                if end is not None:
                    event.at = end
        return used

    def _metrics(self) -> dict:
        firsts = {r: times[0] - self.submitted[r] for r, times in self.tokens.items()}
        itl = [float(g) for times in self.tokens.values() for g in np.diff(times)]
        span = max(times[-1] for times in self.tokens.values()) / 1000
        return {
            "req_per_s": len(self.tokens) / span,
            "ttft_p50_ms": float(np.percentile(list(firsts.values()), 50)),
            "ttft_p99_ms": float(np.percentile(list(firsts.values()), 99)),
            "itl_p50_ms": float(np.percentile(itl, 50)),
            "itl_p99_ms": float(np.percentile(itl, 99)),
            "itl_over_100ms": float(np.mean(np.array(itl) > 100)),
        }


MIN_STEP_MS = 1.0  # a drawn residual never makes a step shorter than this

SCHEDULERS = {
    "default": ("vllm.v1.core.sched.scheduler", "Scheduler"),
    "paced": ("qwenvl_vllm.serving.scheduler", "EncoderPacedScheduler"),
    "ahead": ("qwenvl_vllm.serving.encode_ahead", "EncodeAheadScheduler"),
    "ahead_paced": ("qwenvl_vllm.serving.encode_ahead", "EncodeAheadPacedScheduler"),
    "sliced": ("qwenvl_vllm.serving.encode_ahead", "EncodeAheadSlicedScheduler"),
    "sliced_paced": ("qwenvl_vllm.serving.encode_ahead", "EncodeAheadSlicedPacedScheduler"),
}


def simulate(
    ckpt: str,
    name: str,
    costs: Costs,
    work: Workload,
    batched_tokens: int = 8192,
    scheduled_tokens: int | None = None,
    noise: tuple[np.ndarray, np.ndarray] | None = None,
    noise_iid: bool = False,
) -> Sim:
    """A finished simulation (`.run()` done: its metrics in `.result`, its steps in `.steps`)."""
    import importlib

    module, cls_name = SCHEDULERS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    blocks = work.concurrency * (work.prompt + work.max_tokens + work.max_tokens_spread) // 16 * 2
    scheduler = scheduler_for(
        ckpt,
        cls,
        batched_tokens,
        num_blocks=blocks,
        scheduled_tokens=scheduled_tokens,
        max_num_seqs=max(256, work.concurrency),
    )
    sliced = name.startswith("sliced")
    side_stream = name.startswith("ahead") or sliced
    noisy = {"noise": noise, "noise_iid": noise_iid}
    sim = Sim(scheduler, costs, work, side_stream=side_stream, sliced=sliced, **noisy)
    sim.result = sim.run()
    return sim


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scheduler", nargs="+", default=list(SCHEDULERS), choices=list(SCHEDULERS))
    parser.add_argument("--encoder-step-tokens", type=int, default=1024, help="paced schedulers' cap")
    parser.add_argument("--max-num-scheduled-tokens", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens-spread", type=int, default=0, help="output lengths 64 +- this")
    parser.add_argument("--api-servers", type=int, default=1)
    parser.add_argument("--side-cost", type=float, default=1.0)
    parser.add_argument("--graph-max-tokens", type=int, default=512, help="vLLM's max CUDA-graph size")
    parser.add_argument(
        "--tower-step-ms", type=float, default=Costs.tower_step_ms, help="sliced: tower per step"
    )
    target_help = "QWENVL_VLLM_STEP_TARGET_MS (0: off)"
    parser.add_argument("--step-target-ms", type=float, default=Costs.step_target_ms, help=target_help)
    small_help = "QWENVL_VLLM_STEP_TARGET_SMALL_MS: the target while few requests decode (0: off)"
    parser.add_argument("--step-target-small-ms", type=float, default=STEP_TARGET_SMALL_MS, help=small_help)
    parser.add_argument("--base-ms", type=float, default=Costs.base_ms, help="a step's fixed cost")
    parser.add_argument("--tower-backlog-scale", type=float, default=Costs.tower_backlog_scale)
    parser.add_argument(
        "--host-ms-per-image", type=float, default=Costs.host_ms_per_image, help="0: without that host cost"
    )
    margin, margin_help = Costs.step_target_margin, "QWENVL_VLLM_STEP_TARGET_MARGIN"
    parser.add_argument("--step-target-margin", type=float, default=margin, help=margin_help)
    noise_help = "a step trace whose fitted residuals are added to the steps (benchmarks/step_fit.py)"
    parser.add_argument("--noise-trace", type=Path, help=noise_help)
    parser.add_argument("--noise-iid", action="store_true", help="its residuals drawn with replacement")
    cost_help = "a step trace whose fit (by class) sets the step costs (overrides --base-ms)"
    parser.add_argument("--cost-trace", type=Path, help=cost_help)
    admit_help = "the fit's admitting steps: those that launched tower work, or that queued a new image"
    admit_cost_help = "QWENVL_VLLM_STEP_ADMIT_COST=1: the budget learns the admitting steps' extra cost apart"
    parser.add_argument("--step-admit-cost", action="store_true", help=admit_cost_help)
    parser.add_argument("--admit-by", choices=step_fit.ADMIT_CLASSES, default=Costs.admit_by, help=admit_help)
    overlap_help = "QWENVL_VLLM_SLICES_ON_SIDE_STREAM: the hidden share of the shorter of tower and decodes"
    parser.add_argument("--slice-overlap", type=float, default=Costs.slice_overlap, help=overlap_help)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["QWENVL_VLLM_ENCODER_STEP_TOKENS"] = str(args.encoder_step_tokens)
    from qwenvl_vllm.checkpoint.writer import write_checkpoint
    from qwenvl_vllm.model_registry import register

    register()
    costs = Costs(
        api_servers=args.api_servers,
        side_cost=args.side_cost,
        graph_max_tokens=args.graph_max_tokens,
        host_ms_per_image=args.host_ms_per_image,
        tower_step_ms=args.tower_step_ms,
        step_target_ms=args.step_target_ms,
        step_target_small_ms=args.step_target_small_ms,
        base_ms=args.base_ms,
        tower_backlog_scale=args.tower_backlog_scale,
        step_target_margin=args.step_target_margin,
        admit_by=args.admit_by,
        step_admit_cost=args.step_admit_cost,
        slice_overlap=args.slice_overlap,
    )
    by_class = args.cost_trace is not None  # the noise is then the residuals of the fit the costs come from
    traces = {path for path in (args.cost_trace, args.noise_trace) if path}
    fits = {path: step_fit.fit(step_trace.load(path), by_class, args.admit_by) for path in traces}
    if args.cost_trace:
        fitted = fits[args.cost_trace]
        costs = replace(
            costs,
            base_ms=fitted.fixed_ms,
            per_seq_ms=fitted.ms_per_decode,
            prefill_ms_per_1k=fitted.ms_per_1k_prefill,
            tower_factor=fitted.tower_factor,
            admit_ms=fitted.admit_ms,
        )
    noise = None
    if args.noise_trace:
        noise = (fits[args.noise_trace].residuals, fits[args.noise_trace].admitting_residuals)
    work = Workload(
        concurrency=args.concurrency, requests=4 * args.concurrency, max_tokens_spread=args.max_tokens_spread
    )
    results = {
        "tower_backlog_requests": get_settings().tower_backlog_requests,
        "costs": asdict(costs),
        "workload": asdict(work),
        "encoder_step_tokens": args.encoder_step_tokens,
        "max_num_scheduled_tokens": args.max_num_scheduled_tokens,
        "noise_trace": str(args.noise_trace) if args.noise_trace else None,
        "cost_trace": str(args.cost_trace) if args.cost_trace else None,
        "noise_iid": args.noise_iid,
        "schedulers": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(write_checkpoint("tiny-qwen2-vl", "bf16", Path(tmp)))
        for name in args.scheduler:
            scheduled = args.max_num_scheduled_tokens
            noisy = {"noise": noise, "noise_iid": args.noise_iid}
            result = simulate(ckpt, name, costs, work, scheduled_tokens=scheduled, **noisy).result
            results["schedulers"][name] = result
            print(name, {k: round(v, 3) for k, v in result.items()}, flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The tower's work per engine step from a step-time target (`QWENVL_VLLM_STEP_TARGET_MS`), for the slicer.

Why (issue 12, twelfth visit): with a fixed budget in patches x blocks, a step takes its tower slice plus
whatever else it holds. At c=64 the paced slicer's steady-state steps (~48 decodes, a 1k-token prefill chunk,
one slice) took 25.5 ms at p50, 30.8 at p90, 37.6 at most: the budget was 1x or 1.7x by the backlog count
alone, blind to the rest of the step. With a target, each step gets the tower work its own language-model
work leaves room for:

    tower ms = target - fixed ms - prefill ms of the step's tokens

converted to patches x blocks at the tower's rate; while requests wait (the slicer's backlog), the target is
`QWENVL_VLLM_TOWER_BACKLOG_SCALE` times the set one, as the fixed budget is: under load, longer steps admit
images sooner (c=16's ITL target is 20 ms, c=64's 30). `fixed ms` (decodes, host work, whatever the prefill
term misses) is learned from the measured time between steps: after each step it moves by `GAIN` x (measured -
predicted). With async scheduling a measured period belongs to a step or two earlier, so the correction is an
average, not a per-step one. Periods far over the target (the engine idle, a forced encode) are not learned
from.

A mean keeps the tail over the target on a noisy host (fourteenth visit: the steps that launched tower work
ran 7-10 ms over the fitted cost at p90 on two of three H200 hosts, 2 ms on the quiet one). With a margin of
`k` (`QWENVL_VLLM_STEP_TARGET_MARGIN`), the tower's room also leaves `k` times the learned mean absolute
deviation of those steps' periods from their prediction (as TCP's retransmit timer adds 4 deviations to the
mean round trip): little on a quiet host, more on a noisy one.

A step that admits an image (its encode queued by this step's `embed_multimodal`) costs more than its tokens
and tower work say (twentieth visit, `benchmarks/step_fit.py` by image on five step traces: +5.1 to +7.0 ms
on the noisy hosts, +1.3 on the quiet one; the fit's unexplained variance drops by a fifth). One learned
fixed cost for all steps overshot those steps and left the others short, so the admitting steps learn their
own extra (`admit_ms`) from their periods' error, on top of the fixed cost every step teaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qwenvl_vllm.settings import TOWER_STEP_MS, TOWER_STEP_PATCH_LAYERS

PATCH_LAYERS_PER_MS = TOWER_STEP_PATCH_LAYERS / TOWER_STEP_MS  # the tower's rate on an H200 (2B, 1024x768)
# the 2B LM on an H200, fitted to the sixth visit's step traces (also benchmarks/sched_sim.py's cost model)
PREFILL_MS_PER_1K_TOKENS = 5.5
INITIAL_FIXED_MS = 3.3  # a step of 64 decodes alone
GAIN = 0.1
STALL_FACTOR = 3.0  # a period over this many targets is not a step's cost
INITIAL_ADMIT_MS = 0.0  # learned within ~20 admitting steps (GAIN)
INITIAL_DEVIATION_MS = 2.0  # the quiet host's mean absolute deviation (round 13's first run: 1.8 ms)


def small_batch_scale(target_ms: float, small_ms: float) -> float:
    """The target's scale while the batch is small (`QWENVL_VLLM_STEP_TARGET_SMALL_MS`; 0: 1, no change)."""
    if small_ms < 0:
        raise ValueError(f"QWENVL_VLLM_STEP_TARGET_SMALL_MS must be 0 or more, got {small_ms}")
    return small_ms / target_ms if small_ms and target_ms else 1.0


class StepBudget:
    """Call `patch_layers(tokens)` once per step before launching its slices, then `launched(work)`."""

    def __init__(
        self,
        target_ms: float,
        clock: Callable[[], float] = time.monotonic,
        margin: float = 0.0,
        admit_cost: bool = False,
    ) -> None:
        if target_ms <= 0:
            raise ValueError(f"QWENVL_VLLM_STEP_TARGET_MS must be positive, got {target_ms}")
        if margin < 0:
            raise ValueError(f"QWENVL_VLLM_STEP_TARGET_MARGIN must be 0 or more, got {margin}")
        self.target_ms, self.fixed_ms = target_ms, INITIAL_FIXED_MS
        self.margin, self.deviation_ms = margin, INITIAL_DEVIATION_MS
        self._clock = clock
        self._last: float | None = None
        self._lm_ms = 0.0
        self._predicted_ms: float | None = None
        self._launched_tower = False
        self.admit_ms, self._admits, self._admit_cost = INITIAL_ADMIT_MS, False, admit_cost

    def patch_layers(self, tokens: int, scale: float = 1.0, admits: bool = False) -> int:
        """The tower work this step has room for; `tokens`: the step's scheduled tokens (decodes included);
        `scale`: this step's target over the set one (the slicer's backlog scale while requests wait);
        `admits`: the step queued a new image's encode."""
        now = self._clock()
        if self._last is not None and self._predicted_ms is not None:
            self._learn((now - self._last) * 1000)
        self._last, self._admits = now, admits and self._admit_cost
        fixed = self.fixed_ms + (self.admit_ms if self._admits else 0.0)
        self._lm_ms = fixed + tokens / 1000 * PREFILL_MS_PER_1K_TOKENS
        room = self.target_ms * scale - self._lm_ms - self.margin * self.deviation_ms
        return int(max(room, 0.0) * PATCH_LAYERS_PER_MS)

    def launched(self, patch_layers: int) -> None:
        """What the step launched in the end (a needed encode may exceed the budget)."""
        self._predicted_ms = self._lm_ms + patch_layers / PATCH_LAYERS_PER_MS
        self._launched_tower = patch_layers > 0

    def _learn(self, period_ms: float) -> None:
        if period_ms > STALL_FACTOR * max(self.target_ms, self._predicted_ms):  # idle, or a needed encode
            return
        error = period_ms - self._predicted_ms
        # least mean squares on (1, admits): every step teaches the fixed cost, an admitting one its extra too
        # (the last step's class: the period measured now is its own, as in the fit)
        self.fixed_ms = min(max(self.fixed_ms + GAIN * error, 0.0), self.target_ms)
        if self._admits:
            self.admit_ms = min(max(self.admit_ms + GAIN * error, 0.0), self.target_ms)
        if self._launched_tower:  # the margin is for these steps' noise
            self.deviation_ms += GAIN * (abs(error) - self.deviation_ms)

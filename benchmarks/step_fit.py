"""A linear fit of a step trace's periods: what a step cost by its parts, and what they leave unexplained.

Each period (the gap from one `schedule()` call to the next, idle gaps left out) is fitted by least squares to
(1, the step's decodes, its prefill tokens / 1000, the tower ms it launched at the budget's assumed rate), and
with `by_class` also to (1 if the step is an admitting one: its extra fixed cost). The residuals of the
admitting steps (by default those that launched tower work) are the noise a step-time target has to live
with (`qwenvl_vllm.models.step_budget`); `benchmarks/sched_sim.py --noise-trace` replays them. Used on the
round-13 and round-14 traces: the tower term came out at 0.86-1.03x the assumed rate on every host, the
admitting steps' residual p90 at 2 ms on a quiet host and 7-10 ms on noisy ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qwenvl_vllm.models.step_budget import PATCH_LAYERS_PER_MS

IDLE_MS = 100.0  # a longer period is the engine waiting for requests, not a step
ADMIT_CLASSES = ("tower", "image")


@dataclass
class StepFit:
    fixed_ms: float
    ms_per_decode: float
    ms_per_1k_prefill: float
    tower_factor: float  # measured tower ms per assumed tower ms
    residuals: np.ndarray  # ms, the other steps
    admitting_residuals: np.ndarray  # ms, the admitting steps (`fit`'s admit_by)
    admit_ms: float = 0.0  # by_class: a tower-launching step's extra fixed cost

    def summary(self) -> dict[str, float]:
        admitting = self.admitting_residuals
        q = np.percentile(admitting, [90, 97, 99]) if len(admitting) else [0.0] * 3
        return {
            "fixed_ms": self.fixed_ms,
            "ms_per_decode": self.ms_per_decode,
            "ms_per_1k_prefill": self.ms_per_1k_prefill,
            "tower_factor": self.tower_factor,
            "admit_ms": self.admit_ms,
            "residual_sd_ms": float(np.concatenate([self.residuals, self.admitting_residuals]).std()),
            "admitting_steps": len(self.admitting_residuals),
            "admitting_residual_sd_ms": float(np.std(self.admitting_residuals)),
            "admitting_residual_p90_ms": float(q[0]),
            "admitting_residual_p97_ms": float(q[1]),
            "admitting_residual_p99_ms": float(q[2]),
        }


def fit(steps: list[dict], by_class: bool = False, admit_by: str = "tower") -> StepFit:
    """Fit the periods of a trace's steps; a step's tower work is in the record after it (`tower_work`).
    The admitting class (`by_class`'s extra cost, the split residuals) is the steps that launched tower work
    (`admit_by="tower"`) or those that scheduled a new image's encode (`"image"`: the better fit on every
    noisy host's trace, `qwenvl_vllm.models.step_budget`)."""
    if admit_by not in ADMIT_CLASSES:
        raise ValueError(f"admit_by must be one of {ADMIT_CLASSES}, got {admit_by!r}")
    rows, periods = [], []
    for step, after in zip(steps, steps[1:], strict=False):
        period = (after["t"] - step["t"]) * 1000
        if period > IDLE_MS:
            continue
        tower_ms = after.get("tower_work", 0) / PATCH_LAYERS_PER_MS
        admits = tower_ms > 0 if admit_by == "tower" else step.get("encoder_inputs", 0) > 0
        rows.append([1.0, step["decodes"], step["prefill_tokens"] / 1000, tower_ms, float(admits)])
        periods.append(period)
    if len(rows) < 4:
        raise ValueError(f"a fit needs at least 4 steps with requests, the trace has {len(rows)}")
    x, y = np.array(rows), np.array(periods)
    mask = x[:, 4] > 0  # the admitting steps
    x = x if by_class else x[:, :4]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residuals = y - x @ coef
    fixed, per_decode, per_1k, tower, *admit = (float(c) for c in coef)
    return StepFit(fixed, per_decode, per_1k, tower, residuals[~mask], residuals[mask], *admit)

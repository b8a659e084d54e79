"""GPU: after the engine's start, image and video requests compile no kernel (`QWENVL_VLLM_WARM_TOWER`).

vLLM's JIT monitor in `error` mode fails any request during which a Triton kernel compiles. With the warm-up
on, a tiny engine of ours serves images of three sizes (and, for Qwen2-VL, a video); with it off, the same
requests must fail on our kernels' first compile (the check can fail). Qwen2-VL and Qwen-VL v1, each
engine in its own process.

Run on the GPU machine: `python -m pytest tests/gpu/test_tower_warmup_gpu.py -q -s`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

_SERVE = r"""
import sys
import numpy as np
from PIL import Image
from vllm import LLM, SamplingParams

qwen2 = sys.argv[2] == "tiny-qwen2-vl"
llm = LLM(model=sys.argv[1], max_model_len=8192, gpu_memory_utilization=0.2, seed=0,
          limit_mm_per_prompt={"image": 1, "video": 1} if qwen2 else {"image": 1}, jit_monitor_mode="error")
rng = np.random.RandomState(0)
if qwen2:
    turn = "<|im_start|>user\n<|vision_start|>{}<|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n"
    image_prompt = turn.format("<|image_pad|>")
else:  # Qwen-VL v1
    image_prompt = "Picture 1: <img></img>\nDescribe."
requests = [
    {"prompt": image_prompt,
     "multi_modal_data": {"image": Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8))}}
    for h, w in ((168, 112), (768, 1024), (1000, 40))
]
if qwen2:
    frames = rng.randint(0, 256, (4, 180, 320, 3), dtype=np.uint8)
    requests.append({"prompt": turn.format("<|video_pad|>"), "multi_modal_data": {"video": frames}})
for request in requests:  # one at a time: each reaches the tower alone
    llm.generate([request], SamplingParams(max_tokens=2, temperature=0.0), use_tqdm=False)
print("SERVED")
"""


def _compiles(output: str) -> list[str]:
    """vLLM's JIT monitor lines, which name each kernel compiled while serving."""
    return [line[-300:] for line in output.splitlines() if "JIT compilation during inference" in line]


def _output(run: subprocess.CompletedProcess) -> str:
    """vLLM's log lines (its logger writes to stdout, round 18's miss) and Python's tracebacks (stderr)."""
    return run.stdout + run.stderr


def _first_error(output: str) -> str:
    """The exception lines of a failed engine (its root cause among them), then its first traceback's tail;
    vLLM's dump of its config and scheduler output is left out."""
    lines = [line for line in output.splitlines() if "Dumping" not in line]
    causes = [line[-400:] for line in lines if re.search(r"\w+(Error|Exception)\b.*: ", line)]
    first = next((i for i, line in enumerate(lines) if "Traceback" in line), len(lines))
    return "\n".join([*causes[:20], "--- first traceback, tail:", *lines[first : first + 400][-40:]])


def _serve(ckpt: Path, model: str, warm: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QWENVL_VLLM_DISABLE="0", QWENVL_VLLM_WARM_TOWER=warm)
    return subprocess.run(
        [sys.executable, "-c", _SERVE, str(ckpt), model], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("model", ["tiny-qwen2-vl", "tiny-qwen-vl"])
def test_no_kernel_compiles_after_start_with_the_warmup(tmp_path: Path, model: str) -> None:
    from qwenvl_vllm.checkpoint import write_checkpoint

    ckpt = write_checkpoint(model, "bf16", tmp_path / "ckpt")
    warmed = _serve(ckpt, model, "1")
    assert warmed.returncode == 0 and "SERVED" in warmed.stdout, (
        _compiles(_output(warmed)),
        _first_error(_output(warmed)),
    )
    cold = _serve(ckpt, model, "0")
    assert cold.returncode != 0 and _compiles(_output(cold)), _first_error(_output(cold))

"""The Triton resample kernel run by Triton's CPU interpreter (TRITON_INTERPRET=1) vs Pillow.

The interpreter executes the kernel's own code (indexing, masks, int32 arithmetic) with numpy, so the
kernel's logic is checked without a GPU; tests/gpu/test_kernels_gpu.py checks the compiled kernel.
It runs in a subprocess because Triton reads TRITON_INTERPRET when the kernel is defined.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import numpy as np, torch
from PIL import Image
from qwenvl_vllm.kernels import resize
from qwenvl_vllm.kernels.resample_triton import resample_axis_triton

def through_triton(image, axis, start, weights, backend):
    return resample_axis_triton(image, axis, start, weights)

resize._run_pass = through_triton  # every pass of resize_like_pil goes through the kernel, on CPU
rng = np.random.default_rng(4)
cases = [(9, 7, 20, 3), (30, 4, 6, 9), (1, 5, 4, 1), (12, 12, 5, 30), (40, 3, 9, 2), (6, 11, 6, 4)]
for h, w, oh, ow in cases:
    array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(array).resize((ow, oh), Image.Resampling.BICUBIC))
    ours = resize.resize_like_pil(torch.from_numpy(array), oh, ow).numpy()
    assert np.array_equal(ours, expected), (h, w, oh, ow)
flat = torch.from_numpy(rng.integers(0, 256, 9 * 13 * 3 + 5, dtype=np.uint8))
view = flat[5:].view(9, 13, 3)  # at an odd address: the kernel takes an aligned copy
expected = np.asarray(Image.fromarray(view.numpy()).resize((6, 20), Image.Resampling.BICUBIC))
assert np.array_equal(resize.resize_like_pil(view, 20, 6).numpy(), expected)
print("ok", len(cases) + 1)
"""


def test_interpreted_triton_kernel_matches_pillow() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok 7"

"""Bicubic resize to the smart_resize size: Pillow vs resize_like_pil on CPU (torch) and CUDA (Triton).

Run: python benchmarks/resize_speed.py [--repeats N]. Prints ms per image (median); the outputs of every
path are checked against Pillow's first. The CUDA column times a GPU-resident image (no copy) and skips
when CUDA is absent.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from qwenvl_vllm.kernels.resize import resize_like_pil
from qwenvl_vllm.processors.sizing import smart_resize
from qwenvl_vllm.synthetic import random_rgb

# width, height; 4032x3024 is already a multiple of 28 within max_pixels, so smart_resize keeps it
# and that row times a copy (Pillow does the same)
SOURCES = [(1024, 768), (1920, 1080), (4032, 3024)]


def median_ms(fn: Callable[[], object], repeats: int, sync: bool = False) -> float:
    fn()  # warm-up: coefficient cache, Triton compilation
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_source(width: int, height: int, repeats: int, cuda: bool) -> str:
    """One table row: ms per image of each path, after checking each against Pillow."""
    out_h, out_w = smart_resize(height, width)
    array = random_rgb(height, width)
    image, tensor = Image.fromarray(array), torch.from_numpy(array)
    expected = np.asarray(image.resize((out_w, out_h), Image.Resampling.BICUBIC))
    assert np.array_equal(resize_like_pil(tensor, out_h, out_w).numpy(), expected)
    pil_ms = median_ms(lambda: image.resize((out_w, out_h), Image.Resampling.BICUBIC), repeats)
    cpu_ms = median_ms(lambda: resize_like_pil(tensor, out_h, out_w), repeats)
    cuda_col = "skipped"
    if cuda:
        on_gpu = tensor.cuda()
        assert np.array_equal(resize_like_pil(on_gpu, out_h, out_w).cpu().numpy(), expected)
        cuda_col = f"{median_ms(lambda: resize_like_pil(on_gpu, out_h, out_w), repeats, sync=True):.3f}"
    return f"{width:>5}x{height:<5} {out_w:>5}x{out_h:<5} {pil_ms:>8.2f} {cpu_ms:>13.2f} {cuda_col:>15}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    print(f"{'source':>11} {'target':>11} {'PIL ms':>8} {'torch CPU ms':>13} {'Triton CUDA ms':>15}")
    for width, height in SOURCES:
        print(bench_source(width, height, args.repeats, cuda))


if __name__ == "__main__":
    main()

"""What vLLM's batching of one media item costs on the GPU machine: its pinned copy, then the transfer.

Run: python benchmarks/pin_probe.py [--repeats N] [--out FILE]. For each shipped tensor (ours: a 1024x768
image's decoded uint8 pixels, packed or as Pillow's 4-byte storage; in-tree: its bf16 patch rows), a fresh
tensor per call as in a server, median ms of:
- `vllm_pinned`: vLLM's own path, `MultiModalBatchedField._reduce_data(..., pin_memory=True)` (a pinned
  copy) then `_nested_tensors_h2d` (a non-blocking copy), CUDA-synchronised;
- `pin_only`: the pinned copy alone;
- `pageable`: `tensor.to("cuda")` from the tensor's own memory (what a field kept on the CPU would cost in
  the model), CUDA-synchronised.
The TTFT breakdown (`ttft_breakdown.py`) found our item's merge 2.39 ms against in-tree's 0.65 ms for
four times the bytes; this separates the allocation and copy from the transfer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from report import print_and_save

ROWS_1024X768 = (3996, 1176)  # in-tree's patch rows of a 1024x768 image (54 x 74 patches, 3*2*14*14)


def sources() -> dict[str, Callable[[int], torch.Tensor]]:
    from qwenvl_vllm.synthetic import random_rgb

    def packed(seed: int) -> torch.Tensor:  # as `uint8_hwc` ships an image the caller gave (frombuffer)
        data = random_rgb(768, 1024, seed).tobytes()
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(768, 1024, 3)

    def rgbx(seed: int) -> torch.Tensor:
        return torch.from_numpy(random_rgb(768, 1024, seed)).repeat(1, 1, 2)[..., :4].contiguous()

    def rows(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(ROWS_1024X768, generator=generator).to(torch.bfloat16)

    return {"ours_uint8_hwc3": packed, "ours_uint8_hwc4": rgbx, "in_tree_bf16_rows": rows}


def timed(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000


def probe(make: Callable[[int], torch.Tensor], repeats: int) -> dict[str, float]:
    from vllm.multimodal.inputs import MultiModalBatchedField, _nested_tensors_h2d

    field = MultiModalBatchedField()
    ways = {
        "vllm_pinned": lambda t: _nested_tensors_h2d(field._reduce_data([t], pin_memory=True), device="cuda"),
        "pin_only": lambda t: field._reduce_data([t], pin_memory=True),
        "pageable": lambda t: t.to("cuda"),
    }
    out: dict[str, float] = {}
    for name, way in ways.items():
        tensors = [make(seed) for seed in range(repeats + 2)]  # made before timing: each call a fresh one
        times = [timed(lambda t=t, way=way: way(t)) for t in tensors]
        out[name] = statistics.median(times[2:])  # the first two warm the allocator and CUDA
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = {
        "gpu": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d"),
        "repeats": args.repeats,
        "ms": {name: probe(make, args.repeats) for name, make in sources().items()},
    }
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()

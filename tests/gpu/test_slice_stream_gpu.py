"""The slicer's tower slices on a side stream (models.slice_stream) against the same slices inline: the
outputs' bytes equal the whole tower's while the main stream runs other work between the steps, and a step
that uses an image's embeddings waits for its slices there.

Run on the GPU machine: `python -m pytest tests/gpu/test_slice_stream_gpu.py -q`.
"""

from __future__ import annotations

import pytest
import torch
from helpers import cuda_tower

from qwenvl_vllm.geometry import grid_tokens
from qwenvl_vllm.models.encoder_stream import PROGRESS
from qwenvl_vllm.models.slice_stream import SliceStream
from qwenvl_vllm.models.tower_slices import TowerSlicer

pytestmark = pytest.mark.gpu

GRIDS = [(1, 54, 74), (1, 40, 60), (1, 54, 74)]  # 3996, 2400, 3996 patches


@pytest.fixture
def serving(monkeypatch):
    monkeypatch.setattr(PROGRESS, "scheduling", True)
    monkeypatch.setattr(PROGRESS, "active", False)  # restored after: the slicer sets it
    monkeypatch.setattr(PROGRESS, "backlog", False)
    monkeypatch.setattr(PROGRESS, "decodes", 0)
    PROGRESS.reset()
    yield
    PROGRESS.reset()


def _queue(tower, slicer: TowerSlicer, pixels: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    rows = pixels.clone()  # made on the main stream, as the model's queued rows are
    with slicer.stream.launching():
        slices, cost = tower.forward_slices(rows, [grid], slicer.budget)
        out = torch.empty(grid_tokens(grid), tower.out_hidden_size, device="cuda", dtype=tower.dtype)
    return slicer.submit(slices, out, cost, rows=rows)


@pytest.mark.parametrize("side", [False, True])
def test_side_stream_slices_equal_the_whole_tower(vllm_cuda, serving, side: bool) -> None:
    tower = cuda_tower(graph_max_patches=16384)
    gen = torch.Generator("cuda").manual_seed(5)
    shapes = [t * h * w for t, h, w in GRIDS]
    pixels = [torch.randn(n, 1176, device="cuda", dtype=torch.bfloat16, generator=gen) for n in shapes]
    stream = SliceStream(torch.cuda.Stream(priority=0) if side else None)
    slicer = TowerSlicer(2 * 4096, stream=stream)  # two of the four blocks of an image per step
    busy = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=gen)
    with torch.inference_mode():
        want = [tower(p, [g]).clone() for p, g in zip(pixels, GRIDS, strict=True)]
        outs = [_queue(tower, slicer, p, g) for p, g in zip(pixels, GRIDS, strict=True)]
        for _ in range(2):  # steps with no image consumed: the main stream busy beside the slices
            slicer.before_lm((), tokens=0)
            for _ in range(20):
                busy = (busy @ busy).clamp_(-1, 1)
        slicer.before_lm([outs[2]], tokens=0)  # finishes the queue through the last image
        got = outs[2].clone()  # on the main stream, right after: only correct if it waited
        torch.cuda.synchronize()
    assert torch.equal(got, want[2])
    for out, expected in zip(outs, want, strict=True):
        assert torch.equal(out, expected)
    assert not slicer._queue

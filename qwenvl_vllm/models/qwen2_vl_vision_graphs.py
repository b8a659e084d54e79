"""CUDA graphs of the Qwen2-VL vision tower, one per padded patch count (buckets of 1024 patches).

Why: an eager forward launches ~12 kernels per block from Python. Measured on an H200 host, enqueueing one
call costs 25-45 ms, while the GPU work of one 1024x768 image is ~15 ms and of a 448x448 image ~4 ms: below
~10k patches the tower waits for the CPU. A replay is one launch.

Padding: the N real patches are followed by B - N pad patches that form one extra attention sequence, so
they never mix with real patches (every other op works row by row); the merger's first N / merge^2 rows are
the result. A graph has a fixed number of attention sequences (cu_seqlens is padded with empty sequences,
as vLLM's own encoder graphs do) and a fixed max_seqlen, so graphs are keyed by (B, longest frame rounded up
to a bucket): FlashAttention sizes its grid by max_seqlen, and a video's short frames under max_seqlen = B
cost ~10% more than under their own length (measured). Rotary cos/sin are computed inside the graph from a
positions buffer, with a table of B positions (every position of an item is below its patch count).

Memory: graphs of one padded size share their input buffers, all graphs share one pool, and at most
MAX_GRAPHS are kept (a batch whose key is new once that many exist runs eagerly), so mixed image sizes in
a server cannot grow graph memory without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from vllm.v1.attention.backends.registry import AttentionBackendEnum

from .qwen2_vl_vision_layers import VisionAttnMeta, frame_seqlens
from .vision_rotary import patch_positions, rotary_cos_sin

if TYPE_CHECKING:
    from .qwen2_vl_vision import Grid, Qwen2VisionTower

T = TypeVar("T")
BUCKET = 1024  # patches; a multiple of merge^2, so pad rows never share a merge window with real ones
MAX_SEQS = 64  # attention sequences (image frames) a graph takes, besides the pad sequence
MAX_GRAPHS = 48  # (size, max_seqlen) keys; each keeps only its output rows beyond the shared buffers


def bucket_size(num_patches: int) -> int:
    return -(-num_patches // BUCKET) * BUCKET


def padded_cu_seqlens(grid: Grid, size: int) -> np.ndarray:
    """int32 [MAX_SEQS + 2]: one sequence per frame, one for the pad rows up to `size`, then empty ones."""
    return _padded_cu(frame_seqlens(grid), size)


def _padded_cu(lengths: list[int], size: int) -> np.ndarray:
    cu = np.full(MAX_SEQS + 2, size, dtype=np.int32)
    cu[0] = 0
    cu[1 : len(lengths) + 1] = np.cumsum(lengths)
    return cu


def fits(grid: Grid, num_patches: int, max_patches: int) -> bool:
    return num_patches <= max_patches and sum(t for t, _, _ in grid) <= MAX_SEQS


@dataclass
class _Inputs:
    pixels: torch.Tensor  # [B, patch_dim] model dtype
    positions: torch.Tensor  # [B, 2] int32
    cu_seqlens: torch.Tensor  # [MAX_SEQS + 2] int32


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: _Inputs
    out: torch.Tensor  # [B / merge^2, hidden]


class VisionGraphs:
    """Captures lazily, on the first batch that needs a bucket; all graphs share one memory pool (they
    never run concurrently and each result is copied out before the next replay)."""

    def __init__(self, tower: Qwen2VisionTower, max_patches: int) -> None:
        self.tower = tower
        self.max_patches = max_patches
        self.graphs: dict[tuple[int, int], _Graph] = {}  # (padded patches, max_seqlen) -> graph
        self.inputs: dict[int, _Inputs] = {}  # padded patches -> the buffers its graphs read
        self.pool = None

    def key(self, pixel_values: torch.Tensor, grid: Grid) -> tuple[int, int] | None:
        """(padded patches, max_seqlen) of a checked batch's graph, or None when it runs eagerly."""
        n = pixel_values.shape[0]
        if not pixel_values.is_cuda or torch.cuda.is_current_stream_capturing():
            return None
        if self.tower.attn_backend != AttentionBackendEnum.FLASH_ATTN:  # others want host-side metadata
            return None
        if not fits(grid, n, self.max_patches):
            return None
        size = bucket_size(n)
        return size, min(size, bucket_size(max(h * w for _, h, w in grid)))

    def run(self, pixel_values: torch.Tensor, grid: Grid) -> torch.Tensor | None:
        """The tower's output for a checked batch, or None when it is not for a graph (eager then)."""
        key = self.key(pixel_values, grid)
        if key is None:
            return None
        g = self.graphs.get(key)
        if g is None:
            if len(self.graphs) >= MAX_GRAPHS:
                return None
            g = self._capture(*key)
        load_inputs(g.inputs, pixel_values, grid, key[0], self.tower.merge_size)
        g.graph.replay()
        return g.out[: pixel_values.shape[0] // self.tower.merge_size**2].clone()

    def _capture(self, size: int, seq_limit: int) -> _Graph:
        tower, dev = self.tower, self.tower.device
        inputs = inputs_for(self.inputs, self.tower, size)
        meta = capture_meta(tower, inputs, size, seq_limit)

        def forward() -> torch.Tensor:
            return tower.encode(inputs.pixels, meta())

        graph, out = capture_graph(forward, dev, self.pool)
        self.pool = graph.pool()
        self.graphs[size, seq_limit] = _Graph(graph, inputs, out)
        return self.graphs[size, seq_limit]


def inputs_for(buffers: dict[int, _Inputs], tower: Qwen2VisionTower, size: int) -> _Inputs:
    """The input buffers of one padded size in `buffers` (made on first use), shared by its graphs."""
    if size not in buffers:
        dev = tower.device
        buffers[size] = _Inputs(
            torch.zeros(size, tower.patch_dim, dtype=tower.dtype, device=dev),
            torch.zeros(size, 2, dtype=torch.int32, device=dev),
            torch.zeros(MAX_SEQS + 2, dtype=torch.int32, device=dev),
        )
    return buffers[size]


def load_inputs(inputs: _Inputs, pixel_values: torch.Tensor, grid: Grid, size: int, merge: int) -> None:
    """A batch's pixels, patch positions and padded cu_seqlens into a graph's input buffers."""
    n = pixel_values.shape[0]
    inputs.pixels[:n].copy_(pixel_values)
    positions = torch.from_numpy(patch_positions(grid, merge)).pin_memory()
    inputs.positions[:n].copy_(positions, non_blocking=True)
    inputs.cu_seqlens.copy_(torch.from_numpy(padded_cu_seqlens(grid, size)).pin_memory(), non_blocking=True)


def capture_meta(tower: Qwen2VisionTower, inputs: _Inputs, size: int, seq_limit: int):
    """Makes the inputs valid for a capture (sequences no longer than max_seqlen) and returns the function
    that builds the attention metadata from them inside the graph (rotary from the positions buffer)."""
    inputs.cu_seqlens.copy_(torch.from_numpy(_padded_cu([seq_limit] * (size // seq_limit), size)))
    max_seqlen = torch.tensor(seq_limit, dtype=torch.int32)  # read on the host by the FA wrapper

    def meta() -> VisionAttnMeta:
        cos, sin = rotary_cos_sin(inputs.positions, tower.inv_freq, size)
        return VisionAttnMeta(inputs.cu_seqlens, max_seqlen, None, cos, sin)

    return meta


def capture_graph(
    forward: Callable[[], T], device: torch.device, pool: object
) -> tuple[torch.cuda.CUDAGraph, T]:
    """A CUDA graph of `forward` in `pool` (None: a new one), and its output (static tensors)."""
    # Warm-up outside the capture: Triton compiles, cuBLAS picks its kernels and workspace.
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        forward()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the engine's other threads may use CUDA while we capture.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        out = forward()
    return graph, out

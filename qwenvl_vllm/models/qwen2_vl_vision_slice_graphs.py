"""CUDA graphs of the Qwen2-VL vision tower in slices of whole blocks (`models.tower_slices`).

An eager slice would launch its ~12 kernels per block from Python (the host cost `qwen2_vl_vision_graphs`
removes), so a sliced encode replays one graph per slice: the first computes the rotary tables and the
patch embedding and runs the first blocks, each next one continues from the previous one's output tensors,
the last ends with the merger. Graphs are keyed like the whole-tower ones, plus the blocks per slice.

Memory: the slice graphs have their own input buffers and one pool of their own. A slice's outputs are
only needed until the next slice of the same encode has run, so their memory may be reused by later
captures in the pool; that is safe because encodes run one at a time, slice after slice on one stream (the
slicer's queue): no other slice graph replays between two slices of an encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .qwen2_vl_vision_graphs import (
    MAX_GRAPHS,
    VisionGraphs,
    _Inputs,
    capture_graph,
    capture_meta,
    inputs_for,
    load_inputs,
)

if TYPE_CHECKING:
    from .qwen2_vl_vision import Grid
    from .tower_slices import Slices


@dataclass
class _SlicedGraph:
    graphs: list[torch.cuda.CUDAGraph]
    inputs: _Inputs
    out: torch.Tensor  # [B / merge^2, hidden]


class SliceGraphs:
    def __init__(self, whole: VisionGraphs) -> None:
        self.whole = whole  # its checks and keys
        self.tower = whole.tower
        self.graphs: dict[tuple[int, int, int], _SlicedGraph] = {}  # (size, max_seqlen, blocks per slice)
        self.inputs: dict[int, _Inputs] = {}
        self.pool = None

    def slices(self, pixel_values: torch.Tensor, grid: Grid, per_slice: int) -> Slices | None:
        """The encode as graph replays, one per slice, or None when it is not for a graph (eager then)."""
        key = self.whole.key(pixel_values, grid)
        if key is None or ((*key, per_slice) not in self.graphs and len(self.graphs) >= MAX_GRAPHS):
            return None
        return self._replay((*key, per_slice), pixel_values, grid)

    def _replay(self, key: tuple[int, int, int], pixel_values: torch.Tensor, grid: Grid) -> Slices:
        # Everything here runs from the first slice on, when this encode is the only one under way: a
        # capture writes the shared input buffers of its size, which an earlier encode may still read.
        g = self.graphs.get(key) or self._capture(*key)
        load_inputs(g.inputs, pixel_values, grid, key[0], self.tower.merge_size)
        for graph in g.graphs[:-1]:
            graph.replay()
            yield
        g.graphs[-1].replay()
        return g.out[: pixel_values.shape[0] // self.tower.merge_size**2].clone()

    def _capture(self, size: int, seq_limit: int, per_slice: int) -> _SlicedGraph:
        tower = self.tower
        inputs = inputs_for(self.inputs, tower, size)
        meta = capture_meta(tower, inputs, size, seq_limit)
        depth = len(tower.blocks)
        graphs, state = [], None
        for start in range(0, depth, per_slice):

            def piece(start=start, state=state):
                if state is None:
                    m = meta()
                    x, h = tower.embed_patches(inputs.pixels)
                else:
                    m, x, h = state
                x, h = tower.run_blocks(x, h, m, start, start + per_slice)
                return tower.merger(h) if start + per_slice >= depth else (m, x, h)

            graph, state = capture_graph(piece, tower.device, self.pool)
            self.pool = graph.pool()
            graphs.append(graph)
        self.graphs[size, seq_limit, per_slice] = _SlicedGraph(graphs, inputs, state)
        return self.graphs[size, seq_limit, per_slice]

"""The Qwen2-VL vision path run once before serving (`QWENVL_VLLM_WARM_TOWER`; off until checked on a GPU).

Why (sixteenth visit): vLLM 0.26's V2 model runner warms the language model and the sampler but never runs
the multimodal encoder before the first request. Its JIT monitor then logged our Triton kernels
(`_resample_kernel` of the device pixels, `_add_layernorm_kernel`, `rotary_kernel`, `_quick_gelu_fp8_kernel`
of the tower) compiling during the first W1 requests, and the tower's first CUDA graph is captured there too:
a server's first image requests paid for them. Run from the model's first `compute_logits` call (the
engine's profiling run, as `LogitsWarmup`), so what they allocate is inside vLLM's memory profile; pipeline
ranks before the last never compute logits, so there the first `forward` (the same profiling run) runs it.
Qwen-VL v1 has the same first-request compile (its 448x448 resize runs `_resample_kernel`), so it is warmed
too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from vllm.distributed import get_pp_group

from qwenvl_vllm.geometry import VisionGeometry
from qwenvl_vllm.settings import get_settings

from .qwen2_vl_device_pixels import uint8_rows

WARM_GRID = (1, 4, 6)  # one temporal patch of 4 x 6 patches: 24 rows
WARM_DECODED = (50, 70)  # decoded sides unlike the grid's 56 x 84 pixels, so the resize kernels run


def warm_rows(
    visual: torch.nn.Module, geometry: VisionGeometry, device_pixels: bool
) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """Patch rows and grids of one image and one video of `WARM_GRID` for `visual`; with device pixels, made
    from decoded uint8 pixels by the requests' conversion (resize, normalise, patchify on its device)."""
    device, dtype = visual.device, visual.dtype
    grids = [WARM_GRID, WARM_GRID]
    if not device_pixels:
        rows = sum(t * h * w for t, h, w in grids)
        return torch.zeros(rows, visual.patch_dim, device=device, dtype=dtype), grids
    image = torch.zeros(*WARM_DECODED, 3, dtype=torch.uint8)
    frames = torch.zeros(WARM_GRID[0] * geometry.temporal_patch_size, *WARM_DECODED, 3, dtype=torch.uint8)
    rows = [uint8_rows(pixels, WARM_GRID, geometry, device, dtype) for pixels in (image, frames)]
    return torch.cat(rows), grids


def warm_tower(visual: torch.nn.Module, rows: torch.Tensor, grids: list[tuple[int, int, int]]) -> None:
    """The tower's two paths: `forward` (a CUDA graph of the smallest bucket where graphs are on) and the
    eager `encode` that items past the graphs take, the latter at 24 and 48 rows: Triton specialises its
    kernels on whether integer arguments (here the row count) are multiples of 16."""
    visual(rows, [list(g) for g in grids])
    for items in (grids[:1], grids):
        count = sum(t * h * w for t, h, w in items)
        visual.encode(rows[:count], visual.prepare_metadata(items, visual.device))


def warm_qwen2(visual: torch.nn.Module, geometry: VisionGeometry, device_pixels: bool) -> None:
    warm_tower(visual, *warm_rows(visual, geometry, device_pixels))


def warm_qwen_vl(visual: torch.nn.Module, image_size: int, device_pixels: bool) -> None:
    """Qwen-VL v1's tower on one image, through the 448x448 resize on its device where pixels go there."""
    from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values_on_device

    device = next(visual.parameters()).device
    if device_pixels:
        pixels = qwen_vl_pixel_values_on_device(
            [torch.zeros(*WARM_DECODED, 3, dtype=torch.uint8)], image_size, device
        )
    else:
        pixels = torch.zeros(1, 3, image_size, image_size, device=device)
    visual(pixels)


def encoding_tower(visual: object, tower_cls: type[torch.nn.Module]) -> torch.nn.Module | None:
    """`visual` if it is our tower and this rank encodes: not vLLM's stand-in of an engine without media, and
    only on the first pipeline rank."""
    return visual if isinstance(visual, tower_cls) and get_pp_group().is_first_rank else None


def warmup_of(visual: torch.nn.Module | None, warm: Callable[..., None], *args: object) -> partial | None:
    """`warm(visual, *args, device_pixels)` as a call for `TowerWarmup`; None where this rank has no tower."""
    return None if visual is None else partial(warm, visual, *args, get_settings().device_pixels)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


WarmupFactory = Callable[[], Callable[[], object] | None]


class TowerWarmup:
    """Runs a model's vision warm-up once, on the first call it sees outside a CUDA graph capture."""

    def __init__(self, enabled: bool) -> None:
        self.pending = enabled

    def at_logits(self, warm: WarmupFactory) -> None:
        """From the model's `compute_logits`: the last pipeline rank (the only one, without pipelining)."""
        if self.pending:
            self.before(warm())

    def at_forward(self, warm: WarmupFactory) -> None:
        """From the model's `forward`: ranks before the last, which never compute logits (the first of them
        holds the tower)."""
        if self.pending and not get_pp_group().is_last_rank:
            self.before(warm())

    def before(self, warm: Callable[[], object] | None) -> None:
        """`warm`: the model's warm-up of this rank's tower; None where there is none (an engine without
        media, a pipeline rank without the tower)."""
        if not self.pending or _capturing():  # inside another graph's capture: at the next call instead
            return
        self.pending = False
        if warm is None:
            return
        with torch.inference_mode():
            warm()

"""Qwen2-VL vision tower (ViT + patch merger) built from vLLM's layers.

Input: `pixel_values` [N, C*T*P*P] rows as the Qwen2-VL processor emits them (each row one
temporal x spatial patch, flattened (c, t, ph, pw); patches of each frame in merge-window order) and
`grid_thw` (t, h, w) in patches per item. Output: [N / merge^2, LLM hidden], one row per LLM token.

Per forward, everything derived from the grid (cu_seqlens, max_seqlen, rotary cos/sin) is computed
once, on the CPU from the Python grid list (no device syncs), and shared by all blocks.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from vllm.model_executor.layers.attention import MMEncoderAttention
from vllm.model_executor.layers.linear import ReplicatedLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.vision import get_fp8_padded_hidden_size, is_vit_use_data_parallel
from vllm.utils.torch_utils import async_tensor_h2d
from vllm.v1.attention.backends.registry import AttentionBackendEnum

from ..kernels.layernorm import add_layernorm
from ..settings import VIT_FP8_ENV, get_settings
from .qwen2_vl_vision_graphs import VisionGraphs, bucket_size
from .qwen2_vl_vision_layers import (
    Qwen2VisionBlock,
    Qwen2VisionPatchMerger,
    VisionAttnMeta,
    frame_seqlens,
    vision_tp_size,
)
from .qwen2_vl_vision_slice_graphs import SliceGraphs
from .tower_slices import SLICES_PER_STEP, Slices, run_to_end
from .vision_rotary import axial_inv_freq, patch_positions, rotary_cos_sin

Grid = list[tuple[int, int, int]]


def hf_weight_shapes(vision_config) -> dict[str, tuple[int, ...]]:
    """Checkpoint (unsharded) shape of every vision weight, by its name relative to the tower."""
    e, c = vision_config.embed_dim, vision_config.in_channels
    t, p = vision_config.temporal_patch_size, vision_config.patch_size
    mlp = int(e * vision_config.mlp_ratio)
    merged = e * vision_config.spatial_merge_size**2
    shapes: dict[str, tuple[int, ...]] = {"patch_embed.proj.weight": (e, c, t, p, p)}
    for i in range(vision_config.depth):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            shapes[b + norm + ".weight"] = shapes[b + norm + ".bias"] = (e,)
        shapes.update({b + "attn.qkv.weight": (3 * e, e), b + "attn.qkv.bias": (3 * e,)})
        shapes.update({b + "attn.proj.weight": (e, e), b + "attn.proj.bias": (e,)})
        shapes.update({b + "mlp.fc1.weight": (mlp, e), b + "mlp.fc1.bias": (mlp,)})
        shapes.update({b + "mlp.fc2.weight": (e, mlp), b + "mlp.fc2.bias": (e,)})
    shapes["merger.ln_q.weight"] = shapes["merger.ln_q.bias"] = (e,)
    shapes.update({"merger.mlp.0.weight": (merged, merged), "merger.mlp.0.bias": (merged,)})
    shapes.update({"merger.mlp.2.weight": (vision_config.hidden_size, merged)})
    shapes["merger.mlp.2.bias"] = (vision_config.hidden_size,)
    return shapes


def _rope_theta(vision_config) -> float:
    params = getattr(vision_config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", 10000.0))


class _PatchEmbed(nn.Module):
    """Conv3d with kernel == stride over one patch is a linear map of the flattened patch: one GEMM."""

    def __init__(self, in_features: int, embed_dim: int, prefix: str = "") -> None:
        super().__init__()
        self.proj = ReplicatedLinear(in_features, embed_dim, bias=False, prefix=f"{prefix}.proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.proj(x)
        return x


class Qwen2VisionTower(nn.Module):
    def __init__(
        self,
        vision_config,
        *,
        norm_eps: float = 1e-6,
        use_fp8: bool | None = None,
        graph_max_patches: int | None = None,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        cfg = vision_config
        self.vision_config = cfg
        self.embed_dim = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.embed_dim // cfg.num_heads
        self.merge_size = cfg.spatial_merge_size
        self.out_hidden_size = cfg.hidden_size
        self.patch_dim = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
        # vLLM's "data" ViT mode (or heads not divisible by TP): whole weights on every rank.
        self.use_data_parallel = is_vit_use_data_parallel(cfg.num_heads)
        self.tp_size = vision_tp_size(self.use_data_parallel)

        self.patch_embed = _PatchEmbed(self.patch_dim, cfg.embed_dim, prefix=f"{prefix}.patch_embed")
        self.blocks = nn.ModuleList(
            [
                Qwen2VisionBlock(
                    dim=cfg.embed_dim,
                    num_heads=cfg.num_heads,
                    mlp_hidden_dim=int(cfg.embed_dim * cfg.mlp_ratio),
                    hidden_act=getattr(cfg, "hidden_act", "quick_gelu"),
                    norm_eps=norm_eps,
                    use_data_parallel=self.use_data_parallel,
                    quant_config=quant_config,
                    prefix=f"{prefix}.blocks.{i}",
                )
                for i in range(cfg.depth)
            ]
        )
        self.merger = Qwen2VisionPatchMerger(
            d_model=cfg.hidden_size,
            context_dim=cfg.embed_dim,
            spatial_merge_size=self.merge_size,
            norm_eps=norm_eps,
            use_data_parallel=self.use_data_parallel,
            quant_config=quant_config,
            prefix=f"{prefix}.merger",
        )
        settings = get_settings()
        self.use_fp8 = settings.vit_fp8 if use_fp8 is None else use_fp8
        if self.use_fp8 and (self.tp_size > 1 or quant_config is not None):
            raise ValueError(
                f"{VIT_FP8_ENV}=1 needs an unquantized vision tower on one rank (tensor parallel size 1 or "
                "mm_encoder_tp_mode='data')"
            )
        self.register_buffer("inv_freq", axial_inv_freq(self.head_dim, _rope_theta(cfg)), persistent=False)
        self.fp8_padded_hidden_size = get_fp8_padded_hidden_size(cfg.num_heads, self.head_dim)
        max_graph = settings.vit_graph_max_patches if graph_max_patches is None else graph_max_patches
        # Graphs need one rank: no collectives inside a capture.
        graphs_ok = max_graph > 0 and self.tp_size == 1
        self.graphs = VisionGraphs(self, max_graph) if graphs_ok else None
        self.slice_graphs = SliceGraphs(self.graphs) if self.graphs is not None else None

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embed.proj.weight.device

    @property
    def attn_backend(self) -> AttentionBackendEnum:
        return self.blocks[0].attn.attn.attn_backend

    # ---- inputs -------------------------------------------------------------------------------
    def _check_inputs(self, pixel_values: torch.Tensor, grid_thw: list[list[int]] | torch.Tensor) -> Grid:
        if isinstance(grid_thw, torch.Tensor):
            if grid_thw.dim() != 2 or grid_thw.shape[1] != 3:
                raise ValueError(f"grid_thw must be [num_items, 3], got shape {tuple(grid_thw.shape)}")
            grid_thw = grid_thw.tolist()  # pass a list (or CPU tensor) to avoid a device sync here
        grid = [tuple(int(v) for v in row) for row in grid_thw]
        if not grid or any(len(row) != 3 for row in grid):
            raise ValueError(f"grid_thw must be a non-empty list of (t, h, w), got {grid_thw!r}")
        m = self.merge_size
        for t, h, w in grid:
            if t < 1 or h < 1 or w < 1 or h % m or w % m:
                raise ValueError(
                    f"bad grid (t={t}, h={h}, w={w}): need t, h, w >= 1 and h, w divisible by {m}"
                )
        if pixel_values.dim() != 2 or pixel_values.shape[1] != self.patch_dim:
            raise ValueError(f"pixel_values must be [N, {self.patch_dim}], got {tuple(pixel_values.shape)}")
        total = sum(t * h * w for t, h, w in grid)
        if pixel_values.shape[0] != total:
            raise ValueError(f"pixel_values has {pixel_values.shape[0]} patches but grid_thw sums to {total}")
        return grid

    def prepare_metadata(self, grid: Grid, device: torch.device) -> VisionAttnMeta:
        """cu_seqlens (one sequence per frame), max_seqlen and rotary cos/sin for a checked grid."""
        cu = np.concatenate([[0], np.cumsum(frame_seqlens(grid))]).astype(np.int32)
        backend = self.attn_backend
        max_seqlen = torch.tensor(MMEncoderAttention.compute_max_seqlen(backend, cu), dtype=torch.int32)
        if backend == AttentionBackendEnum.TORCH_SDPA:
            # The SDPA wrapper splits with cu_seqlens.tolist() in every block: keep it on the CPU.
            cu_t = torch.from_numpy(cu)
        else:
            cu_t = MMEncoderAttention.maybe_recompute_cu_seqlens(
                backend,
                cu,
                self.embed_dim,
                self.tp_size,
                device,
                fp8_padded_hidden_size=self.fp8_padded_hidden_size,
            )
        seq_lens = MMEncoderAttention.maybe_compute_seq_lens(backend, cu, device)

        positions = patch_positions(grid, self.merge_size)  # [N, 2] int32
        pos_t = torch.from_numpy(positions)
        pos_t = async_tensor_h2d(pos_t, device) if device.type == "cuda" else pos_t.to(device)
        max_pos = max(max(h, w) for _, h, w in grid)
        cos, sin = rotary_cos_sin(pos_t, self.inv_freq, max_pos)
        return VisionAttnMeta(cu_t, max_seqlen, seq_lens, cos, sin)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, grid_thw: list[list[int]] | torch.Tensor) -> torch.Tensor:
        grid = self._check_inputs(pixel_values, grid_thw)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        if self.graphs is not None and (out := self.graphs.run(pixel_values, grid)) is not None:
            return out
        return self.encode(pixel_values, self.prepare_metadata(grid, self.device))

    def forward_slices(
        self, pixel_values: torch.Tensor, grid_thw: list[list[int]] | torch.Tensor, patch_layers: int
    ) -> tuple[Slices, int]:
        """`forward` as slices of whole blocks, about a fifth of `patch_layers` (a step's budget, in patches x
        blocks) each, at least one block, and the cost of one slice in those units (a step launches a few
        slices, so its tower time stays near the budget across the end of one item and the next)."""
        grid = self._check_inputs(pixel_values, grid_thw)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        size = bucket_size(pixel_values.shape[0])  # the graphs' padded size: the same slices either way
        per_slice = min(len(self.blocks), max(1, patch_layers // size // SLICES_PER_STEP))
        graphed = self.slice_graphs.slices(pixel_values, grid, per_slice) if self.slice_graphs else None
        if graphed is not None:
            return graphed, per_slice * size
        meta = self.prepare_metadata(grid, self.device)
        return self.encode_slices(pixel_values, meta, per_slice), per_slice * size

    def encode(self, pixel_values: torch.Tensor, meta: VisionAttnMeta) -> torch.Tensor:
        """Patch rows [N, C*T*P*P] (model dtype, on device) -> [N / m^2, hidden]."""
        return run_to_end(self.encode_slices(pixel_values, meta, len(self.blocks)))

    def encode_slices(
        self, pixel_values: torch.Tensor, meta: VisionAttnMeta, blocks_per_slice: int
    ) -> Slices:
        """`encode`, pausing after every `blocks_per_slice` blocks: each `next()` launches one slice of the
        tower's kernels; the generator's value is the output. Same kernels in the same order as `encode`."""
        x, h = self.embed_patches(pixel_values)
        for start in range(0, len(self.blocks), blocks_per_slice):
            x, h = self.run_blocks(x, h, meta, start, start + blocks_per_slice)
            if start + blocks_per_slice < len(self.blocks):
                yield
        return self.merger(h)  # [N / m^2, hidden]

    def embed_patches(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch rows -> (residual stream, first block's norm1 of it), [N, E] each."""
        x = self.patch_embed(pixel_values)  # [N, E]
        first = self.blocks[0].norm1
        return add_layernorm(x, None, first.weight, first.bias, first.eps, self.use_fp8)

    def run_blocks(
        self, x: torch.Tensor, h: torch.Tensor, meta: VisionAttnMeta, start: int, stop: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks [start, stop); the last block's norm is the merger's ln_q."""
        for i in range(start, min(stop, len(self.blocks))):
            last = i + 1 == len(self.blocks)
            next_norm = self.merger.ln_q if last else self.blocks[i + 1].norm1
            x, h = self.blocks[i](x, h, meta, next_norm, fp8_next=self.use_fp8 and not last)
        return x, h

    # ---- weights ------------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load HF weights named relative to the tower (`visual.` / `model.visual.` already stripped).

        Shapes are checked against the unsharded checkpoint shapes (ValueError on mismatch or unknown
        name); vLLM's weight loaders then take this rank's shard. Returns the loaded parameter names
        (identical to the checkpoint names)."""
        expected = hf_weight_shapes(self.vision_config)
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, weight in weights:
            if name not in expected or name not in params:
                raise ValueError(f"unexpected Qwen2-VL vision weight {name!r}")
            if tuple(weight.shape) != expected[name]:
                raise ValueError(
                    f"vision weight {name!r} has shape {tuple(weight.shape)}, expected {expected[name]}"
                )
            param = params[name]
            if name == "patch_embed.proj.weight":
                weight = weight.reshape(weight.shape[0], -1)  # Conv3d [E, C, T, P, P] -> [E, C*T*P*P]
            if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
                # Fused rows [q | k | v] (HF reshapes qkv to (S, 3, heads, head_dim)).
                for shard_id, part in zip(("q", "k", "v"), weight.chunk(3, dim=0), strict=True):
                    param.weight_loader(param, part, shard_id)
            else:
                getattr(param, "weight_loader", default_weight_loader)(param, weight)
            loaded.add(name)
        if self.use_fp8 and loaded == set(expected):
            for block in self.blocks:
                block.quantize_fp8_()
        return loaded

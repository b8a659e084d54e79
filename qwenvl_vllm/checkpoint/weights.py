"""Tensor inventories of Qwen2-VL and Qwen-VL checkpoints, and their deterministic random values.

Every tensor is drawn from its own torch.Generator seeded from (seed, canonical name), so any shard can be
produced alone and the same seed gives the same weights whatever the quantization, name scheme or sharding.
Values are bf16 and also exactly representable in fp16 (magnitudes below 2^-17 are flushed to zero), so
fp16 copies in quantized checkpoints hold the very same numbers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from qwenvl_vllm.constants import QWEN_VL_PATCH_SIZE, QWEN_VL_POS_EMBED_ROWS, QWEN_VL_QUERIES

from .configs import QWEN_VL_SIZES, qwen2_vl_sizes

STD = 0.02
_FP16_EXACT_MIN = 2.0**-17  # smaller bf16 magnitudes would lose bits as fp16 subnormals
_CHUNK_ELEMS = 1 << 24  # bound float32 temporaries when drawing large tensors


@dataclass(frozen=True)
class TensorSpec:
    name: str  # canonical name: also the seed key
    shape: tuple[int, ...]
    init: str = "normal"  # "normal": N(0, std); "norm": 1 + N(0, std); "sincos": Qwen-VL resampler pos_embed
    std: float = STD
    quantizable: bool = False  # an LLM linear weight, packed in GPTQ/AWQ checkpoints


def _linear(prefix: str, out_f: int, in_f: int, bias: bool, quantizable: bool = False) -> list[TensorSpec]:
    specs = [TensorSpec(f"{prefix}.weight", (out_f, in_f), quantizable=quantizable)]
    if bias:
        specs.append(TensorSpec(f"{prefix}.bias", (out_f,)))
    return specs


def _layer_norm(prefix: str, dim: int, bias: bool = True) -> list[TensorSpec]:
    specs = [TensorSpec(f"{prefix}.weight", (dim,), init="norm")]
    if bias:
        specs.append(TensorSpec(f"{prefix}.bias", (dim,)))
    return specs


def qwen2_vl_specs(model: str, quantized: bool = False) -> list[TensorSpec]:
    """Canonical (transformers >= 4.52) names: model.visual.*, model.language_model.*, lm_head.weight."""
    s = qwen2_vl_sizes(model, quantized)
    e, m = s.vision_embed, s.vision_embed * s.vision_mlp_ratio
    v = "model.visual"
    specs = [TensorSpec(f"{v}.patch_embed.proj.weight", (e, 3, 2, 14, 14))]
    for i in range(s.vision_depth):
        b = f"{v}.blocks.{i}"
        specs += _layer_norm(f"{b}.norm1", e) + _layer_norm(f"{b}.norm2", e)
        specs += _linear(f"{b}.attn.qkv", 3 * e, e, bias=True) + _linear(f"{b}.attn.proj", e, e, bias=True)
        specs += _linear(f"{b}.mlp.fc1", m, e, bias=True) + _linear(f"{b}.mlp.fc2", e, m, bias=True)
    merged = e * 4  # spatial_merge_size 2 -> 2x2 patches concatenated
    specs += _layer_norm(f"{v}.merger.ln_q", e)
    specs += _linear(f"{v}.merger.mlp.0", merged, merged, bias=True)
    specs += _linear(f"{v}.merger.mlp.2", s.hidden, merged, bias=True)

    lm = "model.language_model"
    head_dim = s.hidden // s.heads
    specs.append(TensorSpec(f"{lm}.embed_tokens.weight", (s.vocab, s.hidden)))
    for i in range(s.layers):
        b = f"{lm}.layers.{i}"
        specs += _layer_norm(f"{b}.input_layernorm", s.hidden, bias=False)
        specs += _linear(f"{b}.self_attn.q_proj", s.heads * head_dim, s.hidden, True, quantizable=True)
        specs += _linear(f"{b}.self_attn.k_proj", s.kv_heads * head_dim, s.hidden, True, quantizable=True)
        specs += _linear(f"{b}.self_attn.v_proj", s.kv_heads * head_dim, s.hidden, True, quantizable=True)
        specs += _linear(f"{b}.self_attn.o_proj", s.hidden, s.heads * head_dim, False, quantizable=True)
        specs += _layer_norm(f"{b}.post_attention_layernorm", s.hidden, bias=False)
        specs += _linear(f"{b}.mlp.gate_proj", s.intermediate, s.hidden, False, quantizable=True)
        specs += _linear(f"{b}.mlp.up_proj", s.intermediate, s.hidden, False, quantizable=True)
        specs += _linear(f"{b}.mlp.down_proj", s.hidden, s.intermediate, False, quantizable=True)
    specs += _layer_norm(f"{lm}.norm", s.hidden, bias=False)
    if not s.tied:  # tied models ship no lm_head.weight, like Qwen2-VL-2B
        specs.append(TensorSpec("lm_head.weight", (s.vocab, s.hidden)))
    return specs


def qwen_vl_specs(model: str) -> list[TensorSpec]:
    """Names of the released Qwen-VL(-Chat) safetensors (remote-code QWenLMHeadModel + visual.py)."""
    s = QWEN_VL_SIZES[model]
    proj = s.heads * s.kv_channels
    ffn = s.intermediate // 2
    specs = [TensorSpec("transformer.wte.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        b = f"transformer.h.{i}"
        specs += _layer_norm(f"{b}.ln_1", s.hidden, bias=False)
        specs += _linear(f"{b}.attn.c_attn", 3 * proj, s.hidden, bias=True, quantizable=True)
        specs += _linear(f"{b}.attn.c_proj", s.hidden, proj, bias=False, quantizable=True)
        specs += _layer_norm(f"{b}.ln_2", s.hidden, bias=False)
        specs += _linear(f"{b}.mlp.w1", ffn, s.hidden, bias=False, quantizable=True)
        specs += _linear(f"{b}.mlp.w2", ffn, s.hidden, bias=False, quantizable=True)
        specs += _linear(f"{b}.mlp.c_proj", s.hidden, ffn, bias=False, quantizable=True)
    specs += _layer_norm("transformer.ln_f", s.hidden, bias=False)
    specs += _qwen_vl_visual_specs(model)
    specs.append(TensorSpec("lm_head.weight", (s.vocab, s.hidden)))
    return specs


def _qwen_vl_visual_specs(model: str) -> list[TensorSpec]:
    s = QWEN_VL_SIZES[model]
    w, out = s.visual_width, s.hidden
    mlp = int(w * s.visual_mlp_ratio)  # 1664 * 4.9231 -> 8192
    v = "transformer.visual"
    # positional_embedding is 256 x width (a 16x16 grid, interpolated to 32x32 patches at run time).
    specs = [
        TensorSpec(f"{v}.conv1.weight", (w, 3, QWEN_VL_PATCH_SIZE, QWEN_VL_PATCH_SIZE)),
        TensorSpec(f"{v}.positional_embedding", (QWEN_VL_POS_EMBED_ROWS, w), std=w**-0.5),
    ]
    specs += _layer_norm(f"{v}.ln_pre", w)
    for i in range(s.visual_layers):
        b = f"{v}.transformer.resblocks.{i}"
        specs += _layer_norm(f"{b}.ln_1", w)
        specs += _linear(f"{b}.attn.in_proj", 3 * w, w, bias=True) + _linear(f"{b}.attn.out_proj", w, w, True)
        specs += _layer_norm(f"{b}.ln_2", w)
        specs += _linear(f"{b}.mlp.c_fc", mlp, w, bias=True) + _linear(f"{b}.mlp.c_proj", w, mlp, bias=True)
    p = f"{v}.attn_pool"
    specs.append(TensorSpec(f"{p}.query", (QWEN_VL_QUERIES, out)))
    if w != out:  # the Resampler only has kv_proj when widths differ
        specs += _linear(f"{p}.kv_proj", out, w, bias=False)
    specs += [
        TensorSpec(f"{p}.attn.in_proj_weight", (3 * out, out)),
        TensorSpec(f"{p}.attn.in_proj_bias", (3 * out,)),
    ]
    specs += _linear(f"{p}.attn.out_proj", out, out, bias=True)
    specs += _layer_norm(f"{p}.ln_q", out) + _layer_norm(f"{p}.ln_kv", out)
    # A frozen parameter (not a buffer) in the release, so checkpoints carry it: fixed 2-D sin-cos values.
    specs.append(TensorSpec(f"{p}.pos_embed", (QWEN_VL_QUERIES, out), init="sincos"))
    specs += _layer_norm(f"{v}.ln_post", out)
    specs.append(TensorSpec(f"{v}.proj", (out, out), std=out**-0.5))
    return specs


def tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Qwen-VL's get_2d_sincos_pos_embed: [grid*grid, dim]; first half encodes the column, second the row."""
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    return torch.cat([_sincos_1d(dim // 2, cols.reshape(-1)), _sincos_1d(dim // 2, rows.reshape(-1))], dim=1)


def _fp16_exact_bf16(x: torch.Tensor) -> torch.Tensor:
    return x.masked_fill_(x.abs() < _FP16_EXACT_MIN, 0.0).to(torch.bfloat16)


def generate(spec: TensorSpec, seed: int) -> torch.Tensor:
    """The bf16 value of one tensor; depends only on (seed, spec)."""
    if spec.init == "sincos":
        return _fp16_exact_bf16(sincos_2d(spec.shape[1], math.isqrt(spec.shape[0])).float())
    gen = torch.Generator().manual_seed(tensor_seed(seed, spec.name))
    out = torch.empty(spec.shape, dtype=torch.bfloat16)
    flat = out.view(spec.shape[0], -1) if out.dim() > 1 else out.view(1, -1)
    rows = max(1, _CHUNK_ELEMS // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], rows):
        block = torch.empty(flat[start : start + rows].shape, dtype=torch.float32).normal_(
            0.0, spec.std, generator=gen
        )
        if spec.init == "norm":
            block += 1.0
        flat[start : start + rows] = _fp16_exact_bf16(block)
    return out

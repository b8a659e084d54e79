"""The Qwen(-VL) release's dynamic NTK, one alpha per request, carried through vLLM in the positions.

The release (modeling_qwen.py) computes, at a sequence's prefill forward of length L,
    alpha = max(2 ** ceil(log2(L / seq_length) + 1) - 1, 1)
and rotates with base * alpha ** (d / (d - 2)) (d = rotary dim) for that forward and every later decode
step of the sequence (its cached alpha). Alpha only takes the values 2 ** (k + 1) - 1 (1, 3, 7, 15, ...),
so for a given max_model_len there are a few "tables" k = 0..K.

vLLM batches requests with different alphas, so the alpha must travel per token. We ride vLLM's M-RoPE
path: a request's prompt positions come from the model (`get_mrope_input_positions`, given the whole
prompt, so chunked prefill keeps the prompt's alpha), and decode positions continue from them through
`mrope_position_delta`. Position p of a request using table k is sent as k * stride + p (stride =
max_model_len > any p), the rotary cache holds table k's cos/sin at rows [k * stride, (k + 1) * stride),
and logn attention reads the true position p = offset mod stride. Pure tensor indexing: CUDA graphs and
torch.compile see the same graph for any mix of alphas.

A preempted request is recomputed: vLLM's V1 runner keeps its prompt positions; the V2 runner re-adds
it with prompt + generated tokens as its prefill, so our V2 model state (`ntk_model_state_cls`) takes the
alpha from the prompt part alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from vllm.logger import init_logger
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding
from vllm.model_executor.models.config import VerifyAndUpdateConfig

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = init_logger(__name__)


def qwen_head_dim(config: Any) -> int:
    return int(getattr(config, "kv_channels", None) or config.hidden_size // config.num_attention_heads)


def qwen_rotary_dim(config: Any) -> int:
    """The release rotates kv_channels * rotary_pct dims of each head (all of them for Qwen-VL)."""
    pct = next((v for n in ("partial_rotary_factor", "rotary_pct") if (v := getattr(config, n, None))), 1.0)
    return int(qwen_head_dim(config) * float(pct))


def ntk_alpha(prompt_len: int, seq_length: int) -> int:
    """The release's NTK alpha for a prefill of prompt_len tokens (1 up to seq_length)."""
    if prompt_len < 1 or seq_length < 1:
        raise ValueError(f"prompt_len {prompt_len} and seq_length {seq_length} must be positive")
    context_value = math.log(prompt_len / seq_length, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


def ntk_table(prompt_len: int, seq_length: int) -> int:
    """Index k of the rotary table for alpha = 2 ** (k + 1) - 1."""
    return (ntk_alpha(prompt_len, seq_length) + 1).bit_length() - 2


@dataclass(frozen=True)
class NTKLayout:
    """How alpha tables are laid out in positions: table k owns positions [k * stride, (k + 1) * stride)."""

    seq_length: int
    stride: int  # max_model_len: every true position is below it
    num_tables: int

    @property
    def alphas(self) -> list[int]:
        return [2 ** (k + 1) - 1 for k in range(self.num_tables)]

    def input_positions(self, prompt_len: int, num_tokens: int | None = None) -> tuple[torch.Tensor, int]:
        """(positions [3, num_tokens], delta) in the prompt's table (table k starts at k * stride);
        num_tokens (default prompt_len) also covers generated tokens recomputed after preemption."""
        num_tokens = prompt_len if num_tokens is None else num_tokens
        if not 0 < prompt_len <= num_tokens <= self.stride:
            raise ValueError(
                f"{num_tokens} tokens (prompt {prompt_len}) do not fit max_model_len {self.stride}"
            )
        delta = ntk_table(prompt_len, self.seq_length) * self.stride
        return (torch.arange(num_tokens) + delta).repeat(3, 1), delta


def ntk_layout(config: Any, max_model_len: int) -> NTKLayout | None:
    """The layout when dynamic NTK can act (use_dynamic_ntk and a context past seq_length), else None."""
    seq_length = getattr(config, "seq_length", None)
    if not seq_length or max_model_len <= seq_length or not getattr(config, "use_dynamic_ntk", True):
        return None
    return NTKLayout(int(seq_length), max_model_len, ntk_table(max_model_len, int(seq_length)) + 1)


def input_positions(layout: NTKLayout | None, prompt_len: int) -> tuple[torch.Tensor, int]:
    """(positions [3, prompt_len], delta) for vLLM's M-RoPE hook; the three rows are equal."""
    if layout is None:
        return torch.arange(prompt_len).repeat(3, 1), 0
    return layout.input_positions(prompt_len)


@dataclass(frozen=True)
class _PromptAlphaPositions:
    """get_mrope_input_positions for tokens whose first prompt_len are the prompt (the rest generated)."""

    layout: NTKLayout
    prompt_len: int

    def get_mrope_input_positions(
        self, input_tokens: list[int], mm_features: list
    ) -> tuple[torch.Tensor, int]:
        return self.layout.input_positions(self.prompt_len, len(input_tokens))


@functools.cache
def ntk_model_state_cls() -> type:
    """vLLM V2 runner's per-request state (the model's get_model_state_cls), keeping the prompt's alpha
    when a preempted request comes back with its generated tokens as part of its prefill."""
    from vllm.v1.worker.gpu.model_states.default import DefaultModelState

    class QwenNTKModelState(DefaultModelState):
        def add_request(self, req_index: int, new_req_data: Any) -> None:
            layout = getattr(self.model, "ntk", None)
            if self.rope_state is None or layout is None:
                super().add_request(req_index, new_req_data)
                return
            prefill = new_req_data.prefill_token_ids
            source = _PromptAlphaPositions(layout, min(len(new_req_data.prompt_token_ids), len(prefill)))
            self.rope_state.init_prefill_positions(
                req_index, source, prefill, mm_features=new_req_data.mm_features
            )

    return QwenNTKModelState


def true_positions(positions: torch.Tensor, layout: NTKLayout | None) -> torch.Tensor:
    """Token positions without the table offset: what logn attention scales by."""
    return positions if layout is None else torch.remainder(positions, layout.stride)


class QwenDynamicNTKConfig(VerifyAndUpdateConfig):
    """vLLM's per-architecture config hook: turns on the M-RoPE position path and keeps prefix caching
    from sharing KV blocks across alphas, when dynamic NTK can act."""

    @staticmethod
    def verify_and_update_config(vllm_config: VllmConfig) -> None:
        model_config = vllm_config.model_config
        layout = ntk_layout(model_config.hf_config, model_config.max_model_len)
        if layout is None:
            return
        enable_position_hook(model_config.hf_config)
        cache_config = vllm_config.cache_config
        if cache_config.enable_prefix_caching:
            # The same tokens hold different keys under different alphas (prompt lengths), and vLLM's
            # block hashes only see tokens: reusing a block across requests could mix alphas.
            cache_config.enable_prefix_caching = False
            logger.info(
                "Qwen(-VL) dynamic NTK (max_model_len %d > seq_length %d, alphas %s): prefix caching off",
                layout.stride,
                layout.seq_length,
                layout.alphas,
            )


def enable_position_hook(hf_config: Any) -> None:
    """vLLM takes the per-request (3, N) position path when rope_parameters has an `mrope_section`; all
    rotary frequencies follow row 0 here (the rows are equal), so the section is [rot_dim / 2, 0, 0]."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    params.setdefault("mrope_section", [qwen_rotary_dim(hf_config) // 2, 0, 0])
    hf_config.rope_parameters = params


class NTKRotaryEmbedding(RotaryEmbedding):
    """vLLM's neox rotary (its kernels index the cos/sin cache by position) over the stacked alpha tables."""

    def __init__(self, head_size: int, rotary_dim: int, base: float, layout: NTKLayout, dtype: torch.dtype):
        self.layout = layout  # read by _compute_cos_sin_cache inside the base __init__
        super().__init__(head_size, rotary_dim, layout.stride * layout.num_tables, base, True, dtype)

    def _compute_cos_sin_cache(self) -> torch.Tensor:
        t = torch.arange(self.layout.stride, dtype=torch.float)
        tables = []
        for alpha in self.layout.alphas:
            # the release's base for this alpha; vLLM's inv_freq formula is the release's
            inv_freq = self._compute_inv_freq(self.base * alpha ** (self.rotary_dim / (self.rotary_dim - 2)))
            freqs = torch.outer(t, inv_freq)
            tables.append(torch.cat((freqs.cos(), freqs.sin()), dim=-1))
        return torch.cat(tables)


@functools.cache
def get_ntk_rope(
    head_size: int, rotary_dim: int, base: float, layout: NTKLayout, dtype: torch.dtype
) -> NTKRotaryEmbedding:
    """One instance shared by all layers (as vLLM's get_rope does): the tables are the same."""
    return NTKRotaryEmbedding(head_size, rotary_dim, base, layout, dtype)

"""Tensor-parallel shards of a group-quantized (GPTQ / AWQ) Qwen2 LLM: whole groups per rank, or a clear
error.

A row-parallel linear (o_proj, down_proj) gives each rank input_size / tp input features; with group
quantization, a group that straddles two ranks cannot be loaded, and vLLM's own message ("The input size
is not aligned with the quantized weight shape") names neither the layer nor the fix. Qwen2-VL-72B is the
known case: intermediate_size 29568 is 231 groups of 128, so tp 2, 4 and 8 fail; Qwen's re-released 72B
GPTQ/AWQ checkpoints pad it with zeros to 29696 (232 groups).
"""

from __future__ import annotations

from typing import Any

MAX_TP = 8


def _row_parallel_inputs(text_config: Any) -> dict[str, int]:
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return {
        "o_proj (attention heads x head_dim)": heads * head_dim,
        "down_proj (intermediate_size)": text_config.intermediate_size,
    }


def _fits(sizes: dict[str, int], heads: int, group: int, tp: int) -> bool:
    return heads % tp == 0 and all(size % tp == 0 and (size // tp) % group == 0 for size in sizes.values())


def check_quant_shards(text_config: Any, group_size: int | None, tp_size: int) -> None:
    """ValueError naming the layer and the fix when a quantization group would straddle two ranks."""
    if not group_size or group_size <= 0 or tp_size == 1:
        return
    sizes = _row_parallel_inputs(text_config)
    heads = text_config.num_attention_heads
    for name, size in sizes.items():
        if size % tp_size == 0 and (size // tp_size) % group_size == 0:
            continue
        working = [tp for tp in range(1, MAX_TP + 1) if _fits(sizes, heads, group_size, tp)]
        layer = name.split()[0]
        raise ValueError(
            f"Qwen2-VL: {name} = {size} split over tensor_parallel_size {tp_size} is "
            f"{size / tp_size:g} input features per rank, not whole quantization groups of {group_size}. "
            f"Use tensor_parallel_size in {working}, or a checkpoint whose {layer} input is zero-padded to a "
            f"multiple of {group_size * tp_size} (Qwen's released Qwen2-VL-72B GPTQ/AWQ checkpoints pad "
            "intermediate_size 29568 to 29696); mm_encoder_tp_mode does not change how the LLM is split."
        )

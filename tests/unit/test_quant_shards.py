"""Group-quantized LLM linears under tensor parallelism: whole groups per rank, or a clear ValueError."""

from __future__ import annotations

import pytest
from transformers import Qwen2VLConfig

from qwenvl_vllm.checkpoint.configs import qwen2_vl_config
from qwenvl_vllm.models.quant_shards import check_quant_shards


def _text_config(model: str, **overrides):
    config = qwen2_vl_config(model, "float16")
    return Qwen2VLConfig(**{**config, **overrides}).get_text_config()


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_72b_intermediate_splits_into_half_groups(tp):
    with pytest.raises(ValueError, match=r"down_proj \(intermediate_size\) = 29568.*\[1\].*29696"):
        check_quant_shards(_text_config("qwen2-vl-72b"), 128, tp)


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_72b_padded_as_released_splits_cleanly(tp):
    check_quant_shards(_text_config("qwen2-vl-72b", intermediate_size=29696), 128, tp)


def test_2b_at_tp4_names_the_sizes_that_work():
    # 8960 / 4 = 2240 = 17.5 groups of 128; tp 2 (4480 = 35 groups) works
    with pytest.raises(ValueError, match=r"2240 input features per rank.*\[1, 2\]"):
        check_quant_shards(_text_config("qwen2-vl-2b"), 128, 4)


@pytest.mark.parametrize("model,tp", [("qwen2-vl-2b", 2), ("qwen2-vl-7b", 2), ("qwen2-vl-7b", 4)])
def test_released_sizes_that_split_cleanly(model, tp):
    check_quant_shards(_text_config(model), 128, tp)


@pytest.mark.parametrize("group", [None, -1])
def test_no_groups_no_constraint(group):
    check_quant_shards(_text_config("qwen2-vl-72b"), group, 2)


def _vllm_quant_config(method: str):
    """The quantization config object vLLM builds from a checkpoint's quantization_config."""
    if method == "awq":
        from vllm.model_executor.layers.quantization.auto_awq import AutoAWQConfig

        raw = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
        return AutoAWQConfig.from_config(raw | {"modules_to_not_convert": ["visual"]})
    from vllm.model_executor.layers.quantization.auto_gptq import AutoGPTQConfig

    return AutoGPTQConfig.from_config(
        {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
    )


@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_vllm_quant_configs_reach_the_check(method):
    """Our model reads `quant_config.group_size` (AWQ with the released modules_to_not_convert ["visual"]
    included): a vLLM that renamed it would silently skip the check, so the real config objects are used."""
    from qwenvl_vllm.models.qwen2_vl import check_quant_config

    config = _vllm_quant_config(method)
    check_quant_config(config)
    with pytest.raises(ValueError, match="29568"):
        check_quant_shards(_text_config("qwen2-vl-72b"), getattr(config, "group_size", None), 2)

"""Qwen2VLForConditionalGeneration built on CPU from a tiny checkpoint: weights and multimodal embedding.

The model comes from the `build` fixture (tests/conftest.py: construction on CPU). Weight checks compare
every parameter with the checkpoint tensor(s) it must hold, through a name mapping written independently
here (fused q|k|v and gate|up, Conv3d -> linear).
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from qwenvl_vllm.checkpoint.writer import write_checkpoint

STACKED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2)}
STACKED |= {"gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    from qwenvl_vllm.model_registry import register

    register()
    root = tmp_path_factory.mktemp("tiny-qwen2-vl")
    return {
        scheme: str(write_checkpoint("tiny-qwen2-vl", "bf16", root / scheme, name_scheme=scheme))
        for scheme in ("default", "legacy")
    }


def _param_name(hf_name: str) -> tuple[str, int | None]:
    """Our parameter name (and shard index in a fused parameter) for a checkpoint tensor name."""
    name = re.sub(r"^model\.language_model\.", "model.", hf_name)  # new naming -> old naming
    name = re.sub(r"^model\.visual\.", "visual.", name)
    if name.startswith("visual."):
        return name, None
    name = "language_model." + name  # model.* and lm_head.*
    for proj, (fused, shard) in STACKED.items():
        if f".{proj}." in name:
            return name.replace(f".{proj}.", f".{fused}."), shard
    return name, None


def _expected_params(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    shards: dict[str, dict[int, torch.Tensor]] = {}
    expected: dict[str, torch.Tensor] = {}
    for hf_name, tensor in checkpoint.items():
        name, shard = _param_name(hf_name)
        tensor = tensor.float()
        if name == "visual.patch_embed.proj.weight":
            tensor = tensor.reshape(tensor.shape[0], -1)  # Conv3d [E, C, T, P, P] == linear [E, C*T*P*P]
        if shard is None:
            expected[name] = tensor
        else:
            shards.setdefault(name, {})[shard] = tensor
    for name, parts in shards.items():
        expected[name] = torch.cat([parts[i] for i in sorted(parts)])
    return expected


@pytest.mark.parametrize("scheme", ["default", "legacy"])
def test_both_namings_load_every_parameter(ckpts, build, scheme: str) -> None:
    model = build(ckpts[scheme])
    checkpoint = load_file(f"{ckpts[scheme]}/model.safetensors")
    loaded = model.load_weights(checkpoint.items())
    params = dict(model.named_parameters())
    assert loaded == set(params), (set(params) - loaded, loaded - set(params))
    expected = _expected_params(checkpoint)
    assert set(expected) == set(params)  # tied: no lm_head in the checkpoint, none separate in the model
    for name, value in expected.items():
        assert torch.equal(params[name].data, value), name
    assert model.language_model.lm_head is model.language_model.model.embed_tokens


def test_unexpected_weights_are_refused(ckpts, build) -> None:
    model = build(ckpts["default"])
    with pytest.raises(ValueError, match="extra"):
        model.load_weights([("model.visual.blocks.0.attn.extra.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="mystery"):
        model.load_weights([("model.language_model.layers.0.mystery.weight", torch.zeros(1))])


def test_gptq_module_list_maps_onto_llm_linears(ckpts, build, vllm_cpu, tmp_path) -> None:
    # GPTQ on CPU cannot build its (Marlin) layers; check the quantized-module names it will look up instead.
    from vllm.config import VllmConfig
    from vllm.config.model import ModelConfig
    from vllm.model_executor.layers.linear import LinearBase

    from qwenvl_vllm.models.qwen2_vl import Qwen2VLForConditionalGeneration, check_quant_config

    gptq = write_checkpoint("tiny-qwen2-vl", "gptq-int4", tmp_path / "gptq")
    model_config = ModelConfig(model=str(gptq), dtype="float16", max_model_len=1024)
    cfg = VllmConfig(model_config=model_config, device_config=vllm_cpu.device_config)
    quant = cfg.quant_config
    check_quant_config(quant)
    mapper = Qwen2VLForConditionalGeneration.hf_to_vllm_mapper
    mapped = set(mapper.apply_list(list(quant.modules_in_block_to_quantize)))
    model = build(ckpts["default"])
    packed = Qwen2VLForConditionalGeneration.packed_modules_mapping
    llm_linears = set()
    for name, module in model.named_modules():
        if isinstance(module, LinearBase) and name.startswith("language_model."):
            parent, leaf = name.rsplit(".", 1)
            llm_linears |= {f"{parent}.{part}" for part in packed.get(leaf, [leaf])}
    assert mapped == llm_linears


def test_unsupported_quantization_is_refused() -> None:
    from vllm.model_executor.layers.quantization.auto_awq import AutoAWQConfig
    from vllm.model_executor.layers.quantization.auto_gptq import AutoGPTQConfig
    from vllm.model_executor.layers.quantization.bitsandbytes import BitsAndBytesConfig

    from qwenvl_vllm.models.qwen2_vl import check_quant_config

    for bits in (4, 8):
        check_quant_config(
            AutoGPTQConfig.from_config({"bits": bits, "group_size": 128, "desc_act": False, "sym": True})
        )
    check_quant_config(AutoAWQConfig.from_config({"bits": 4, "group_size": 128, "zero_point": True}))
    with pytest.raises(ValueError, match="does not support quantization 'bitsandbytes'"):
        check_quant_config(BitsAndBytesConfig())


def test_embed_multimodal_one_pass_matches_per_item(ckpts, build) -> None:
    model = build(ckpts["default"])
    model.load_weights(load_file(f"{ckpts['default']}/model.safetensors").items())
    gen = torch.Generator().manual_seed(0)
    image_grid = torch.tensor([[1, 4, 6], [1, 2, 4]])
    video_grid = torch.tensor([[2, 4, 4]])
    images = torch.randn(24 + 8, 1176, generator=gen)
    videos = torch.randn(32, 1176, generator=gen)
    with torch.inference_mode():
        per_item = [
            model.visual(images[:24], [[1, 4, 6]]),
            model.visual(images[24:], [[1, 2, 4]]),
            model.visual(videos, [[2, 4, 4]]),
        ]
        together = model.embed_multimodal(
            pixel_values=images,
            image_grid_thw=image_grid,
            pixel_values_videos=videos,
            video_grid_thw=video_grid,
        )
        videos_first = model.embed_multimodal(
            pixel_values_videos=videos,
            video_grid_thw=video_grid,
            pixel_values=images,
            image_grid_thw=image_grid,
        )
    # fp32 on CPU; one batched tower pass vs per-item passes differ only by GEMM blocking (~1e-6)
    assert [t.shape for t in together] == [(6, 128), (2, 128), (8, 128)]
    for got, want in zip(together, per_item, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for got, want in zip(videos_first, [per_item[2], *per_item[:2]], strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_embed_multimodal_precomputed_embeddings(ckpts, build) -> None:
    model = build(ckpts["default"])
    embeds = torch.randn(6 + 2, 128)
    out = model.embed_multimodal(image_embeds=embeds, image_grid_thw=torch.tensor([[1, 4, 6], [1, 2, 4]]))
    assert [t.shape[0] for t in out] == [6, 2] and torch.equal(torch.cat(out), embeds)
    assert model.embed_multimodal() == []

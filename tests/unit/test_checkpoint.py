"""The checkpoint writer: released layout, loadable by transformers, real tokenizer, reproducible weights."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl_vllm import cli
from qwenvl_vllm.checkpoint import quant as Q
from qwenvl_vllm.checkpoint import weights as W
from qwenvl_vllm.checkpoint import write_checkpoint
from qwenvl_vllm.constants import QWEN2_SPECIAL_TOKENS
from qwenvl_vllm.tokenizers.bpe import SPLIT_REGEX, find_qwen_tiktoken, load_qwen_ranks

LM = "model.language_model.layers.0"
SAMPLE_TEXTS = [
    "Hello",
    "Hello world! 12345 numbers, ümlauts, 中文测试：你好世界。",
    "  leading spaces\n\n\ttabs\r\n  ",
    "def f(x):\n    return x**2  # comment",
    "emoji 🤖👍🏽 and e\u0301 (decomposed é, NFC-normalised)",
    "I'm here, they'll go; we've DONE it",
    "<ref>the dog</ref><box>(517,508),(589,611)</box>",
]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "bf16": write_checkpoint("tiny-qwen2-vl", "bf16", root / "bf16", seed=0),
        "gptq": write_checkpoint("tiny-qwen2-vl", "gptq-int4", root / "gptq", seed=0),
        "gptq-dq": write_checkpoint("tiny-qwen2-vl", "gptq-int4", root / "gptq-dq", seed=0, dequantized=True),
        "awq": write_checkpoint("tiny-qwen2-vl", "awq", root / "awq", seed=0),
        "awq-dq": write_checkpoint("tiny-qwen2-vl", "awq", root / "awq-dq", seed=0, dequantized=True),
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def test_released_file_set(ckpts: dict[str, Path]) -> None:
    files = {p.name for p in ckpts["bf16"].iterdir()}
    assert files == {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "chat_template.json",
        "model.safetensors",
    }
    pre = json.loads((ckpts["bf16"] / "preprocessor_config.json").read_text())
    assert (pre["min_pixels"], pre["max_pixels"], pre["patch_size"], pre["merge_size"]) == (
        3136,
        12845056,
        14,
        2,
    )
    assert pre["image_std"] == [0.26862954, 0.26130258, 0.27577711]
    gen = json.loads((ckpts["bf16"] / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643]


def test_tokenizer_is_the_real_qwen2_tokenizer(ckpts: dict[str, Path]) -> None:
    transformers = pytest.importorskip("transformers")
    tiktoken = pytest.importorskip("tiktoken")
    tok = transformers.AutoTokenizer.from_pretrained(ckpts["bf16"])
    assert tok("Hello").input_ids == [9707]
    assert tok.convert_tokens_to_ids(list(QWEN2_SPECIAL_TOKENS)) == list(range(151643, 151657))
    assert (tok.eos_token_id, tok.pad_token_id) == (151645, 151643)
    assert len(tok) == 151657
    # Reference: tiktoken's own BPE over the same ranks and split regex (+ NFC, which Qwen applies first).
    specials = {t: 151643 + i for i, t in enumerate(QWEN2_SPECIAL_TOKENS)}
    enc = tiktoken.Encoding(
        "qwen2",
        pat_str=SPLIT_REGEX,
        mergeable_ranks=load_qwen_ranks(find_qwen_tiktoken()),
        special_tokens=specials,
    )
    for text in SAMPLE_TEXTS:
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == enc.encode(unicodedata.normalize("NFC", text)), text
        assert tok.decode(ids) == unicodedata.normalize("NFC", text)
    assert tok("<|im_start|>user<|image_pad|>").input_ids == [151644, 872, 151655]


def test_chat_template_as_released(ckpts: dict[str, Path]) -> None:
    transformers = pytest.importorskip("transformers")
    proc = transformers.AutoProcessor.from_pretrained(ckpts["bf16"])
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Hi?"}]}
    ]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    head = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert text == f"{head}{vision}{vision}Hi?<|im_end|>\n<|im_start|>assistant\n"
    numbered = proc.apply_chat_template(msgs, add_generation_prompt=True, add_vision_id=True)
    assert f"Picture 1: {vision}Picture 2: {vision}Hi?" in numbered
    video = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "x"}]}]
    assert "Video 1: <|vision_start|><|video_pad|>" in proc.apply_chat_template(video, add_vision_id=True)


def test_tiny_bf16_loads_in_transformers_and_runs(ckpts: dict[str, Path]) -> None:
    transformers = pytest.importorskip("transformers")
    path = ckpts["bf16"]
    config = transformers.AutoConfig.from_pretrained(path)
    assert type(config).__name__ == "Qwen2VLConfig"
    assert config.text_config.hidden_size == 128 and config.vision_config.embed_dim == 32
    proc = transformers.AutoProcessor.from_pretrained(path)
    assert type(proc).__name__ == "Qwen2VLProcessor"
    model, info = transformers.Qwen2VLForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.bfloat16
    image = torch.randint(0, 256, (3, 56, 84), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    inputs = proc(
        text=[proc.apply_chat_template(msgs, add_generation_prompt=True)], images=[image], return_tensors="pt"
    )
    assert inputs.image_grid_thw.tolist() == [[1, 4, 6]]  # 56x84 px -> 4x6 patches -> 6 image tokens
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    # Random weights of realistic scale: finite, and not collapsed to a constant distribution.
    assert torch.isfinite(logits).all() and logits[0, -1].std() > 0.05


def test_legacy_names_load_to_the_same_model(ckpts: dict[str, Path], tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    legacy = write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path / "legacy", name_scheme="legacy")
    names = load_file(legacy / "model.safetensors").keys()
    assert {n.split(".")[0] for n in names} == {"visual", "model"}
    assert "model.layers.0.self_attn.q_proj.weight" in names and "visual.merger.ln_q.weight" in names
    cls = transformers.Qwen2VLForConditionalGeneration
    model, info = cls.from_pretrained(legacy, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reference = cls.from_pretrained(ckpts["bf16"]).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("model", ["qwen2-vl-2b", "qwen2-vl-7b", "qwen2-vl-72b"])
def test_real_sizes_match_transformers_model(model: str, quantized: bool, tmp_path: Path) -> None:
    """Released configs build (on the meta device) exactly the tensors our inventory lists."""
    transformers = pytest.importorskip("transformers")
    from qwenvl_vllm.checkpoint import configs

    config = configs.qwen2_vl_config(model, "bfloat16", quantized)
    (tmp_path / "config.json").write_text(json.dumps(config))
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    with torch.device("meta"):
        hf = transformers.Qwen2VLForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight")  # tied: not in the release's safetensors
    assert {s.name: s.shape for s in W.qwen2_vl_specs(model, quantized)} == expected


def test_quantized_72b_has_the_released_padded_intermediate_size() -> None:
    from qwenvl_vllm.checkpoint import configs

    assert configs.qwen2_vl_config("qwen2-vl-72b", "float16")["intermediate_size"] == 29568
    assert configs.qwen2_vl_config("qwen2-vl-72b", "float16", quantized=True)["intermediate_size"] == 29696
    assert configs.qwen2_vl_config("qwen2-vl-7b", "float16", quantized=True)["intermediate_size"] == 18944


def test_gptq_tiny_layout(ckpts: dict[str, Path]) -> None:
    path = ckpts["gptq"]
    config = _config(path)
    assert config["torch_dtype"] == "float16"
    qc = config["quantization_config"]
    assert (qc["quant_method"], qc["bits"], qc["group_size"], qc["sym"], qc["desc_act"]) == (
        "gptq",
        4,
        128,
        True,
        False,
    )
    sd = load_file(path / "model.safetensors")
    expect = {
        f"{LM}.self_attn.q_proj.qweight": ((16, 128), torch.int32),
        f"{LM}.self_attn.q_proj.qzeros": ((1, 16), torch.int32),
        f"{LM}.self_attn.q_proj.scales": ((1, 128), torch.float16),
        f"{LM}.self_attn.q_proj.g_idx": ((128,), torch.int32),
        f"{LM}.self_attn.q_proj.bias": ((128,), torch.float16),
        f"{LM}.self_attn.k_proj.qweight": ((16, 64), torch.int32),
        f"{LM}.mlp.down_proj.qweight": ((32, 128), torch.int32),
        f"{LM}.mlp.down_proj.qzeros": ((2, 16), torch.int32),
        f"{LM}.mlp.down_proj.g_idx": ((256,), torch.int32),
        "model.language_model.embed_tokens.weight": ((151936, 128), torch.float16),
        "model.visual.blocks.0.attn.qkv.weight": ((96, 32), torch.float16),
    }
    for name, (shape, dtype) in expect.items():
        assert tuple(sd[name].shape) == shape and sd[name].dtype == dtype, name
    # Only the 7 LLM linears per layer are packed; the vision tower, norms and embeddings stay fp16.
    assert sum(n.endswith(".qweight") for n in sd) == 2 * 7
    assert not any(n.endswith(".weight") and "_proj" in n and "language_model" in n for n in sd)
    assert not any("visual" in n and n.endswith((".qweight", ".qzeros")) for n in sd)


def test_awq_tiny_layout(ckpts: dict[str, Path]) -> None:
    config = _config(ckpts["awq"])
    assert config["quantization_config"] == {
        "bits": 4,
        "group_size": 128,
        "modules_to_not_convert": ["visual"],
        "quant_method": "awq",
        "version": "gemm",
        "zero_point": True,
    }
    sd = load_file(ckpts["awq"] / "model.safetensors")
    assert tuple(sd[f"{LM}.mlp.down_proj.qweight"].shape) == (256, 16)
    assert tuple(sd[f"{LM}.mlp.down_proj.qzeros"].shape) == (2, 16)
    assert tuple(sd[f"{LM}.mlp.down_proj.scales"].shape) == (2, 128)
    assert not any(n.endswith(".g_idx") for n in sd)


@pytest.mark.parametrize("variant,name", [("gptq", "gptq-int4"), ("awq", "awq")])
def test_dequantized_reference_is_exact(ckpts: dict[str, Path], variant: str, name: str) -> None:
    quantized = load_file(ckpts[variant] / "model.safetensors")
    reference = load_file(ckpts[f"{variant}-dq"] / "model.safetensors")
    bf16 = load_file(ckpts["bf16"] / "model.safetensors")
    assert _config(ckpts[f"{variant}-dq"])["torch_dtype"] == "bfloat16"
    assert "quantization_config" not in _config(ckpts[f"{variant}-dq"])
    assert reference.keys() == bf16.keys()
    packed_prefixes = {n.rsplit(".", 1)[0] for n in quantized if n.endswith(".qweight")}
    for prefix in packed_prefixes:
        parts = {n.rsplit(".", 1)[1]: t for n, t in quantized.items() if n.rsplit(".", 1)[0] == prefix}
        dq = Q.dequantize_packed(parts, Q.SCHEMES[name])
        assert torch.equal(dq.to(torch.bfloat16), reference[f"{prefix}.weight"]), prefix
        assert not torch.equal(reference[f"{prefix}.weight"], bf16[f"{prefix}.weight"])  # really quantized
    for key, value in reference.items():  # same underlying weights: everything else is bit-identical
        if key.rsplit(".", 1)[0] not in packed_prefixes:
            assert torch.equal(value, bf16[key]) and torch.equal(quantized[key], value.half()), key


def test_same_seed_reproducible_other_seed_differs(ckpts: dict[str, Path], tmp_path: Path) -> None:
    again = write_checkpoint("tiny-qwen2-vl", "gptq-int4", tmp_path / "again", seed=0)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert _sha(again / name) == _sha(ckpts["gptq"] / name), name
    other = load_file(
        write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path / "seed1", seed=1) / "model.safetensors"
    )
    base = load_file(ckpts["bf16"] / "model.safetensors")
    assert not torch.equal(other[f"{LM}.mlp.up_proj.weight"], base[f"{LM}.mlp.up_proj.weight"])


def test_sharded_output_loads(ckpts: dict[str, Path], tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    path = write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path / "sharded", max_shard_bytes=20 * 10**6)
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and not (path / "model.safetensors").exists()
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    tensors = {k: v for s in shards for k, v in load_file(path / s).items()}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    base = load_file(ckpts["bf16"] / "model.safetensors")
    assert tensors.keys() == base.keys() and all(torch.equal(tensors[k], base[k]) for k in base)
    _, info = transformers.Qwen2VLForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_tiny_qwen_vl_layout(tmp_path: Path) -> None:
    path = write_checkpoint("tiny-qwen-vl", "bf16", tmp_path / "qwen-vl")
    assert {p.name for p in path.iterdir()} == {
        "config.json",
        "generation_config.json",
        "qwen.tiktoken",
        "tokenizer_config.json",
        "model.safetensors",
    }
    assert _sha(path / "qwen.tiktoken") == _sha(Path(find_qwen_tiktoken()))
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    assert tok_cfg["auto_map"]["AutoTokenizer"][0] == "tokenization_qwen.QWenTokenizer"
    config = _config(path)
    assert config["model_type"] == "qwen" and config["architectures"] == ["QWenLMHeadModel"]
    assert config["visual"] == {
        "heads": 2,
        "image_size": 448,
        "image_start_id": 151857,
        "layers": 2,
        "mlp_ratio": 4.0,
        "output_dim": 128,
        "patch_size": 14,
        "width": 32,
    }
    sd = load_file(path / "model.safetensors")
    v = "transformer.visual"
    shapes = {
        "transformer.wte.weight": (151936, 128),
        "lm_head.weight": (151936, 128),
        "transformer.h.1.attn.c_attn.weight": (384, 128),
        "transformer.h.1.attn.c_attn.bias": (384,),
        "transformer.h.1.mlp.w1.weight": (256, 128),
        "transformer.h.1.mlp.c_proj.weight": (128, 256),
        f"{v}.conv1.weight": (32, 3, 14, 14),
        f"{v}.positional_embedding": (256, 32),
        f"{v}.transformer.resblocks.1.attn.in_proj.weight": (96, 32),
        f"{v}.attn_pool.kv_proj.weight": (128, 32),
        f"{v}.attn_pool.attn.in_proj_weight": (384, 128),
        f"{v}.attn_pool.query": (256, 128),
        f"{v}.proj": (128, 128),
    }
    for name, shape in shapes.items():
        assert tuple(sd[name].shape) == shape, name
    assert "transformer.h.0.attn.c_proj.bias" not in sd and f"{v}.attn_pool.kv_proj.bias" not in sd
    pos = sd[f"{v}.attn_pool.pos_embed"].float()
    assert torch.equal(pos, W.sincos_2d(128, 16).to(torch.bfloat16).float())
    # Qwen-VL's layout: index = row * 16 + column; the first half encodes the column, the second the row.
    sin1 = torch.tensor(1.0).sin().item()
    assert pos[1, 0] == pytest.approx(sin1, abs=4e-3) and pos[1, 64] == 0.0
    assert pos[16, 0] == 0.0 and pos[16, 64] == pytest.approx(sin1, abs=4e-3)


def test_real_qwen_vl_parameter_count() -> None:
    """Qwen-VL is a 9.6B model with a 1.9B ViT-bigG (per its model card)."""
    specs = W.qwen_vl_specs("qwen-vl-chat")
    total = sum(torch.Size(s.shape).numel() for s in specs)
    visual = sum(torch.Size(s.shape).numel() for s in specs if ".visual." in s.name)
    assert 9.6e9 < total < 9.7e9 and 1.9e9 < visual < 2.0e9
    shapes = {s.name: s.shape for s in specs}
    assert shapes["transformer.visual.transformer.resblocks.47.mlp.c_fc.weight"] == (8192, 1664)
    assert shapes["transformer.h.31.mlp.w1.weight"] == (11008, 4096)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"model": "qwen3-vl", "quant": "bf16"}, "unknown model"),
        ({"model": "tiny-qwen2-vl", "quant": "fp8"}, "unknown quant"),
        ({"model": "qwen-vl-chat", "quant": "awq"}, "bf16 or gptq-int4"),
        ({"model": "qwen-vl", "quant": "gptq-int8"}, "bf16 or gptq-int4"),
        ({"model": "tiny-qwen2-vl", "quant": "bf16", "dequantized": True}, "quantized variant"),
        ({"model": "tiny-qwen-vl", "quant": "bf16", "name_scheme": "legacy"}, "Qwen2-VL only"),
        ({"model": "tiny-qwen2-vl", "quant": "bf16", "name_scheme": "old"}, "name_scheme"),
        ({"model": "tiny-qwen2-vl", "quant": "gptq-int4", "device": "tpu"}, "device must be"),
    ],
)
def test_bad_input_raises_value_error(kwargs: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        write_checkpoint(out=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = [
        "make-checkpoint",
        "--model",
        "tiny-qwen-vl",
        "--quant",
        "gptq-int4",
        "--out",
        str(out),
        "--seed",
        "3",
    ]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert _config(out)["quantization_config"]["bits"] == 4
    assert "transformer.h.0.mlp.w2.qweight" in load_file(out / "model.safetensors")
    assert (
        cli.main(["make-checkpoint", "--model", "qwen-vl", "--quant", "awq", "--out", str(tmp_path / "y")])
        == 2
    )
    assert "bf16 or gptq-int4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["make-checkpoint", "--model", "nope", "--out", str(tmp_path / "z")])

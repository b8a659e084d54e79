"""CPU checks of scripts/gpu/qwen_vl_long_context.py's bookkeeping, so the GPU run measures what it says:
its prompts reach the intended lengths (one per dynamic-NTK alpha) through vLLM's real processor and
tokenizer, and per-variant results merge into the committed result format."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "qwen_vl_long_context.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("qwen_vl_long_context", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    from qwenvl_vllm.checkpoint.writer import write_checkpoint
    from qwenvl_vllm.model_registry import register

    register()
    ckpt = write_checkpoint("tiny-qwen-vl", "bf16", tmp_path_factory.mktemp("lc") / "tiny", seed=1)
    return MULTIMODAL_REGISTRY.create_processor(
        ModelConfig(model=str(ckpt), limit_mm_per_prompt={"image": 12})
    )


def test_prompts_reach_their_lengths_and_alphas(script, processor) -> None:
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    from qwenvl_vllm.models.qwen_ntk import ntk_alpha

    tokenizer = processor.info.get_tokenizer()
    alphas = []
    for seed, (target, n_images) in enumerate(script.CASES):
        req = script._request(tokenizer, target, n_images, seed)
        items = processor.info.parse_mm_data({"image": req["images"]})
        out = processor.apply(ProcessorInputs(req["prompt"], items), TimingContext(enabled=False))
        n = len(out["prompt_token_ids"])
        assert abs(n - target) < 0.02 * target, (target, n)
        assert len(out["mm_placeholders"]["image"]) == n_images
        alphas.append(ntk_alpha(n, 2048))
    assert alphas == [1, 3, 7, 15]  # every table of a 10240-token context
    images = [img.tobytes() for seed, (_, k) in enumerate(script.CASES) for img in script._images(k, seed)]
    assert len(set(images)) == len(images)  # no two pictures alike


def test_combine_merges_variants(script, tmp_path: Path) -> None:
    def run(variant: str, errs: list[float], mixed: float) -> Path:
        cases = [{"prompt_tokens": 1000 * (i + 1), "max_rel_err": e} for i, e in enumerate(errs)]
        data = {"variant": variant, "cases": cases, "mixed_batch_max_rel_err": mixed, "prefix_caching": False}
        path = tmp_path / f"{variant}.json"
        path.write_text(json.dumps(data))
        return path

    result = script.combine([run("bf16", [0.004, 0.006], 0.007), run("int4", [0.002, 0.003], 0.0025)], 1e-2)
    assert [(c["variant"], c["prompt_tokens"]) for c in result["cases"]] == [
        ("bf16", 1000),
        ("bf16", 2000),
        ("int4", 1000),
        ("int4", 2000),
    ]
    assert result["mixed_batch_max_rel_err"] == 0.007 and result["pass"]
    assert not script.combine([run("bf16", [0.004, 0.02], 0.007)], 1e-2)["pass"]


def test_evaluate_reads_the_logprobs_vllm_reports(script, processor, tmp_path: Path) -> None:
    """The script's reference side on CPU, fed with logprobs laid out as vLLM reports them (computed from
    a reference with the wrong alpha, 1): errors are the alpha effect itself, and zero for alpha 1."""
    import torch
    from reference.qwen_vl_ref import build_reference

    ckpt = Path(processor.info.ctx.model_config.model)
    short = tmp_path / "short"
    shutil.copytree(ckpt, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(config | {"seq_length": 32}))
    ref = build_reference(short, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    pairs = []
    for n in (20, 40):
        ids, gen = torch.randint(100, 150000, (n,), generator=g).tolist(), [9707, 11, 1879]
        with torch.inference_mode():
            lp = torch.log_softmax(ref(torch.tensor(ids + gen), prompt_len=1), dim=-1)  # alpha 1 for all
        top = lp[n - 1].topk(script.TOP_K)
        res = {
            "prompt_ids": ids,
            "prompt_lp": [lp[i - 1, ids[i]].item() for i in range(1, n)],
            "gen_ids": gen,
            "decode_lp": [lp[n - 1 + i, tok].item() for i, tok in enumerate(gen)],
            "topk": dict(zip(top.indices.tolist(), top.values.tolist(), strict=True)),
        }
        pairs.append(({"name": f"{n}", "images": []}, res))
    short_entry, long_entry = script.evaluate(short, pairs, "float32", 32, device="cpu")
    assert (short_entry["alpha"], long_entry["alpha"]) == (1, 3)
    assert short_entry["max_rel_err"] < 1e-6 and "alpha_effect_max_abs" not in short_entry
    assert long_entry["max_abs_err"] == pytest.approx(long_entry["alpha_effect_max_abs"], rel=1e-5)
    assert long_entry["max_abs_err"] > 1e-3

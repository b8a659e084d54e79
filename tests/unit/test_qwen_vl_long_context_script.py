"""CPU checks of scripts/gpu/qwen_vl_long_context.py's bookkeeping, so the GPU run measures what it says:
its prompts reach the intended lengths (one per dynamic-NTK alpha) through vLLM's real processor and
tokenizer, and per-variant results merge into the committed result format."""

from __future__ import annotations

import importlib.util
import json
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

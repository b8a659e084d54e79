"""GPU: Qwen-VL prompts past seq_length through `vllm.LLM` (paged attention, chunked prefill, torch.compile +
CUDA graphs) vs the plain-PyTorch reference with the release's dynamic NTK, on tiny-qwen-vl weights.

Runs scripts/gpu/qwen_vl_long_context.py (the Qwen-VL-Chat-shape run's script) in a subprocess: ~1.5k /
2.5k / 5k / 9k-token prompts with images (alphas 1 / 3 / 7 / 15 for seq_length 2048), alone and in one
mixed batch with short prompts; relative L2 error of prompt / decode / top-20 logprobs <= 1e-2, and
prefix caching off in the engine that served them (on by default, turned off by our config hook).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, run_json_script

pytestmark = pytest.mark.gpu

SCRIPT = REPO / "scripts" / "gpu" / "qwen_vl_long_context.py"


def _run(args: list[str], out: Path, runner: str) -> dict:
    # "v1": vLLM's V1 model runner (its own M-RoPE position code)
    return run_json_script(SCRIPT, args, out, **({"VLLM_USE_V2_MODEL_RUNNER": "0"} if runner == "v1" else {}))


@pytest.mark.parametrize(
    ("quant", "dtype", "runner"),
    [
        ("bf16", "bfloat16", "default"),
        ("bf16", "float32", "default"),
        ("bf16", "float32", "v1"),
        ("gptq-int4", "auto", "default"),
    ],
)
def test_long_prompts_match_reference(tmp_path: Path, quant: str, dtype: str, runner: str) -> None:
    """bf16 / Int4: the 1e-2 bar. float32 (Triton/Flex attention): vLLM's error is far below what a wrong
    alpha would change, so the alphas themselves are checked, not only the rounding budget."""
    from qwenvl_vllm.checkpoint.writer import write_checkpoint

    ckpt = write_checkpoint("tiny-qwen-vl", quant, tmp_path / "ckpt", seed=5)
    args = ["--ckpt", str(ckpt), "--label", f"{quant}-{dtype}", "--dtype", dtype]
    if quant == "bf16":
        args += ["--ref-dtype", "float32"]
    else:
        twin = write_checkpoint("tiny-qwen-vl", quant, tmp_path / "deq", seed=5, dequantized=True)
        args += ["--ref-ckpt", str(twin)]
    result = _run(args, tmp_path / "result.json", runner)
    assert result["pass"], json.dumps(result, indent=2)
    assert [c["alpha"] for c in result["cases"]] == [1, 3, 7, 15]
    assert sorted(e["alpha"] for e in result["mixed_batch"]) == [1, 1, 1, 3, 7, 15]
    assert result["prefix_caching"] is False
    if dtype == "float32":
        for entry in result["cases"] + result["mixed_batch"]:
            if entry["alpha"] > 1:
                assert entry["max_abs_err"] < 0.1 * entry["alpha_effect_max_abs"], entry

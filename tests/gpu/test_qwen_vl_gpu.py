"""GPU: Qwen-VL v1 through `vllm.LLM` vs the plain-PyTorch reference (scripts/gpu/qwen_vl_parity.py).

Writes tiny-qwen-vl checkpoints (bf16; GPTQ Int4 plus its exactly-dequantized bf16 twin) and runs the parity
script on each in a subprocess (vLLM starts its own engine process; a fresh interpreter keeps the test
process free of CUDA state). Tolerance: relative L2 error of logprobs <= 1e-2 (see the script's docstring).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import REPO, run_json_script

pytestmark = pytest.mark.gpu

SCRIPT = REPO / "scripts" / "gpu" / "qwen_vl_parity.py"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from qwenvl_vllm.checkpoint.writer import write_checkpoint

    root = tmp_path_factory.mktemp("qwen_vl_gpu")
    return {
        "bf16": write_checkpoint("tiny-qwen-vl", "bf16", root / "bf16", seed=5),
        "gptq": write_checkpoint("tiny-qwen-vl", "gptq-int4", root / "gptq", seed=5),
        "gptq_ref": write_checkpoint(
            "tiny-qwen-vl", "gptq-int4", root / "gptq_ref", seed=5, dequantized=True
        ),
    }


def _run(args: list[str], out: Path) -> dict:
    return run_json_script(SCRIPT, args, out)


def _check(result: dict) -> None:
    assert result["pass"], json.dumps(result, indent=2)
    for req in result["requests"]:
        if req["images"]:
            # the image features move logprobs far more than the vLLM-vs-reference error does
            assert req["image_effect_max_abs"] > 10 * req["prompt_logprob_max_abs"], req


def test_bf16_matches_reference(ckpts: dict[str, Path], tmp_path: Path) -> None:
    _check(_run(["--ckpt", str(ckpts["bf16"])], tmp_path / "bf16.json"))


def test_gptq_int4_matches_dequantized_reference(ckpts: dict[str, Path], tmp_path: Path) -> None:
    args = ["--ckpt", str(ckpts["gptq"]), "--ref-ckpt", str(ckpts["gptq_ref"]), "--eager"]
    _check(_run(args, tmp_path / "gptq.json"))


def test_decode_past_seq_length_matches_reference(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """seq_length 32, a ~25-token prompt, 64 decode steps: logn scaling on, through compile + CUDA graphs."""
    ckpt = tmp_path / "short"
    shutil.copytree(ckpts["bf16"], ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(config | {"seq_length": 32}))
    args = ["--ckpt", str(ckpt), "--text-only", "--decode-steps", "64", "--max-model-len", "256"]
    result = _run(args, tmp_path / "long.json")
    _check(result)
    (req,) = result["requests"]
    assert req["prompt_tokens"] < 32 < req["prompt_tokens"] + 64

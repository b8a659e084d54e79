"""GPU: the checkpoint writer quantizes and packs on CUDA to the same bytes as on the CPU.

Run on the GPU machine: `python -m pytest tests/gpu/test_writer_gpu.py -q`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl_vllm.checkpoint import write_checkpoint

pytestmark = pytest.mark.gpu


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    merged: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob("model*.safetensors")):
        merged.update(load_file(shard))
    return merged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "model,quant,dequantized",
    [
        ("tiny-qwen2-vl", "gptq-int4", False),
        ("tiny-qwen2-vl", "gptq-int8", False),
        ("tiny-qwen2-vl", "awq", False),
        ("tiny-qwen2-vl", "gptq-int4", True),
        ("tiny-qwen-vl", "gptq-int4", False),
    ],
)
def test_cuda_writer_writes_the_cpu_bytes(model: str, quant: str, dequantized: bool, tmp_path: Path) -> None:
    kwargs = {"model": model, "quant": quant, "seed": 5, "dequantized": dequantized}
    on_cpu = _tensors(write_checkpoint(out=tmp_path / "cpu", device="cpu", **kwargs))
    on_gpu = _tensors(write_checkpoint(out=tmp_path / "gpu", device="cuda", **kwargs))
    assert on_cpu.keys() == on_gpu.keys()
    for name, tensor in on_cpu.items():
        assert tensor.dtype == on_gpu[name].dtype, name
        assert torch.equal(tensor.view(torch.uint8), on_gpu[name].view(torch.uint8)), name

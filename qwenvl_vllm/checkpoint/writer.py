"""write_checkpoint: a released-looking Qwen2-VL / Qwen-VL checkpoint directory with random weights.

Weights are produced and written one safetensors shard at a time (never the whole model in memory), the
tensors of a shard drawn in parallel threads (each from its own seeded generator, so order is irrelevant).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import configs, tokenizer, weights
from . import quant as quantization

QUANTS = ("bf16", "gptq-int4", "gptq-int8", "awq")
QWEN_VL_QUANTS = ("bf16", "gptq-int4")
NAME_SCHEMES = ("default", "legacy")
DEFAULT_MAX_SHARD_BYTES = 4 * 10**9  # the releases use ~4 GB shards
_ROW_CHUNK_ELEMS = 1 << 24  # quantize large linears a block of output rows at a time


@dataclass(frozen=True)
class _Unit:
    """One source tensor and the checkpoint tensors it becomes (a packed linear becomes several)."""

    spec: weights.TensorSpec
    outputs: dict[str, tuple[tuple[int, ...], torch.dtype]]  # checkpoint name -> (shape, dtype)

    @property
    def nbytes(self) -> int:
        return sum(math.prod(shape) * dtype.itemsize for shape, dtype in self.outputs.values())


def _validate(model: str, quant_name: str, dequantized: bool, name_scheme: str) -> None:
    if model not in configs.MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(configs.MODELS)}")
    if quant_name not in QUANTS:
        raise ValueError(f"unknown quant {quant_name!r}; choose one of {', '.join(QUANTS)}")
    if model in configs.QWEN_VL_MODELS and quant_name not in QWEN_VL_QUANTS:
        raise ValueError(f"{model} is released as bf16 or gptq-int4 only, not {quant_name!r}")
    if dequantized and quant_name == "bf16":
        raise ValueError("dequantized=True needs a quantized variant (gptq-int4, gptq-int8 or awq)")
    if name_scheme not in NAME_SCHEMES:
        raise ValueError(f"unknown name_scheme {name_scheme!r}; choose one of {', '.join(NAME_SCHEMES)}")
    if name_scheme == "legacy" and model in configs.QWEN_VL_MODELS:
        raise ValueError("name_scheme='legacy' applies to Qwen2-VL only (Qwen-VL has a single naming)")


def _renamer(model: str, name_scheme: str) -> Callable[[str], str]:
    if model in configs.QWEN_VL_MODELS or name_scheme == "default":
        return lambda name: name

    def legacy(name: str) -> str:  # transformers < 4.52 checkpoints: visual.*, model.*
        if name.startswith("model.visual."):
            return name[len("model.") :]
        if name.startswith("model.language_model."):
            return "model." + name[len("model.language_model.") :]
        return name

    return legacy


def _plan(
    specs: list[weights.TensorSpec],
    scheme: quantization.QuantScheme | None,
    rename: Callable[[str], str],
    dtype: torch.dtype,
) -> list[_Unit]:
    units = []
    for spec in specs:
        name = rename(spec.name)
        if scheme is not None and spec.quantizable:
            prefix = name.removesuffix(".weight")
            shapes = quantization.packed_shapes(spec.shape[0], spec.shape[1], scheme)
            units.append(_Unit(spec, {f"{prefix}.{k}": v for k, v in shapes.items()}))
        else:
            units.append(_Unit(spec, {name: (spec.shape, dtype)}))
    return units


def _shards(units: list[_Unit], max_bytes: int) -> list[list[_Unit]]:
    shards: list[list[_Unit]] = [[]]
    size = 0
    for unit in units:
        if shards[-1] and size + unit.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(unit)
        size += unit.nbytes
    return shards


def _row_blocks(w: torch.Tensor, multiple: int) -> Iterator[torch.Tensor]:
    rows = max(multiple, (_ROW_CHUNK_ELEMS // w.shape[1]) // multiple * multiple)
    for start in range(0, w.shape[0], rows):
        yield w[start : start + rows]


def _packed(w: torch.Tensor, scheme: quantization.QuantScheme, names: list[str]) -> dict[str, torch.Tensor]:
    parts = [
        quantization.pack(quantization.quantize(block, scheme), scheme)
        for block in _row_blocks(w, scheme.pack)
    ]
    merged = {key: torch.cat([p[key] for p in parts], dim=1) for key in parts[0] if key != "g_idx"}
    if "g_idx" in parts[0]:
        merged["g_idx"] = parts[0]["g_idx"]
    return {name: merged[name.rsplit(".", 1)[1]] for name in names}


def _dequantized(w: torch.Tensor, scheme: quantization.QuantScheme) -> torch.Tensor:
    blocks = [
        quantization.dequantize(quantization.quantize(b, scheme), scheme.group_size)
        for b in _row_blocks(w, scheme.pack)
    ]
    return torch.cat(blocks, dim=0).to(torch.bfloat16)


def _materialize(
    unit: _Unit, seed: int, scheme: quantization.QuantScheme | None, dequant: bool, device: str
) -> dict:
    value = weights.generate(unit.spec, seed)  # always on the CPU: the same values on every machine
    names = list(unit.outputs)
    if scheme is not None and unit.spec.quantizable:
        value = value.to(device)  # quantizing is exact elementwise math: identical bytes on any device
        out = {names[0]: _dequantized(value, scheme)} if dequant else _packed(value, scheme, names)
        return {name: tensor.cpu() for name, tensor in out.items()}
    _, dtype = unit.outputs[names[0]]
    return {names[0]: value.to(dtype)}


def _write_weights(
    out: Path,
    units: list[_Unit],
    seed: int,
    scheme: quantization.QuantScheme | None,
    dequant: bool,
    max_bytes: int,
    device: str,
) -> None:
    for stale in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    shards = _shards(units, max_bytes)
    n = len(shards)
    weight_map: dict[str, str] = {}
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, shard in enumerate(shards):
            fname = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            tensors: dict[str, torch.Tensor] = {}
            for part in pool.map(lambda u: _materialize(u, seed, scheme, dequant, device), shard):
                tensors.update(part)
            save_file(tensors, str(out / fname), metadata={"format": "pt"})
            (out / fname).chmod(0o644)  # save_file creates 0600 files; checkpoints are shared read-only
            weight_map.update(dict.fromkeys(tensors, fname))
            del tensors
    if n > 1:
        index = {
            "metadata": {"total_size": sum(u.nbytes for u in units)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        _dump(out / "model.safetensors.index.json", index)


def _dump(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_configs(
    out: Path, model: str, scheme: quantization.QuantScheme | None, quantized_sizes: bool
) -> None:
    torch_dtype = "bfloat16" if scheme is None else "float16"  # the GPTQ/AWQ releases are fp16
    if model in configs.QWEN2_VL_MODELS:
        config = configs.qwen2_vl_config(model, torch_dtype, quantized_sizes)
        generation = configs.qwen2_vl_generation_config()
        _dump(out / "preprocessor_config.json", configs.qwen2_vl_preprocessor_config())
    else:
        config = configs.qwen_vl_config(model, torch_dtype)
        generation = configs.qwen_vl_generation_config(model)
    if scheme is not None:
        config["quantization_config"] = quantization.quantization_config(scheme)
    _dump(out / "generation_config.json", generation)
    _dump(out / "config.tmp", config)
    (out / "config.tmp").rename(out / "config.json")


def write_checkpoint(
    model: str,
    quant: str,
    out: str | os.PathLike,
    seed: int = 0,
    dequantized: bool = False,
    *,
    name_scheme: str = "default",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    device: str = "cpu",
) -> Path:
    """Write a checkpoint dir for `model` in variant `quant`; returns its path.

    dequantized=True writes a bf16 checkpoint whose LLM linears hold exactly the dequantized weights of
    the `quant` variant of the same seed (the reference for quantized-kernel parity); every other tensor
    is identical across variants of one seed. name_scheme="legacy" uses the pre-4.52 transformers names
    (visual.*, model.*) for Qwen2-VL. device="cuda" quantizes and packs on the GPU (weights are always
    drawn on the CPU), which makes 72B quantized checkpoints practical; the files are the same bytes.
    """
    _validate(model, quant, dequantized, name_scheme)
    if device != "cpu" and not (device.startswith("cuda") and torch.cuda.is_available()):
        raise ValueError(f"device must be 'cpu' or an available CUDA device, got {device!r}")
    if max_shard_bytes <= 0:
        raise ValueError("max_shard_bytes must be positive")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").unlink(missing_ok=True)  # written last: marks a complete directory
    scheme = None if quant == "bf16" else quantization.SCHEMES[quant]
    written_scheme = None if dequantized else scheme
    if model in configs.QWEN2_VL_MODELS:
        tokenizer.write_qwen2_tokenizer(out_dir)
        specs = weights.qwen2_vl_specs(model, scheme is not None)
    else:
        tokenizer.write_qwen_vl_tokenizer(out_dir)
        specs = weights.qwen_vl_specs(model)
    dtype = torch.bfloat16 if written_scheme is None else torch.float16
    units = _plan(specs, written_scheme, _renamer(model, name_scheme), dtype)
    _write_weights(out_dir, units, seed, scheme, dequantized, max_shard_bytes, device)
    # config.json last (atomically): its presence means the directory is complete.
    # a dequantized twin keeps its quantized variant's (padded) sizes
    _write_configs(out_dir, model, written_scheme, scheme is not None)
    return out_dir

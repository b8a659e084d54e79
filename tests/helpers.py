"""Shared test support (imported by test modules instead of importing each other).

- `vllm_env`: one way to stand up vLLM's config and distributed state for tests that build vLLM layers.
- `RELEASED_CONFIG` / `RELEASED_TOKENIZER_CONFIG`: Qwen-VL-Chat's published config.json and
  tokenizer_config.json, for released-layout checkpoint directories.
- `scheduler_for` / `image_request`: vLLM's real scheduler (or ours) on CPU, and one-image requests for it.
- `run_json_script`: a scripts/gpu script in a fresh interpreter, its --out JSON back (GPU tests).
- `cuda_tower`: a 4-block Qwen2-VL tower of the 2B's widths on CUDA (GPU tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vllm_env(device: str = "cpu", world_size: int = 1, rank: int = 0, port: int | None = None) -> Iterator:
    """A current VllmConfig on `device` with tensor parallelism over `world_size` ranks (gloo on CPU).

    On CPU, custom ops are off so vLLM's layers take their native torch paths. Distributed state is set
    up once per process; later calls reuse it.
    """
    from vllm.config import (
        CompilationConfig,
        CompilationMode,
        DeviceConfig,
        VllmConfig,
        set_current_vllm_config,
    )
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.distributed.parallel_state import model_parallel_is_initialized

    custom_ops = ["none"] if device == "cpu" else []
    cfg = VllmConfig(
        device_config=DeviceConfig(device=device),
        compilation_config=CompilationConfig(mode=CompilationMode.NONE, custom_ops=custom_ops),
    )
    with set_current_vllm_config(cfg):
        if not model_parallel_is_initialized():
            init_distributed_environment(
                world_size=world_size,
                rank=rank,
                local_rank=rank,
                distributed_init_method=f"tcp://127.0.0.1:{port or free_port()}",
                backend="gloo" if device == "cpu" else "nccl",
            )
            initialize_model_parallel(world_size, 1)
        yield cfg


# Qwen-VL-Chat as published (config.json / tokenizer_config.json of the release, remote-code auto_map).
# A Qwen2-VL vision tower small enough for CPU tests (transformers' Qwen2VLVisionConfig fields)
TINY_VISION = dict(
    depth=2,
    embed_dim=32,
    num_heads=2,  # head_dim 16
    mlp_ratio=4,
    hidden_size=64,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    in_channels=3,
    hidden_act="quick_gelu",
)

RELEASED_CONFIG = {
    "architectures": ["QWenLMHeadModel"],
    "auto_map": {
        "AutoConfig": "configuration_qwen.QWenConfig",
        "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
    },
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "kv_channels": 128,
    "layer_norm_epsilon": 1e-06,
    "max_position_embeddings": 8192,
    "model_type": "qwen",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "rotary_emb_base": 10000,
    "rotary_pct": 1.0,
    "seq_length": 2048,
    "tie_word_embeddings": False,
    "tokenizer_type": "QWenTokenizer",
    "torch_dtype": "bfloat16",
    "use_dynamic_ntk": True,
    "use_logn_attn": True,
    "visual": {
        "heads": 16,
        "image_size": 448,
        "image_start_id": 151857,
        "layers": 48,
        "mlp_ratio": 4.9231,
        "output_dim": 4096,
        "patch_size": 14,
        "width": 1664,
    },
    "vocab_size": 151936,
}
RELEASED_TOKENIZER_CONFIG = {
    "model_max_length": 8192,
    "tokenizer_class": "QWenTokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
}


def scheduler_for(
    ckpt: str,
    cls: type,
    batched_tokens: int,
    num_blocks: int = 4096,
    scheduled_tokens: int | None = None,
    max_num_seqs: int = 64,
):
    """vLLM's scheduler class `cls` (or a subclass of ours) for a checkpoint, on CPU, with a KV pool;
    `scheduled_tokens`: vLLM's `--max-num-scheduled-tokens` (the step's token cap alone)."""
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    model = ModelConfig(model=ckpt, max_model_len=4096, limit_mm_per_prompt={"image": 1, "video": 0})
    sched = SchedulerConfig(
        max_num_batched_tokens=batched_tokens,
        max_num_scheduled_tokens=scheduled_tokens,
        max_num_seqs=max_num_seqs,
        max_model_len=4096,
        is_encoder_decoder=False,
    )
    config = VllmConfig(
        model_config=model,
        scheduler_config=sched,
        cache_config=CacheConfig(block_size=16, enable_prefix_caching=False),
        device_config=DeviceConfig(device="cpu"),
    )
    config.cache_config.num_gpu_blocks = num_blocks  # set by the engine after profiling
    spec = FullAttentionSpec(block_size=16, num_kv_heads=1, head_size=16, dtype=torch.float32)
    groups = [KVCacheGroupSpec(["l0"], spec)]
    kv = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=groups)
    assert issubclass(cls, Scheduler)
    return cls(
        vllm_config=config,
        kv_cache_config=kv,
        structured_output_manager=StructuredOutputManager(config),
        block_size=16,
    )


def config_stub(scheduler_cls: str | None, **fields: object):
    """What our models read of vLLM's config to choose a side stream or a tower slicer, on CPU."""
    from types import SimpleNamespace

    return SimpleNamespace(
        scheduler_config=SimpleNamespace(scheduler_cls=scheduler_cls),
        device_config=SimpleNamespace(device="cpu"),
        **fields,
    )


def image_request(
    i: int, image_tokens: int, prompt: int, offset: int = 10, max_tokens: int = 4, modality: str = "image"
):
    """A one-image request r{i} whose image placeholder starts at `offset` (or another item's)."""
    from vllm import SamplingParams
    from vllm.multimodal.inputs import MultiModalFeatureSpec, PlaceholderRange
    from vllm.v1.request import Request

    feature = MultiModalFeatureSpec(
        data=None,
        modality=modality,
        identifier=f"{modality}-{i}",
        mm_position=PlaceholderRange(offset=offset, length=image_tokens),
        mm_hash=f"{modality}-{i}",
    )
    return Request(
        request_id=f"r{i}",
        prompt_token_ids=[1] * prompt,
        sampling_params=SamplingParams(max_tokens=max_tokens, ignore_eos=True),
        pooling_params=None,
        mm_features=[feature],
    )


REPO = Path(__file__).resolve().parents[1]


def run_json_script(script: Path, args: list[str], out: Path, **env: str) -> dict:
    """Runs `script args --out out` from the repo root in a fresh interpreter (no CUDA state in the test
    process); returns the JSON it wrote, or fails the test with the ends of its output."""
    import pytest

    proc = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(out)],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if not out.exists():
        pytest.fail(
            f"{script.name} failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return json.loads(out.read_text())


def finish_step(scheduler, out, prompt: int) -> list[str]:
    """Feed `out` back to the scheduler as a model run would: one sampled token for every request whose
    prompt (`prompt` tokens) is computed, none for prefill chunks. Returns the requests that got a token."""
    from vllm.v1.outputs import ModelRunnerOutput

    ids = list(out.num_scheduled_tokens)
    runner = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)})
    prefilled = [scheduler.requests[r].num_computed_tokens >= prompt for r in ids]
    runner.sampled_token_ids = [[7] if done else [] for done in prefilled]
    scheduler.update_from_output(out, runner)
    return [r for r, done in zip(ids, prefilled, strict=True) if done]


def cuda_tower(**kwargs):
    """A 4-block tower of Qwen2-VL-2B widths on CUDA in bf16, random O(1)-activation weights (seed 0)."""
    import torch
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from vllm.utils.torch_utils import set_default_torch_dtype

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower, hf_weight_shapes

    cfg = Qwen2VLVisionConfig(depth=4, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)
    gen = torch.Generator().manual_seed(0)
    weights = [(k, torch.randn(s, generator=gen) * (s[-1] ** -0.5 if len(s) > 1 else 0.1)) for k, s in
               hf_weight_shapes(cfg).items()]  # fmt: skip
    with set_default_torch_dtype(torch.bfloat16), torch.device("cuda"):
        tower = Qwen2VisionTower(cfg, prefix="visual", **kwargs)
    tower.load_weights(iter(weights))
    return tower

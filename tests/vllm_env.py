"""One way to stand up vLLM's config and distributed state for tests that build vLLM layers directly."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


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

"""Shared fixtures: a CPU-only vLLM context so vLLM's layers can be built and run without CUDA."""

from __future__ import annotations

import os

import pytest
import torch

# qwen-vl-utils picks its video reader at import time; parity is defined against its decord path.
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_plugin_scheduler_choice(monkeypatch):
    """A shell's QWENVL_VLLM_SCHEDULER would change every engine config the tests build."""
    monkeypatch.delenv("QWENVL_VLLM_SCHEDULER", raising=False)


@pytest.fixture(scope="session")
def vllm_cpu():
    """A VllmConfig on CPU with distributed state (world size 1) initialised once per test session."""
    from helpers import vllm_env

    with vllm_env("cpu") as cfg:
        yield cfg


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """A tiny Qwen2-VL bf16 checkpoint from our writer, with the plugin registered (so vLLM builds our
    class and processor for it); modules that need another checkpoint define their own `ckpt`."""
    from qwenvl_vllm.checkpoint.writer import write_checkpoint
    from qwenvl_vllm.model_registry import register

    register()
    return str(write_checkpoint("tiny-qwen2-vl", "bf16", tmp_path_factory.mktemp("tiny-qwen2-vl")))


@pytest.fixture
def cpu_pixels(monkeypatch):
    """The processors' CPU pixel path (patch rows from the API server), which these tests hold against
    qwen-vl-utils / transformers / the release; the default device path is checked against it."""
    monkeypatch.setenv("QWENVL_VLLM_DEVICE_PIXELS", "0")


@pytest.fixture
def http_server(tmp_path):
    """Serves files from tmp_path on 127.0.0.1; returns a function that publishes an image or bytes."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    counter = iter(range(10**6))

    def publish(content, fmt: str = "PNG") -> str:
        name = f"media{next(counter)}.{fmt.lower()}"
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            content.save(tmp_path / name, format=fmt)
        return f"http://127.0.0.1:{server.server_address[1]}/{name}"

    yield publish
    server.shutdown()


CPU_ATTENTION = "vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend"


@pytest.fixture
def build(vllm_cpu, monkeypatch):
    """build(ckpt, dtype="float32", **ModelConfig fields) -> our Qwen2-VL model on CPU.

    vLLM's paged Attention has no CPU backend in the CUDA wheel ("Invalid attention backend for None"), so
    the platform is told to hand out vLLM's CPU attention backend class: enough to construct the language
    model (its attention is never run on CPU); the vision tower runs.
    """
    from vllm.config import CompilationConfig, CompilationMode, VllmConfig, set_current_vllm_config
    from vllm.config.model import ModelConfig
    from vllm.platforms import current_platform
    from vllm.v1.attention import selector

    from qwenvl_vllm.models.qwen2_vl import Qwen2VLForConditionalGeneration

    monkeypatch.setattr(
        type(current_platform), "get_attn_backend_cls", classmethod(lambda *a, **k: CPU_ATTENTION)
    )

    def _build(ckpt: str, dtype: str = "float32", **model_config_kwargs):
        model_config = ModelConfig(model=ckpt, dtype=dtype, max_model_len=1024, **model_config_kwargs)
        cfg = VllmConfig(
            model_config=model_config,
            device_config=vllm_cpu.device_config,
            # a fresh one per model: it records layer names and refuses duplicates
            compilation_config=CompilationConfig(mode=CompilationMode.NONE, custom_ops=["none"]),
        )
        with set_current_vllm_config(cfg):
            return Qwen2VLForConditionalGeneration(vllm_config=cfg).eval()

    yield _build
    selector._cached_get_attn_backend.cache_clear()  # forget the CPU backend picked under the patch

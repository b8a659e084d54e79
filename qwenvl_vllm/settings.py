"""Every plugin setting in one place; read from the environment when asked, never cached."""

from __future__ import annotations

import os
from dataclasses import dataclass

DISABLE_ENV = "QWENVL_VLLM_DISABLE"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    # Turns the whole plugin off so in-tree vLLM serves the same architectures.
    disabled: bool
    # Media fetching limits (URLs and files), mirroring vLLM's media connector rules.
    fetch_timeout_s: float
    max_media_bytes: int
    # Decompression-bomb guard: images with more pixels than this are refused before decoding.
    max_image_pixels: int
    # None: local paths allowed as in qwen-vl-utils (offline use); else only files under this folder.
    allowed_local_media_path: str | None
    # qwen-vl-utils' MODEL_SEQ_LEN: the default total_pixels budget of a video is 90% of it in tokens.
    model_seq_len: int


def get_settings() -> Settings:
    return Settings(
        disabled=os.environ.get(DISABLE_ENV, "0").lower() in ("1", "true", "yes"),
        fetch_timeout_s=_env_float("QWENVL_VLLM_FETCH_TIMEOUT", 10.0),
        max_media_bytes=_env_int("QWENVL_VLLM_MAX_MEDIA_BYTES", 512 * 1024 * 1024),
        max_image_pixels=_env_int("QWENVL_VLLM_MAX_IMAGE_PIXELS", 178_956_970),
        allowed_local_media_path=os.environ.get("QWENVL_VLLM_ALLOWED_LOCAL_MEDIA_PATH") or None,
        model_seq_len=int(_env_float("MODEL_SEQ_LEN", 128000)),  # qwen-vl-utils reads it as a float
    )

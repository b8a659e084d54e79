"""Qwen-VL v1 tokenizer and config without remote code (see registration.py for how loading works)."""

from __future__ import annotations

from typing import Any

from qwenvl_vllm.tokenizers.registration import register_qwen_vl

__all__ = ["QWenConfig", "QWenTokenizer", "find_qwen_tiktoken", "register_qwen_vl"]

# Heavy classes load on first use so that importing this package (e.g. from the plugin hook) stays cheap.
_LAZY = {
    "QWenConfig": "qwenvl_vllm.tokenizers.qwen_config",
    "QWenTokenizer": "qwenvl_vllm.tokenizers.qwen_vl",
    "find_qwen_tiktoken": "qwenvl_vllm.tokenizers.bpe",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Make released Qwen-VL v1 checkpoint directories load in transformers / vLLM without trust_remote_code.

Such a directory has config.json with model_type "qwen" and auto_map pointing at remote code, and
tokenizer_config.json naming "QWenTokenizer" with an auto_map, but no tokenizer.json. With trust_remote_code
off, vLLM's config loading (`AutoConfig.from_pretrained`) raises for an unknown model_type that carries
remote code, and `AutoTokenizer` does the same for the tokenizer. transformers skips remote code when a
local class is registered:
- `AutoConfig.register("qwen", QWenConfig)` makes the model_type local (has_local_code), so the config
  loads as our `QWenConfig`;
- `AutoTokenizer.register(QWenConfig, tokenizer_class=QWenTokenizer)` maps that config type to our fast
  tokenizer and records the class under the name "QWenTokenizer", which tokenizer_config.json names.
Both are process-global, so this must run in every vLLM process before the model config is built: vLLM's
general-plugin hook (qwenvl_vllm.model_registry:register) does that.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qwenvl_vllm.log import logger
from qwenvl_vllm.tokenizers.constants import chat_template_path

_registered = False


def register_qwen_vl() -> None:
    """Register QWenConfig / QWenTokenizer with transformers' Auto classes and our chat template as vLLM's
    fallback for model_type "qwen". Idempotent; costs two imports the first time."""
    global _registered
    if not _registered:
        from transformers import AutoConfig, AutoTokenizer

        from qwenvl_vllm.tokenizers.qwen_config import QWenConfig
        from qwenvl_vllm.tokenizers.qwen_vl import QWenTokenizer

        AutoConfig.register(QWenConfig.model_type, QWenConfig, exist_ok=True)
        AutoTokenizer.register(QWenConfig, tokenizer_class=QWenTokenizer, exist_ok=True)
        _registered = True
        logger.debug("qwenvl-vllm: registered QWenConfig / QWenTokenizer for model_type 'qwen'")
    _register_chat_template_fallback()  # every call: vLLM may have been imported since the first one


def _register_chat_template_fallback() -> None:
    # Only consulted when a tokenizer has no chat_template; ours always has one, so this is a safety net.
    # Skipped outside vLLM processes: importing vllm just for this would cost seconds.
    if "vllm" not in sys.modules:
        return
    try:
        from vllm.transformers_utils.chat_templates.registry import (
            _MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK,
            register_chat_template_fallback_path,
        )
    except ImportError:  # transformers-only use, without vLLM
        return
    if "qwen" not in _MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK:
        register_chat_template_fallback_path("qwen", Path(chat_template_path()))

"""Qwen-VL v1 tokenizer files: the BPE file name, the default system prompt and the shipped chat template.

Kept free of heavy imports so that prompt-building code can use it without loading a tokenizer. Token ids
live in qwenvl_vllm.constants.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

TIKTOKEN_FILE = "qwen.tiktoken"

DEFAULT_SYSTEM = "You are a helpful assistant."
CHAT_TEMPLATE_FILE = "qwen_vl_chat.jinja"


@lru_cache(maxsize=1)
def load_chat_template() -> str:
    """The ChatML + `Picture N: <img></img>` template shipped in qwenvl_vllm/templates."""
    return (resources.files("qwenvl_vllm") / "templates" / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")


def chat_template_path() -> str:
    """Filesystem path of the template, for `vllm serve --chat-template PATH`."""
    return str(resources.files("qwenvl_vllm") / "templates" / CHAT_TEMPLATE_FILE)

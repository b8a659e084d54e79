"""Qwen-VL v1 tokenizer facts: special tokens, their ids, the pre-tokenizer regex and the chat template.

Kept free of heavy imports so that prompt-building code can use it without loading a tokenizer.
Ids follow the released tokenization_qwen.py: 151643 BPE ranks from qwen.tiktoken, then the 208 chat
specials, then the 9 vision-language tags.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

TIKTOKEN_FILE = "qwen.tiktoken"
NUM_BPE_TOKENS = 151643

# Pre-tokenizer split of the released v1 tokenizer (PAT_STR in tokenization_qwen.py): single digits (\p{N}),
# unlike the {1,3} digit groups of transformers' TikTokenConverter default. Qwen2 uses the same regex.
PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(205))
CHAT_SPECIALS = (ENDOFTEXT, IM_START, IM_END, *EXTRAS)

REF_START, REF_END = "<ref>", "</ref>"
BOX_START, BOX_END = "<box>", "</box>"
QUAD_START, QUAD_END = "<quad>", "</quad>"
IMG_START, IMG_END, IMG_PAD = "<img>", "</img>", "<imgpad>"
# Order fixes the ids (151851..151859); the released tokenizer calls these IMAGE_ST.
VL_TAGS = (REF_START, REF_END, BOX_START, BOX_END, QUAD_START, QUAD_END, IMG_START, IMG_END, IMG_PAD)

SPECIAL_TOKEN_IDS: dict[str, int] = {tok: NUM_BPE_TOKENS + i for i, tok in enumerate(CHAT_SPECIALS + VL_TAGS)}
ENDOFTEXT_ID = SPECIAL_TOKEN_IDS[ENDOFTEXT]  # 151643
IM_START_ID = SPECIAL_TOKEN_IDS[IM_START]  # 151644
IM_END_ID = SPECIAL_TOKEN_IDS[IM_END]  # 151645
IMG_START_ID = SPECIAL_TOKEN_IDS[IMG_START]  # 151857
IMG_END_ID = SPECIAL_TOKEN_IDS[IMG_END]  # 151858
IMG_PAD_ID = SPECIAL_TOKEN_IDS[IMG_PAD]  # 151859

# Each image occupies <img> + 256 positions + </img>; the model overwrites the 256 with resampler outputs.
IMG_TOKEN_SPAN = 256

DEFAULT_SYSTEM = "You are a helpful assistant."
CHAT_TEMPLATE_FILE = "qwen_vl_chat.jinja"


@lru_cache(maxsize=1)
def load_chat_template() -> str:
    """The ChatML + `Picture N: <img></img>` template shipped in qwenvl_vllm/templates."""
    return (resources.files("qwenvl_vllm") / "templates" / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")


def chat_template_path() -> str:
    """Filesystem path of the template, for `vllm serve --chat-template PATH`."""
    return str(resources.files("qwenvl_vllm") / "templates" / CHAT_TEMPLATE_FILE)

"""The real Qwen tokenizers, rebuilt offline from `qwen.tiktoken` (no hub needed).

Qwen2-VL: a byte-level BPE `tokenizer.json` (+ vocab.json / merges.txt) that encodes like the released one
(tokenizers/bpe.py: the same ranks, split regex and specials; merges.txt lists every split of each token,
a superset of the released one-merge-per-token list, which makes it agree with tiktoken by construction).
Qwen-VL v1: the released layout, i.e. the `qwen.tiktoken` file itself plus a tokenizer_config.json that
points at the remote-code `QWenTokenizer` (we ship no remote code).
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken

from qwenvl_vllm.constants import NUM_BPE_TOKENS, QWEN2_SPECIAL_TOKENS
from qwenvl_vllm.tokenizers.bpe import byte_level_bpe, find_qwen_tiktoken, qwen_vocab_and_merges

QWEN_VL_TOKENIZER_CONFIG = {
    "model_max_length": 8192,
    "tokenizer_class": "QWenTokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
}


@lru_cache(maxsize=1)
def qwen2_tokenizer_json() -> str:
    """The Qwen2 `tokenizer.json` text: NFC, regex split, byte-level BPE, specials at 151643.."""
    specials = [AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIAL_TOKENS]
    return byte_level_bpe(find_qwen_tiktoken(), specials).to_str(pretty=False)


def qwen2_chat_template() -> str:
    text = (
        resources.files("qwenvl_vllm").joinpath("templates/qwen2_vl_chat.jinja").read_text(encoding="utf-8")
    )
    return text.removesuffix("\n")  # the released template has no trailing newline


def qwen2_tokenizer_config() -> dict:
    added = {
        str(NUM_BPE_TOKENS + i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(QWEN2_SPECIAL_TOKENS)
    }
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": list(QWEN2_SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "chat_template": qwen2_chat_template(),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _dump(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_qwen2_tokenizer(out: Path) -> None:
    """tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, chat_template.json (as released)."""
    vocab, merges = qwen_vocab_and_merges(find_qwen_tiktoken())
    (out / "tokenizer.json").write_text(qwen2_tokenizer_json(), encoding="utf-8")
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (out / "merges.txt").write_text(merges_text, encoding="utf-8")
    _dump(out / "tokenizer_config.json", qwen2_tokenizer_config())
    _dump(out / "chat_template.json", {"chat_template": qwen2_chat_template()})


def write_qwen_vl_tokenizer(out: Path) -> None:
    """qwen.tiktoken (copied) and the released tokenizer_config.json with its remote-code auto_map."""
    shutil.copyfile(find_qwen_tiktoken(), out / "qwen.tiktoken")
    _dump(out / "tokenizer_config.json", QWEN_VL_TOKENIZER_CONFIG)

"""Qwen-VL v1 tokenizer without remote code: a transformers fast tokenizer built from qwen.tiktoken.

The released checkpoints ship only `qwen.tiktoken` (base64 token, rank per line) plus remote code
(tokenization_qwen.QWenTokenizer on top of tiktoken). This module rebuilds the same byte-level BPE as a
`tokenizers.Tokenizer` in memory: NFC normaliser (the original NFC-normalises before encoding), the v1
split regex, ByteLevel bytes-to-unicode mapping, vocab and merges derived from the ranks, and the 217
added tokens at their released ids. `QWenTokenizer` wraps it as a `TokenizersBackend` that
`AutoTokenizer` finds by the class name in tokenizer_config.json once `register_qwen_vl()` has run.

Differences from the original, on purpose:
- `<img>PATH</img>`: the original rewrites the path into 256 byte-valued ids padded with <imgpad>, and its
  model loads the image from those ids. For vLLM the path is plain text inside the tags; the multimodal
  processor drops it and expands each `<img></img>` to <img> + 256 <imgpad> + </img>.
  `encode_like_original()` reproduces the original ids for parity tests.
- Special-token strings in text: like the original's default (`allowed_special="all"`) they encode as
  specials. The original chat() encoded user turns allowing only the VL tags, so a user-typed
  "<|im_end|>" stayed text there; vLLM tokenises the rendered prompt as one string and cannot do that.
- `<ref> </ref> <box> </box> <quad> </quad> <img> </img> <imgpad>` are added tokens with special=False so
  grounding output (`<ref>x</ref><box>(x1,y1),(x2,y2)</box>`) survives vLLM's skip_special_tokens=True.
- eos_token is `<|im_end|>` (the chat turn end, which the original chat() stopped on); generation_config's
  eos 151643 (<|endoftext|>) stays a stop token in vLLM. pad_token is <|endoftext|>.
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from functools import lru_cache
from typing import Any

from tokenizers import AddedToken, Tokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from qwenvl_vllm.constants import (
    BOX_END,
    BOX_START,
    CHAT_SPECIALS,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMG_END,
    IMG_END_ID,
    IMG_PAD_ID,
    IMG_START,
    IMG_START_ID,
    IMG_TOKEN_SPAN,
    QUAD_END,
    QUAD_START,
    REF_END,
    REF_START,
    SPECIAL_TOKEN_IDS,
    VL_TAGS,
)
from qwenvl_vllm.processors.list_format import (
    draw_bbox_on_latest_picture,
    from_list_format,
    tag_runs,
    to_list_format,
)
from qwenvl_vllm.tokenizers.bpe import byte_level_bpe, find_qwen_tiktoken
from qwenvl_vllm.tokenizers.constants import TIKTOKEN_FILE, load_chat_template

__all__ = ["QWenTokenizer", "build_qwen_backend", "find_qwen_tiktoken"]


def _added_tokens() -> list[AddedToken]:
    # normalized=False: matched on the raw text, before NFC, as tiktoken matches specials.
    chat = [AddedToken(t, special=True, normalized=False) for t in CHAT_SPECIALS]
    tags = [AddedToken(t, special=False, normalized=False) for t in VL_TAGS]
    return chat + tags


@lru_cache(maxsize=4)
def _backend_json(path: str, size: int, mtime_ns: int) -> str:
    # Serialized once per file version: building takes seconds, re-parsing the JSON ~0.5 s
    # (cheaper than deep-copying a live Tokenizer).
    return byte_level_bpe(path, _added_tokens()).to_str()


def build_qwen_backend(path: str) -> Tokenizer:
    """A fresh backend `tokenizers.Tokenizer` for a qwen.tiktoken file (built once per file version)."""
    if not os.path.isfile(path):
        raise ValueError(f"qwen.tiktoken not found: {path}")
    real = os.path.realpath(path)
    st = os.stat(real)
    return Tokenizer.from_str(_backend_json(real, st.st_size, st.st_mtime_ns))


class QWenTokenizer(TokenizersBackend):
    """Fast Qwen(-VL) v1 tokenizer; named like the released class so tokenizer_config.json resolves to it."""

    vocab_files_names = {"vocab_file": TIKTOKEN_FILE, "tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]

    # tokenization_qwen.py attribute names, for code written against the remote tokenizer
    image_start_tag, image_end_tag, image_pad_tag = VL_TAGS[6], VL_TAGS[7], VL_TAGS[8]
    ref_start_tag, ref_end_tag, box_start_tag, box_end_tag = VL_TAGS[:4]
    quad_start_tag, quad_end_tag = VL_TAGS[4], VL_TAGS[5]
    IMAGE_ST = VL_TAGS
    special_tokens = dict(SPECIAL_TOKEN_IDS)
    eod_id = SPECIAL_TOKEN_IDS[ENDOFTEXT]
    im_start_id = SPECIAL_TOKEN_IDS[IM_START]
    im_end_id = SPECIAL_TOKEN_IDS[IM_END]
    img_start_id, img_end_id, img_pad_id = IMG_START_ID, IMG_END_ID, IMG_PAD_ID
    ref_start_id, ref_end_id = SPECIAL_TOKEN_IDS[REF_START], SPECIAL_TOKEN_IDS[REF_END]
    box_start_id, box_end_id = SPECIAL_TOKEN_IDS[BOX_START], SPECIAL_TOKEN_IDS[BOX_END]
    quad_start_id, quad_end_id = SPECIAL_TOKEN_IDS[QUAD_START], SPECIAL_TOKEN_IDS[QUAD_END]

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_object: Tokenizer | None = None,
        errors: str = "replace",
        **kwargs: Any,
    ) -> None:
        # The released tokenizer_config.json may carry the original's constructor arguments; the tags are
        # fixed by the checkpoint's ids, so they are accepted and ignored.
        for key in [k for k in kwargs if k.endswith("_tag")] + ["vocab", "merges", "auto_map"]:
            kwargs.pop(key, None)
        if tokenizer_object is None:
            if vocab_file is None:
                raise ValueError(f"QWenTokenizer needs {TIKTOKEN_FILE} (vocab_file) or a tokenizer_object")
            # set before the base __init__, which then uses it as is (a given tokenizer_object is deep-copied)
            self._tokenizer = build_qwen_backend(vocab_file)
        kwargs.setdefault("eos_token", IM_END)
        kwargs.setdefault("pad_token", ENDOFTEXT)
        kwargs.setdefault("bos_token", None)
        kwargs.setdefault("unk_token", None)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        # all_special_ids then lists every chat special (as Qwen2's additional_special_tokens do)
        kwargs.setdefault("extra_special_tokens", [t for t in CHAT_SPECIALS if t not in (ENDOFTEXT, IM_END)])
        if kwargs.get("chat_template") is None:
            kwargs["chat_template"] = load_chat_template()
        self.errors = errors
        if tokenizer_object is not None:
            kwargs["tokenizer_object"] = tokenizer_object
        super().__init__(vocab_file=vocab_file, **kwargs)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        # A saved tokenizer.json wins (it is what save_pretrained wrote); otherwise build from qwen.tiktoken.
        tokenizer_file = kwargs.pop("tokenizer_file", None)
        if tokenizer_file is not None and os.path.isfile(tokenizer_file):
            kwargs["tokenizer_object"] = Tokenizer.from_file(tokenizer_file)
        return kwargs

    @classmethod
    def from_tiktoken(cls, path: str | None = None, **kwargs: Any) -> QWenTokenizer:
        """Build directly from a qwen.tiktoken file (default: the copy in the dashscope wheel)."""
        return cls(vocab_file=path or find_qwen_tiktoken(), **kwargs)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        # Keep qwen.tiktoken next to tokenizer.json so the directory also loads with the original code.
        src = getattr(self, "vocab_file", None)
        if not src or not os.path.isfile(src):
            return ()
        dst = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + TIKTOKEN_FILE)
        if os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(src, dst)
        return (dst,)

    def encode_like_original(self, text: str) -> list[int]:
        """Ids exactly as the released `QWenTokenizer.encode(text)` gives them: all specials allowed, and
        each `<img>PATH</img>` rewritten as <img>, the UTF-8 bytes of PATH as ids 0..255, <imgpad> up to
        256 positions, </img>."""
        out: list[int] = []
        for tag, piece in tag_runs(unicodedata.normalize("NFC", text), {IMG_START: IMG_END}):
            if tag is None:
                out.extend(self._tokenizer.encode(piece, add_special_tokens=False).ids)
                continue
            path = piece.encode("utf-8")
            if len(path) > IMG_TOKEN_SPAN:
                raise ValueError(f"image path longer than {IMG_TOKEN_SPAN} bytes: {piece[:60]!r}...")
            out += [IMG_START_ID, *path, *([IMG_PAD_ID] * (IMG_TOKEN_SPAN - len(path))), IMG_END_ID]
        return out

    # The released tokenizer's list-format helpers (pure text, see qwenvl_vllm.processors.list_format).
    def from_list_format(self, list_format: list[dict[str, Any]]) -> str:
        return from_list_format(list_format)

    def to_list_format(self, text: str) -> list[dict[str, str]]:
        return to_list_format(text)

    def draw_bbox_on_latest_picture(self, response: str, history: list | None = None):
        return draw_bbox_on_latest_picture(response, history)

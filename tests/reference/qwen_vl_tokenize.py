"""The released Qwen-VL `QWenTokenizer.encode`, rebuilt on tiktoken (the reference for our tokenizer and
prompt builder): tiktoken ids of the NFC text, then each `<img>..</img>` span rewritten as the path's UTF-8
bytes (as ids 0..255) padded with `<imgpad>` to 256 positions. Written at token level, independently of the
tag scanner under test."""

from __future__ import annotations

import unicodedata

from qwenvl_vllm.constants import IMG_END_ID, IMG_PAD_ID, IMG_START_ID, IMG_TOKEN_SPAN


def released_encode(enc, text: str, allowed: set[str] | str = "all") -> list[int]:
    """`enc`: a tiktoken Encoding with Qwen-VL's ranks, regex and specials; `allowed`: allowed_special."""
    ids = enc.encode(unicodedata.normalize("NFC", text), allowed_special=allowed, disallowed_special=())
    out, i = [], 0
    while i < len(ids):
        if ids[i] != IMG_START_ID:
            out.append(ids[i])
            i += 1
            continue
        j = ids.index(IMG_END_ID, i)
        path = enc.decode_bytes(ids[i + 1 : j])
        out += [IMG_START_ID, *path, *[IMG_PAD_ID] * (IMG_TOKEN_SPAN - len(path)), IMG_END_ID]
        i = j + 1
    return out

"""Qwen-VL v1 tokenizer built from qwen.tiktoken, checked against tiktoken running the released recipe.

The reference is tiktoken itself with the released tokenization_qwen.py settings: the same qwen.tiktoken
(parsed by tiktoken's own loader, not ours), PAT_STR, the 217 specials from id 151643, NFC first.
"""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest
from helpers import RELEASED_CONFIG, RELEASED_TOKENIZER_CONFIG
from reference.qwen_vl_tokenize import released_encode

from qwenvl_vllm.constants import (
    CHAT_SPECIALS,
    IMG_END_ID,
    IMG_START_ID,
    SPECIAL_TOKEN_IDS,
    VL_TAGS,
)
from qwenvl_vllm.tokenizers.bpe import SPLIT_REGEX
from qwenvl_vllm.tokenizers.qwen_vl import QWenTokenizer, find_qwen_tiktoken

# ids as published with the Qwen-VL release (tokenization_qwen.py / config.json image_start_id)
RELEASED_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|extra_0|>": 151646,
    "<|extra_204|>": 151850,
    "<ref>": 151851,
    "</ref>": 151852,
    "<box>": 151853,
    "</box>": 151854,
    "<quad>": 151855,
    "</quad>": 151856,
    "<img>": 151857,
    "</img>": 151858,
    "<imgpad>": 151859,
}


@pytest.fixture(scope="module")
def tok() -> QWenTokenizer:
    return QWenTokenizer.from_tiktoken()


@pytest.fixture(scope="module")
def reference():
    """tiktoken Encoding built the way the released QWenTokenizer builds it."""
    import os

    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # tiktoken caches files by path; read this one fresh
    try:
        ranks = load_tiktoken_bpe(find_qwen_tiktoken())
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR")
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
    specials = {t: len(ranks) + i for i, t in enumerate(CHAT_SPECIALS + VL_TAGS)}
    return tiktoken.Encoding("Qwen", pat_str=SPLIT_REGEX, mergeable_ranks=ranks, special_tokens=specials)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A directory laid out like the released Qwen-VL-Chat (no weights, no remote code files)."""
    out = tmp_path_factory.mktemp("qwen_vl_ckpt")
    (out / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    (out / "tokenizer_config.json").write_text(json.dumps(RELEASED_TOKENIZER_CONFIG))
    (out / "qwen.tiktoken").symlink_to(find_qwen_tiktoken())
    return out


def _random_texts(n: int, seed: int = 0) -> list[str]:
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789٣٤५೬",  # ASCII and non-ASCII \p{N} digits
        " \n\t\r\u00a0\u3000",
        "!?.,;:'\"()[]{}<>|/\\-_=+*&^%$#@~`",
        "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面",
        "éàüñøçßÅ\u0301\u0308",  # precomposed and combining marks (NFC changes these)
        "😀🐶🚀👍🏽🇨🇳",
        "Привет мир שלום عالم",
    ]
    words = ["'s", "'ll", "'RE", " the", " Qwen", "\n\n", "   ", *RELEASED_IDS]
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.15:
                parts.append(rng.choice(words))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        texts.append("".join(parts))
    return texts


def test_special_token_ids(tok):
    assert len(SPECIAL_TOKEN_IDS) == 3 + 205 + 9
    for text, want in {**RELEASED_IDS, **SPECIAL_TOKEN_IDS}.items():
        assert tok.convert_tokens_to_ids(text) == want, text
        assert tok.encode(text) == [want], text
        assert tok.decode([want]) == text
    assert len(tok) == 151860
    assert (tok.img_start_id, tok.img_end_id, tok.img_pad_id) == (151857, 151858, 151859)
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643 and tok.bos_token_id is None


def test_known_ids(tok):
    assert tok.encode("Hello") == [9707]
    # v1 splits digits one by one (\p{N}); a {1,3} grouping would merge them
    assert tok.encode("12345") == [16, 17, 18, 19, 20]
    assert tok.encode("<img></img>") == [IMG_START_ID, IMG_END_ID]


def test_matches_tiktoken_on_random_text(tok, reference):
    for text in _random_texts(400):
        want = reference.encode(unicodedata.normalize("NFC", text), allowed_special="all")
        assert tok.encode(text) == want, repr(text)


def test_round_trip(tok):
    for text in _random_texts(200, seed=1):
        ids = tok.encode(text)
        assert tok.decode(ids) == unicodedata.normalize("NFC", text), repr(text)


def test_skip_special_tokens_keeps_grounding_tags(tok):
    text = "<ref>击掌</ref><box>(536,509),(588,602)</box><|im_end|><|endoftext|>"
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == "<ref>击掌</ref><box>(536,509),(588,602)</box>"
    assert set(tok.all_special_ids) == {SPECIAL_TOKEN_IDS[t] for t in CHAT_SPECIALS}


def test_encode_like_original(tok, reference):
    text = "Picture 1: <img>https://example.com/猫.jpg</img>\n这是什么?<img>/tmp/a b.png</img>12"
    assert tok.encode_like_original(text) == released_encode(reference, text)
    with pytest.raises(ValueError):
        tok.encode_like_original("<img>" + "x" * 257 + "</img>")
    with pytest.raises(ValueError):
        tok.encode_like_original("<img>no close")


def test_autotokenizer_loads_released_layout_without_remote_code(checkpoint_dir, tok):
    from transformers import AutoConfig, AutoTokenizer

    from qwenvl_vllm.tokenizers import QWenConfig, register_qwen_vl

    register_qwen_vl()
    register_qwen_vl()  # idempotent
    config = AutoConfig.from_pretrained(checkpoint_dir, trust_remote_code=False)
    assert isinstance(config, QWenConfig)
    assert config.visual["image_start_id"] == 151857 and config.seq_length == 2048
    loaded = AutoTokenizer.from_pretrained(checkpoint_dir, trust_remote_code=False)
    assert isinstance(loaded, QWenTokenizer)
    assert loaded.model_max_length == 8192
    text = "<|im_start|>user\nPicture 1: <img></img>\n数一数 12 apples<|im_end|>"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.chat_template == tok.chat_template


def test_save_and_reload(tmp_path, tok):
    from transformers import AutoTokenizer

    from qwenvl_vllm.tokenizers import register_qwen_vl

    register_qwen_vl()
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<ref>a</ref><box>(1,2),(3,4)</box> 12 <|extra_7|>"
    assert isinstance(reloaded, QWenTokenizer)
    assert reloaded.encode(text) == tok.encode(text)


def test_bad_vocab_file(tmp_path):
    bad = tmp_path / "qwen.tiktoken"
    bad.write_text("not base64 0\n")
    with pytest.raises(ValueError):
        QWenTokenizer(vocab_file=str(bad))
    with pytest.raises(ValueError):
        QWenTokenizer(vocab_file=str(tmp_path / "missing.tiktoken"))


def test_vllm_loads_config_and_tokenizer_without_trust_remote_code(checkpoint_dir, tok):
    """vLLM's own loaders (what `vllm serve DIR` / `LLM(DIR)` call) with trust_remote_code=False."""
    from qwenvl_vllm.tokenizers import register_qwen_vl

    register_qwen_vl()
    from vllm.tokenizers import get_tokenizer
    from vllm.transformers_utils.config import get_config

    config = get_config(str(checkpoint_dir), trust_remote_code=False)
    assert config.model_type == "qwen" and config.architectures == ["QWenLMHeadModel"]
    vtok = get_tokenizer(str(checkpoint_dir), trust_remote_code=False)
    assert isinstance(vtok, QWenTokenizer)
    assert vtok.max_token_id == 151859 and vtok.eos_token_id == 151645
    assert vtok.encode("Picture 1: <img></img>\nhi") == tok.encode("Picture 1: <img></img>\nhi")

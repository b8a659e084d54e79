"""The real Qwen tokenizers, rebuilt offline from `qwen.tiktoken` (no hub needed).

Qwen2-VL: a byte-level BPE `tokenizer.json` (+ vocab.json / merges.txt) equivalent to the released one.
Qwen-VL v1: the released layout, i.e. the `qwen.tiktoken` file itself plus a tokenizer_config.json that
points at the remote-code `QWenTokenizer` (we ship no remote code).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

# Qwen2's pre-tokenizer: like GPT-4's cl100k pattern but single digits (\p{N}, not \p{N}{1,3}).
QWEN_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)
NUM_BPE_RANKS = 151643

# Qwen2 / Qwen2-VL special tokens, ids 151643.. in this order.
QWEN2_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen-VL v1 specials (ids 151643..151859), as its tokenization_qwen.py defines them.
QWEN_VL_SPECIAL_TOKENS = (
    ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    + tuple(f"<|extra_{i}|>" for i in range(205))
    + ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>")
)

QWEN_VL_TOKENIZER_CONFIG = {
    "model_max_length": 8192,
    "tokenizer_class": "QWenTokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
}


def qwen_tiktoken_path() -> Path:
    """Where the `dashscope` wheel keeps qwen.tiktoken, found without importing dashscope.

    Importing dashscope pulls network dependencies that the GPU image may lack; find_spec only locates it.
    """
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("qwen.tiktoken comes from the `dashscope` wheel, which is not installed")
    for root in spec.submodule_search_locations:
        path = Path(root) / "resources" / "qwen.tiktoken"
        if path.is_file():
            return path
    raise FileNotFoundError("dashscope is installed but has no resources/qwen.tiktoken")


@lru_cache(maxsize=1)
def load_bpe_ranks() -> dict[bytes, int]:
    """token bytes -> rank, parsed from the `base64 rank` lines of qwen.tiktoken."""
    ranks: dict[bytes, int] = {}
    for line in qwen_tiktoken_path().read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != NUM_BPE_RANKS or sorted(ranks.values()) != list(range(NUM_BPE_RANKS)):
        raise ValueError(f"unexpected qwen.tiktoken: {len(ranks)} ranks, expected 0..{NUM_BPE_RANKS - 1}")
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _final_merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge tiktoken performs when encoding `token` with only lower-ranked merges available.

    Gives exactly one merge per multi-byte token (as the released merges.txt has), ordered like the ranks.
    """
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best_rank, best_i = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best_rank:
                best_rank, best_i = rank, i
        if best_i < 0:
            raise ValueError(f"token {token!r} is not reachable by lower-ranked merges")
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts[0], parts[1]


@lru_cache(maxsize=1)
def qwen2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    ranks = load_bpe_ranks()
    byte_map = _bytes_to_unicode()

    def as_str(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    vocab = {as_str(tok): rank for tok, rank in ranks.items()}
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    merges = [tuple(map(as_str, _final_merge(tok, ranks))) for tok, _ in by_rank if len(tok) > 1]
    return vocab, merges  # type: ignore[return-value]


@lru_cache(maxsize=1)
def qwen2_tokenizer_json() -> str:
    """The Qwen2 `tokenizer.json` text: NFC, regex split, byte-level BPE, specials at 151643.."""
    vocab, merges = qwen2_vocab_and_merges()
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            # The split regex already did the work: ByteLevel only maps bytes to characters.
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIAL_TOKENS])
    if tok.token_to_id(QWEN2_SPECIAL_TOKENS[0]) != NUM_BPE_RANKS:
        raise AssertionError("special tokens did not land at id 151643")
    return tok.to_str(pretty=False)


def qwen2_chat_template() -> str:
    text = (
        resources.files("qwenvl_vllm").joinpath("templates/qwen2_vl_chat.jinja").read_text(encoding="utf-8")
    )
    return text.removesuffix("\n")  # the released template has no trailing newline


def qwen2_tokenizer_config() -> dict:
    added = {
        str(NUM_BPE_RANKS + i): {
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
    vocab, merges = qwen2_vocab_and_merges()
    (out / "tokenizer.json").write_text(qwen2_tokenizer_json(), encoding="utf-8")
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (out / "merges.txt").write_text(merges_text, encoding="utf-8")
    _dump(out / "tokenizer_config.json", qwen2_tokenizer_config())
    _dump(out / "chat_template.json", {"chat_template": qwen2_chat_template()})


def write_qwen_vl_tokenizer(out: Path) -> None:
    """qwen.tiktoken (copied) and the released tokenizer_config.json with its remote-code auto_map."""
    shutil.copyfile(qwen_tiktoken_path(), out / "qwen.tiktoken")
    _dump(out / "tokenizer_config.json", QWEN_VL_TOKENIZER_CONFIG)

"""The byte-level BPE shared by Qwen-VL v1 and Qwen2(-VL), built from `qwen.tiktoken`.

One loader, one merge derivation and one split regex for both users: the runtime v1 tokenizer
(tokenizers/qwen_vl.py) and the checkpoint writer's Qwen2 tokenizer files (checkpoint/tokenizer.py).
The reference for both is tiktoken running the same ranks and regex.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from functools import lru_cache

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers.convert_slow_tokenizer import bytes_to_unicode

from qwenvl_vllm.constants import NUM_BPE_TOKENS
from qwenvl_vllm.tokenizers.constants import TIKTOKEN_FILE

# Pre-tokenizer split of the released tokenizers (PAT_STR in v1's tokenization_qwen.py; Qwen2's
# tokenizer.json): single digits (\p{N}), unlike the {1,3} digit groups of GPT-4's cl100k pattern.
SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)


def find_qwen_tiktoken() -> str:
    """Path of the qwen.tiktoken that the `dashscope` wheel ships.

    Found with find_spec, without importing dashscope: its import pulls network dependencies that the GPU
    image may lack.
    """
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("qwen.tiktoken not found: the `dashscope` package is not installed")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "resources", TIKTOKEN_FILE)
        if os.path.isfile(path):
            return path
    raise ValueError("dashscope is installed but has no resources/qwen.tiktoken")


def load_tiktoken_ranks(path: str) -> dict[bytes, int]:
    """Parse a tiktoken BPE file into {token bytes: rank}; ranks must be exactly 0..N-1."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token_b64, rank = line.split()
                ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not a tiktoken line ({line[:40]!r})") from e
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not a permutation of 0..{len(ranks) - 1}")
    return ranks


def load_qwen_ranks(path: str) -> dict[bytes, int]:
    """The ranks of a qwen.tiktoken file, checked to be Qwen's 151643."""
    ranks = load_tiktoken_ranks(path)
    if len(ranks) != NUM_BPE_TOKENS:
        raise ValueError(f"{path}: expected {NUM_BPE_TOKENS} BPE ranks for Qwen, found {len(ranks)}")
    return ranks


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab plus merges in tiktoken's priority order.

    tiktoken repeatedly joins the adjacent pair whose concatenation has the lowest rank; HF BPE joins the
    pair listed first in `merges`. Listing every split (a, b) of each token t, ordered by rank(t), gives
    the same choice for any input, by construction. (One merge per token, as Qwen2's released merges.txt
    lists, is a subset; it agreed with tiktoken on 23k test texts, but nothing guarantees it when context
    builds a token from another split.)
    """
    byte_to_char = bytes_to_unicode()

    def to_str(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    ranked_merges: list[tuple[int, int, int, bytes, bytes]] = []
    for tok, rank in ranks.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in ranks and right in ranks:
                ranked_merges.append((rank, ranks[left], ranks[right], left, right))
    ranked_merges.sort()
    merges = [(to_str(left), to_str(right)) for _, _, _, left, right in ranked_merges]
    return vocab, merges


@lru_cache(maxsize=4)
def _vocab_and_merges_of(path: str, size: int, mtime_ns: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    return vocab_and_merges(load_qwen_ranks(path))


def qwen_vocab_and_merges(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab_and_merges of a qwen.tiktoken file, derived once per file version (it takes seconds)."""
    if not os.path.isfile(path):
        raise ValueError(f"qwen.tiktoken not found: {path}")
    real = os.path.realpath(path)
    st = os.stat(real)
    return _vocab_and_merges_of(real, st.st_size, st.st_mtime_ns)


def byte_level_bpe(path: str, added_tokens: list[AddedToken]) -> Tokenizer:
    """NFC, the split regex, byte-level BPE over qwen.tiktoken's ranks, then `added_tokens` from id 151643.

    Raises ValueError if an added token does not land at its expected id (NUM_BPE_TOKENS + its index).
    """
    vocab, merges = qwen_vocab_and_merges(path)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True))
    tok.normalizer = normalizers.NFC()  # the released tokenizers NFC-normalise before encoding
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
            # The split regex already did the work: ByteLevel only maps bytes to characters.
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_tokens(added_tokens)
    for i, added in enumerate(added_tokens):
        got = tok.token_to_id(added.content)
        if got != NUM_BPE_TOKENS + i:
            raise ValueError(f"{path}: {added.content} got id {got}, expected {NUM_BPE_TOKENS + i}")
    return tok

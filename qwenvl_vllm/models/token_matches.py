"""vLLM's token-prompt update and placeholder search, with the per-token Python work taken out.

A 12 MP photo expands to ~15,560 prompt tokens, and vLLM 0.26 pays per token on the API server's request
path twice after the pixels are done:
- it joins the updated prompt's pieces with a Python list comprehension (`flatten_2d_lists`);
- its placeholder search (`_iter_placeholders`) slices the prompt at every position before a placeholder and
  compares the slice with the placeholder's tokens: a copy of ~15,560 ids per text token in front of it.
Ours joins with `list.extend` (a C copy per piece) and slices only where the first token already matches.
The pieces, the matching rules (modality order, items in order, no overlaps, empty contents skipped) and
so the token ids and placeholders are vLLM's.
"""

from __future__ import annotations

from collections.abc import Iterator

from vllm.multimodal.processing import processor as vllm_processor
from vllm.multimodal.processing.processor import PlaceholderFeaturesInfo, full_groupby_modality


class CJoinedTokenMatches:
    """Mixin for a `BaseMultiModalProcessor` (before it in the bases)."""

    def _apply_token_matches(self, prompt, mm_prompt_updates):  # noqa: ANN001, ANN202 (vLLM's signature)
        pieces, result = vllm_processor._apply_matches(prompt, mm_prompt_updates, self.info.get_tokenizer())
        joined: list[int] = []
        for piece in pieces:
            joined += piece
        return joined, result

    def _find_mm_placeholders(self, new_token_ids, mm_prompt_updates):  # noqa: ANN001, ANN202 (vLLM's)
        found = _placeholders(new_token_ids, mm_prompt_updates, self.info.get_tokenizer())
        return dict(full_groupby_modality(found))


def _placeholders(prompt: list[int], updates, tokenizer) -> Iterator[PlaceholderFeaturesInfo]:  # noqa: ANN001
    counts = {modality: len(items) for modality, items in updates.items()}
    next_item = dict.fromkeys(updates, 0)
    start = 0
    while start < len(prompt) and any(next_item[m] < counts[m] for m in next_item):
        match = _match_at(prompt, start, updates, next_item, tokenizer)
        if match is None:
            start += 1
            continue
        yield match
        next_item[match.modality] += 1
        start += len(match.tokens)


def _match_at(prompt, start, updates, next_item, tokenizer) -> PlaceholderFeaturesInfo | None:  # noqa: ANN001
    """The first modality's (in `updates`' order) next item whose placeholder starts at `start`."""
    for modality, items in updates.items():
        item = next_item[modality]
        if item >= len(items):
            continue
        for update in items[item]:
            content = update.content
            tokens = vllm_processor._seq2tokens(tokenizer, content.full)
            end = start + len(tokens)
            if not tokens or end > len(prompt) or prompt[start] != tokens[0] or prompt[start:end] != tokens:
                continue
            is_embed = content.is_embed(tokenizer, content.full) if content.is_embed is not None else None
            return PlaceholderFeaturesInfo(
                modality=modality, item_idx=item, start_idx=start, tokens=tokens, is_embed=is_embed
            )
    return None

"""vLLM's token-prompt update with the updated prompt joined by `list.extend` (a C copy per piece).

vLLM 0.26 joins the pieces of an updated prompt with a Python list comprehension (`flatten_2d_lists`), a
cost per prompt token on the API server's request path: a 12 MP photo expands to ~15,560 tokens, and that
join was the largest single item of its front end over decode on the dev CPU. The pieces are the same
(vLLM's own `_apply_matches`); only the join differs, so the token ids are identical.
"""

from __future__ import annotations

from vllm.multimodal.processing import processor as vllm_processor


class CJoinedTokenMatches:
    """Mixin for a `BaseMultiModalProcessor` (before it in the bases)."""

    def _apply_token_matches(self, prompt, mm_prompt_updates):  # noqa: ANN001, ANN202 (vLLM's signature)
        pieces, result = vllm_processor._apply_matches(prompt, mm_prompt_updates, self.info.get_tokenizer())
        joined: list[int] = []
        for piece in pieces:
            joined += piece
        return joined, result

"""Our merge of multimodal embeddings into token embeddings (no host sync) equals vLLM's, byte for byte."""

from __future__ import annotations

import pytest
import torch
from vllm.model_executor.models.utils import _merge_multimodal_embeddings

from qwenvl_vllm.models.embed_merge import scatter_embeddings


def _case(seed: int, tokens: int = 64, hidden: int = 8):
    gen = torch.Generator().manual_seed(seed)
    is_mm = torch.rand(tokens, generator=gen) < 0.4
    n = int(is_mm.sum())
    cut = n // 3
    items = [torch.randn(cut, hidden, generator=gen), [torch.randn(n - cut, hidden, generator=gen)]]
    return torch.randn(tokens, hidden, generator=gen, dtype=torch.float32).bfloat16(), items, is_mm


@pytest.mark.parametrize("seed", range(5))
def test_same_rows_as_vllm_merge(seed: int) -> None:
    embeds, items, is_mm = _case(seed)
    want = _merge_multimodal_embeddings(embeds.clone(), items, is_mm)
    got = scatter_embeddings(embeds.clone(), items, is_mm)
    assert torch.equal(got, want)
    assert not torch.equal(got, embeds)  # the placeholder rows changed


def test_row_count_mismatch_is_a_value_error() -> None:
    embeds, items, is_mm = _case(0)
    with pytest.raises(ValueError, match="placeholder tokens"):
        scatter_embeddings(embeds, items[:1], is_mm)

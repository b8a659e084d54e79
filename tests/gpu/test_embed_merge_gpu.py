"""On CUDA: our merge of multimodal embeddings equals vLLM's and never blocks the host (a tower still
running on the stream does not hold back the launch of the language model)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _case():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gen = torch.Generator().manual_seed(0)
    is_mm = torch.rand(4096, generator=gen) < 0.5  # host mask, as vLLM's runners pass it
    embeds = torch.randn(4096, 1536, device="cuda", dtype=torch.bfloat16)
    items = [torch.randn(int(is_mm.sum()), 1536, device="cuda", dtype=torch.bfloat16)]
    return embeds, items, is_mm


def _launches_behind_a_sleep(merge) -> bool:
    """Whether `merge` returns while the GPU still sleeps (~1 s queued before it on the stream)."""
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)
    sleeping = torch.cuda.Event()
    sleeping.record()
    merge()
    returned_early = not sleeping.query()
    torch.cuda.synchronize()
    return returned_early


def test_scatter_equals_vllm_merge_on_cuda() -> None:
    from vllm.model_executor.models.utils import _merge_multimodal_embeddings

    from qwenvl_vllm.models.embed_merge import scatter_embeddings

    embeds, items, is_mm = _case()
    want = _merge_multimodal_embeddings(embeds.clone(), items, is_mm)
    assert torch.equal(scatter_embeddings(embeds.clone(), items, is_mm), want)


def test_scatter_does_not_block_the_host() -> None:
    from qwenvl_vllm.models.embed_merge import scatter_embeddings

    embeds, items, is_mm = _case()
    scatter_embeddings(embeds, items, is_mm)  # first use: the pinned host allocator may synchronise
    assert _launches_behind_a_sleep(lambda: scatter_embeddings(embeds, items, is_mm))


def test_vllms_merge_blocks_the_host() -> None:
    """The reason for ours: vLLM's merge copies the mask's rows to the GPU with a blocking copy."""
    from vllm.model_executor.models.utils import _merge_multimodal_embeddings

    embeds, items, is_mm = _case()
    assert not _launches_behind_a_sleep(lambda: _merge_multimodal_embeddings(embeds, items, is_mm))

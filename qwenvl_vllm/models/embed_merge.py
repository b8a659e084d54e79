"""Multimodal embeddings written into the token embeddings without a host-device sync.

vLLM's merge indexes the token embeddings with the placeholder mask, which its runners keep on the CPU
(`embeds[mask] = mm`); PyTorch then copies the mask's row indices to the GPU with a blocking copy, which
waits for everything queued on the stream, the vision tower included, before the host may launch the
language model. The steps of the sixth visit's traces that encode k images last ~13 ms x k longer than
their GPU work explains. Here the rows are found on the host and copied from pinned memory without
blocking: the same rows get the same values, and the host goes on launching while the tower runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def placeholder_rows(is_multimodal: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Row indices of a host-side placeholder mask, on `device`, copied without blocking the host."""
    from vllm.utils.platform_utils import is_pin_memory_available

    rows = is_multimodal.nonzero().squeeze(-1)
    if device.type != "cuda" or not is_pin_memory_available():
        return rows.to(device)
    return rows.pin_memory().to(device, non_blocking=True)


def scatter_embeddings(
    inputs_embeds: torch.Tensor, embeddings: torch.Tensor | Sequence, is_multimodal: torch.Tensor
) -> torch.Tensor:
    """`inputs_embeds` [tokens, hidden] with its placeholder rows (`is_multimodal`, [tokens] bool, on the
    host) overwritten by the items' embeddings, in order; in place, as vLLM's merge."""
    from vllm.model_executor.models.utils import _flatten_embeddings

    flat = _flatten_embeddings(embeddings)  # vLLM's own, so both merges see the same rows
    expected = int(is_multimodal.sum())  # a host mask: no sync (a device mask would sync, as in vLLM)
    if expected != flat.shape[0]:
        raise ValueError(f"{flat.shape[0]} multimodal embedding rows for {expected} placeholder tokens")
    on_host = not is_multimodal.is_cuda
    rows = placeholder_rows(is_multimodal, inputs_embeds.device) if on_host else is_multimodal
    inputs_embeds[rows] = flat.to(inputs_embeds.dtype)
    return inputs_embeds

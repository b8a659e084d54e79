"""GPU-tier fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def vllm_cuda():
    """A current VllmConfig on CUDA, distributed state of world size 1: for tests that build vLLM layers."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from helpers import vllm_env

    with vllm_env("cuda") as cfg:
        yield cfg

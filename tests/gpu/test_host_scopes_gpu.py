"""GPU check of the host scopes' sync counting (`QWENVL_VLLM_SYNC_CHECK`): torch's sync debug mode sees a
device tensor's `.item()` inside a scope, not plain kernel launches, and the mode is restored after it. Run on
the GPU machine: `python -m pytest tests/gpu/test_host_scopes_gpu.py -q`."""

from __future__ import annotations

import pytest
import torch

from qwenvl_vllm.models import host_scopes
from qwenvl_vllm.models.host_scopes import scope, take_syncs

pytestmark = pytest.mark.gpu


def test_a_scope_counts_a_real_sync(monkeypatch) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    monkeypatch.setattr(host_scopes, "TIMING", True)
    monkeypatch.setattr(host_scopes, "SYNC_CHECK", True)
    take_syncs()
    x = torch.ones(1024, device="cuda")
    with scope("launches"):
        y = (x * 2 + 1).sum()
    with scope("reads"):
        value = y.item()
    assert value == 3 * 1024
    assert take_syncs() == {"reads": 1}
    assert torch.cuda.get_sync_debug_mode() == 0

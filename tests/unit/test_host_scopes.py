"""Our host scopes' sync counting (`QWENVL_VLLM_SYNC_CHECK`) on the CPU: torch's sync debug mode stands in for
the GPU (set to "warn" inside a scope and restored after it), the counting of its warnings is real; the GPU
tier (`tests/gpu/test_host_scopes_gpu.py`) counts real synchronising calls."""

from __future__ import annotations

import warnings

import pytest
import torch

from qwenvl_vllm.models import host_scopes
from qwenvl_vllm.models.host_scopes import SYNC_MESSAGE, scope, take_syncs
from qwenvl_vllm.serving.step_trace import sync_check_available


@pytest.fixture
def sync_mode(monkeypatch) -> list[str]:
    """torch's sync debug mode as a list of the modes set (a CPU build has no CUDA to ask)."""
    modes = ["default"]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0 if modes[-1] == "default" else 1)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: modes.append(mode or "default"))
    monkeypatch.setattr(host_scopes, "TIMING", True)
    monkeypatch.setattr(host_scopes, "SYNC_CHECK", True)
    take_syncs()
    return modes


def test_a_scope_counts_its_own_syncs_and_passes_other_warnings_on(sync_mode: list[str]) -> None:
    with pytest.warns(DeprecationWarning, match="unrelated"):
        with scope("embed_multimodal"):
            assert sync_mode[-1] == "warn"
            warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=1)
            with scope("device_pixels"):
                warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=1)
                warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=1)
            warnings.warn("unrelated", DeprecationWarning, stacklevel=1)
    assert sync_mode[-1] == "default"  # restored after the outer scope
    assert take_syncs() == {"embed_multimodal": 1, "device_pixels": 2}
    assert take_syncs() == {}


def test_another_threads_syncs_are_not_the_scopes(sync_mode: list[str]) -> None:
    """vLLM's output thread may synchronise while a scope has the (process-wide) debug mode on."""
    import threading

    def other() -> None:
        warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=1)

    with scope("tower_slices"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=1)
    assert take_syncs() == {"tower_slices": 1}


def test_without_the_check_nothing_is_counted_or_set(sync_mode: list[str], monkeypatch) -> None:
    monkeypatch.setattr(host_scopes, "SYNC_CHECK", False)
    with pytest.warns(UserWarning, match=SYNC_MESSAGE):
        with scope("embed_multimodal"):
            warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=1)
    assert sync_mode == ["default"] and take_syncs() == {}


def test_the_check_needs_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not sync_check_available(True) and not sync_check_available(False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sync_check_available(True) and not sync_check_available(False)

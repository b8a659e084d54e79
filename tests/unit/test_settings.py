"""Every plugin setting has a row in the README's settings table, and the table names no other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\b(QWENVL_VLLM_[A-Z0-9_]+|MODEL_SEQ_LEN)\b", text))


def test_readme_table_mirrors_settings() -> None:
    code = _variables((ROOT / "qwenvl_vllm" / "settings.py").read_text())
    table = "\n".join(
        line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")
    )
    rows = _variables(" ".join(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.M)))
    assert code and code == rows


def test_lm_stream_priority_defaults_on(monkeypatch) -> None:
    from qwenvl_vllm.settings import get_settings

    monkeypatch.delenv("QWENVL_VLLM_LM_STREAM_PRIORITY", raising=False)
    assert get_settings().lm_stream_priority
    monkeypatch.setenv("QWENVL_VLLM_LM_STREAM_PRIORITY", "0")
    assert not get_settings().lm_stream_priority


def test_a_malformed_number_names_its_setting(monkeypatch) -> None:
    import pytest

    from qwenvl_vllm.settings import get_settings

    monkeypatch.setenv("QWENVL_VLLM_STEP_TARGET_MS", "18ms")
    with pytest.raises(ValueError, match="QWENVL_VLLM_STEP_TARGET_MS must be a number, got '18ms'"):
        get_settings()
    monkeypatch.setenv("QWENVL_VLLM_STEP_TARGET_MS", "18.5")
    monkeypatch.setenv("QWENVL_VLLM_TOWER_BACKLOG_REQUESTS", "1.5")
    with pytest.raises(ValueError, match="QWENVL_VLLM_TOWER_BACKLOG_REQUESTS must be an integer"):
        get_settings()
    monkeypatch.setenv("QWENVL_VLLM_TOWER_BACKLOG_REQUESTS", "12")
    assert get_settings().step_target_ms == 18.5 and get_settings().tower_backlog_requests == 12

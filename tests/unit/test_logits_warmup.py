"""The logits warm-up: which row counts it runs and when (models.logits_warmup)."""

from __future__ import annotations

import pytest
import torch

from qwenvl_vllm.models.logits_warmup import ROW_BAND, LogitsWarmup, band_rows


@pytest.mark.parametrize("max_rows", [1, 7, 8, 9, 64, 256, 1000])
def test_every_band_of_rows_is_run_at_both_ends(max_rows: int) -> None:
    rows = band_rows(max_rows)
    assert rows == sorted(set(rows)) and rows[0] == 1 and rows[-1] == max_rows
    for n in range(1, max_rows + 1):  # each count has a warmed count in its band at or above it
        band_top = min(((n - 1) // ROW_BAND + 1) * ROW_BAND, max_rows)
        assert (n - 1) // ROW_BAND * ROW_BAND + 1 in rows and band_top in rows


def test_runs_once_on_the_first_call_with_the_hidden_states_width_and_dtype() -> None:
    lm_head = torch.nn.Linear(16, 40, bias=False, dtype=torch.bfloat16)
    seen: list[tuple[int, ...]] = []

    def compute(hidden: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(hidden.shape))
        assert hidden.dtype == torch.bfloat16
        return lm_head(hidden)

    warmup = LogitsWarmup(max_rows=20, enabled=True)
    hidden = torch.randn(20, 16, dtype=torch.bfloat16)
    warmup.before(compute, hidden)
    assert seen == [(n, 16) for n in band_rows(20)]
    warmup.before(compute, hidden)  # the engine's later calls: nothing more
    assert len(seen) == len(band_rows(20))


def test_off_runs_nothing() -> None:
    seen: list[torch.Tensor] = []
    LogitsWarmup(max_rows=20, enabled=False).before(seen.append, torch.zeros(3, 16))
    assert seen == []


def test_qwen2_vl_logits_are_unchanged_by_the_warmup(build, ckpt: str, monkeypatch) -> None:
    from safetensors.torch import load_file

    weights = load_file(f"{ckpt}/model.safetensors")
    hidden, logits = None, {}
    for setting in ("0", "1"):
        monkeypatch.setenv("QWENVL_VLLM_WARM_LOGITS", setting)
        model = build(ckpt)
        model.load_weights(weights.items())
        if hidden is None:
            hidden = torch.randn(5, model.config.get_text_config().hidden_size)
        assert model.logits_warmup.pending is (setting == "1")
        logits[setting] = model.compute_logits(hidden)
        assert not model.logits_warmup.pending
    torch.testing.assert_close(logits["1"], logits["0"], rtol=0, atol=0)

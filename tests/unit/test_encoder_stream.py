"""The encoder stream's CPU behaviour and how the model decides to use it (the CUDA side: GPU tests)."""

from __future__ import annotations

import pytest
import torch
from helpers import config_stub

from qwenvl_vllm.log import RareEvents
from qwenvl_vllm.models.encoder_stream import (
    PROGRESS,
    EncoderStream,
    SideStreamEmbedding,
    wants_encoder_stream,
)

AHEAD = "qwenvl_vllm.serving.encode_ahead.EncodeAheadAsyncScheduler"


@pytest.mark.parametrize(
    "scheduler_cls,wanted",
    [
        (None, False),
        (AHEAD, True),
        ("qwenvl_vllm.serving.encode_ahead.EncodeAheadScheduler", True),
        ("qwenvl_vllm.serving.scheduler.EncoderPacedAsyncScheduler", False),
        ("vllm.v1.core.sched.async_scheduler.AsyncScheduler", False),
    ],
)
def test_model_uses_a_side_stream_only_under_encode_ahead(scheduler_cls, wanted: bool) -> None:
    assert wants_encoder_stream(config_stub(scheduler_cls)) is wanted


def test_cpu_runs_inline_and_counts_items() -> None:
    PROGRESS.reset()
    stream = EncoderStream(torch.device("cpu"))
    assert stream.stream is None and not PROGRESS.active
    x = torch.arange(6.0)
    outputs = stream.run(lambda: list((x * 2).split([2, 4])), [x])
    stream.wait_for(outputs)
    assert torch.equal(torch.cat(outputs), x * 2)
    assert PROGRESS.launched == 2 and PROGRESS.finished_items() == 2


def test_progress_finishes_in_launch_order() -> None:
    class Encode:
        def __init__(self, done: bool) -> None:
            self.done = done

        def query(self) -> bool:
            return self.done

    PROGRESS.reset()
    first, second = Encode(False), Encode(True)
    PROGRESS.add(3, first)
    PROGRESS.add(2, second)
    assert PROGRESS.finished_items() == 0  # the second cannot have finished before the first (one stream)
    first.done = True
    assert PROGRESS.finished_items() == 5
    PROGRESS.reset()


@pytest.mark.parametrize("scheduler_cls", [None, AHEAD])
def test_models_get_their_stream_at_construction(scheduler_cls) -> None:
    """Made with the model (before vLLM builds the scheduler in the same process), only under encode-ahead."""
    model = SideStreamEmbedding()
    model._init_encoder_stream(config_stub(scheduler_cls))
    assert (model._encoder_stream is not None) is (scheduler_cls == AHEAD)


def test_rare_events_log_at_powers_of_ten(caplog) -> None:
    events = RareEvents("something rare")
    with caplog.at_level("INFO", logger="vllm.qwenvl_vllm"):
        for _ in range(120):
            events.note()
    assert events.count == 120
    assert [r.getMessage() for r in caplog.records] == [
        f"qwenvl-vllm: something rare ({n} times so far)" for n in (1, 10, 100)
    ]

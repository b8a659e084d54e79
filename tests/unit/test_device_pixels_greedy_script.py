"""CPU checks of scripts/gpu/device_pixels_greedy.py, so its GPU run checks what it says: every one of its
32 prompts has media that our processor resizes (on the GPU path, the device kernels run), and its
comparison fails on any token or logprob difference."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

GPU_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "gpu"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(GPU_SCRIPTS))
    spec = importlib.util.spec_from_file_location(
        "device_pixels_greedy", GPU_SCRIPTS / "device_pixels_greedy.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_prompt_has_media_that_is_resized(script, ckpt: str) -> None:
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    config = ModelConfig(model=ckpt, max_model_len=8192, limit_mm_per_prompt={"image": 2, "video": 1})
    proc = MULTIMODAL_REGISTRY.create_processor(config)
    inputs = script.media_inputs()
    assert len(inputs) == 32
    for request in inputs:
        ((modality, items),) = request["multi_modal_data"].items()
        parsed = proc.info.parse_mm_data({modality: items})
        out = proc.apply(ProcessorInputs(request["prompt"], parsed), TimingContext(enabled=False))
        for item, kwargs in zip(items, out["mm_kwargs"][modality], strict=True):
            _, h, w = kwargs[f"{modality}_grid_thw"].data.tolist()
            source = (item.height, item.width) if modality == "image" else item.shape[1:3]
            assert (h * 14, w * 14) != tuple(source), f"{modality} of size {source} is not resized"


def _results(n: int) -> list[dict]:
    return [
        {
            "prompt_ids": [1, 2, i],
            "gen_ids": [i, i + 1],
            "top2": [{"5": -0.5, "6": -1.0}, {"7": -0.2, "8": -2.0}],
        }
        for i in range(n)
    ]


def test_compare_passes_only_when_everything_is_identical(script) -> None:
    same = script.compare(_results(4), _results(4))
    assert same["pass"] and same["identical"] == 4 and same["logprob_max_abs_diff"] == 0.0
    logprob = _results(4)
    logprob[2]["top2"][1]["7"] = -0.2 + 2**-10
    assert not script.compare(logprob, _results(4))["pass"]
    token = copy.deepcopy(_results(4))
    token[3]["gen_ids"][1] = 99
    verdict = script.compare(token, _results(4))
    assert not verdict["pass"] and verdict["identical"] == 3
    other_top2 = _results(4)
    other_top2[0]["top2"][0] = {"5": -0.5, "9": -1.0}
    assert script.compare(other_top2, _results(4))["logprob_max_abs_diff"] == float("inf")

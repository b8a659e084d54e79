"""The processor's joined prompt (list.extend) against vLLM's `apply_token_matches` on the same updates."""

from __future__ import annotations

import numpy as np
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import ProcessorInputs, TimingContext
from vllm.multimodal.processing.processor import apply_token_matches

from qwenvl_vllm.models.token_matches import CJoinedTokenMatches
from qwenvl_vllm.synthetic import make_image

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def _recorded_calls(ckpt: str, prompt: str, mm_data: dict) -> tuple[list, dict]:
    """Runs the processor; the (prompt, updates) of each token-match call and the processor's output."""
    from vllm.config import ModelConfig

    config = ModelConfig(model=ckpt, max_model_len=8192, limit_mm_per_prompt={"image": 3, "video": 1})
    proc = MULTIMODAL_REGISTRY.create_processor(config)
    assert isinstance(proc, CJoinedTokenMatches)
    calls, ours = [], proc._apply_token_matches

    def recording(prompt_ids, updates):
        calls.append((list(prompt_ids), updates, proc.info.get_tokenizer()))
        return ours(prompt_ids, updates)

    proc._apply_token_matches = recording
    items = proc.info.parse_mm_data(mm_data)
    out = proc.apply(ProcessorInputs(prompt, items, hf_processor_mm_kwargs={}), TimingContext(enabled=False))
    return calls, out


def test_joined_prompt_equals_vllms(ckpt: str) -> None:
    images = [make_image(500, 300, seed=1), make_image(97, 61, seed=2), make_image(1000, 40, seed=3)]
    video = np.stack([np.asarray(make_image(96, 64, seed=s)) for s in range(4)])
    prompt = f"a{IMAGE}b{VIDEO}c{IMAGE}{IMAGE}d"
    calls, out = _recorded_calls(ckpt, prompt, {"image": images, "video": [video]})
    assert calls, "the processor never applied its prompt updates"
    for prompt_ids, updates, tokenizer in calls:
        theirs = apply_token_matches(prompt_ids, updates, tokenizer)
        ours = CJoinedTokenMatches._apply_token_matches(_Info(tokenizer), prompt_ids, updates)
        assert ours == theirs
    expanded = sum(p.length for ps in out["mm_placeholders"].values() for p in ps)
    assert len(out["prompt_token_ids"]) > expanded > 4


class _Info:
    """`self` for the mixin's method outside a processor: only its tokenizer is read."""

    def __init__(self, tokenizer) -> None:
        self.info = self
        self._tokenizer = tokenizer

    def get_tokenizer(self):
        return self._tokenizer

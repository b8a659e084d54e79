"""The processor's joined prompt (list.extend) and placeholder search against vLLM's `apply_token_matches` and
`find_mm_placeholders` on the same updates."""

from __future__ import annotations

import numpy as np
import torch
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import ProcessorInputs, TimingContext
from vllm.multimodal.processing.processor import apply_token_matches, find_mm_placeholders

from qwenvl_vllm.models.token_matches import CJoinedTokenMatches
from qwenvl_vllm.synthetic import make_image

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def _recorded_calls(
    ckpt: str, prompt: str, mm_data: dict, method: str = "_apply_token_matches"
) -> tuple[list, dict]:
    """Runs the processor; the (prompt, updates) of each call of `method` and the processor's output."""
    from vllm.config import ModelConfig

    config = ModelConfig(model=ckpt, max_model_len=8192, limit_mm_per_prompt={"image": 3, "video": 1})
    proc = MULTIMODAL_REGISTRY.create_processor(config)
    assert isinstance(proc, CJoinedTokenMatches)
    calls, ours = [], getattr(proc, method)

    def recording(prompt_ids, updates):
        calls.append((list(prompt_ids), updates, proc.info.get_tokenizer()))
        return ours(prompt_ids, updates)

    setattr(proc, method, recording)
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


def _fields(found: dict) -> dict:
    return {
        modality: [(p.item_idx, p.start_idx, p.tokens, p.is_embed is None) for p in infos]
        for modality, infos in found.items()
    }


def test_placeholders_equal_vllms(ckpt: str) -> None:
    images = [make_image(500, 300, seed=1), make_image(97, 61, seed=2), make_image(1000, 40, seed=3)]
    video = np.stack([np.asarray(make_image(96, 64, seed=s)) for s in range(4)])
    cases = [
        (f"a{IMAGE}b{VIDEO}c{IMAGE}{IMAGE}d", {"image": images, "video": [video]}),
        (f"{IMAGE}{IMAGE}", {"image": images[:2]}),
        (f"{VIDEO}Summarise, then compare with {IMAGE}.", {"image": images[2:], "video": [video]}),
    ]
    for prompt, mm_data in cases:
        calls, out = _recorded_calls(ckpt, prompt, mm_data, method="_find_mm_placeholders")
        assert calls, "the processor never searched for its placeholders"
        for prompt_ids, updates, tokenizer in calls:
            theirs = find_mm_placeholders(prompt_ids, updates, tokenizer)
            ours = CJoinedTokenMatches._find_mm_placeholders(_Info(tokenizer), prompt_ids, updates)
            assert _fields(ours) == _fields(theirs)
            assert sum(len(v) for v in ours.values()) == sum(len(v) for v in mm_data.values())
            for mine, vllms in zip(sum(ours.values(), []), sum(theirs.values(), []), strict=True):
                assert (mine.is_embed is None) or torch.equal(mine.is_embed, vllms.is_embed)


class _Info:
    """`self` for the mixin's method outside a processor: only its tokenizer is read."""

    def __init__(self, tokenizer) -> None:
        self.info = self
        self._tokenizer = tokenizer

    def get_tokenizer(self):
        return self._tokenizer

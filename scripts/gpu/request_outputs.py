"""What the GPU scripts keep of one vLLM `RequestOutput`: prompt and generated ids with their logprobs."""

from __future__ import annotations

from typing import Any


def logprob_record(out: Any) -> dict[str, Any]:
    """Prompt ids, each prompt token's logprob (from the second on), generated ids and their logprobs.
    Needs SamplingParams(prompt_logprobs=1, logprobs=k >= 1)."""
    ids, gen = list(out.prompt_token_ids), out.outputs[0]
    return {
        "prompt_ids": ids,
        "prompt_lp": [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))],
        "gen_ids": list(gen.token_ids),
        "decode_lp": [gen.logprobs[i][tok].logprob for i, tok in enumerate(gen.token_ids)],
    }

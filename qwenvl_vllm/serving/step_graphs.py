"""Schedulers whose every step runs as a CUDA graph: steps capped at `step_tokens` tokens, the language
model's graphs captured up to that size.

vLLM captures its graphs up to 512 tokens by default (min(2 x max_num_seqs, 512)); a larger mixed step, such
as a 1k-token prefill beside the decodes, runs the language model eagerly: ~30 ms of host time for the 2B
model whatever its GPU work (sixth visit's step traces). A scheduler class with a `step_tokens` attribute
gets `--max-num-scheduled-tokens` and `--max-cudagraph-capture-size` set to it, where the user set neither,
by the plugin's per-architecture config hook (run when the engine config is built, before any worker), so
the scheduler stays one flag.
"""

from __future__ import annotations

from qwenvl_vllm.log import logger
from qwenvl_vllm.models.encoder_stream import scheduler_class


def apply_step_tokens(vllm_config: object) -> None:
    tokens = getattr(scheduler_class(vllm_config), "step_tokens", None)
    scheduler = vllm_config.scheduler_config
    if not tokens or not scheduler.enable_chunked_prefill:
        return  # unchunked, a prompt longer than the cap would never be scheduled (and block the queue)
    tokens = min(tokens, scheduler.max_num_batched_tokens)
    if scheduler.max_num_scheduled_tokens is None:
        scheduler.max_num_scheduled_tokens = tokens
    compilation = vllm_config.compilation_config
    if compilation.max_cudagraph_capture_size is None and compilation.cudagraph_capture_sizes is None:
        compilation.max_cudagraph_capture_size = tokens
    logger.info(
        "qwenvl-vllm: steps of at most %s tokens, CUDA graphs up to %s tokens",
        scheduler.max_num_scheduled_tokens,
        compilation.max_cudagraph_capture_size or compilation.cudagraph_capture_sizes,
    )

"""The language model's CUDA graphs for our models: up to `QWENVL_VLLM_GRAPH_TOKENS` tokens by default, and
steps capped at `step_tokens` tokens (graphs up to that size) for schedulers that declare it.

vLLM captures its graphs up to 512 tokens by default (min(2 x max_num_seqs, 512)); a larger mixed step, such
as a 1k-token prefill beside the decodes, runs the language model eagerly: ~30 ms of host time for the 2B
model whatever its GPU work (sixth visit's step traces), and one image's prompt is ~1k tokens. The plugin's
per-architecture config hook (run when the engine config is built, before any worker) sets
`--max-cudagraph-capture-size` where the user set no capture size, and, for a scheduler class with a
`step_tokens` attribute, `--max-num-scheduled-tokens` too, so such a scheduler stays one flag.

Under the slicing schedulers nearly every step prefills a prompt chunk beside the decodes, and vLLM's
default graphs (FULL_AND_PIECEWISE) run such steps piecewise, attention eager in every layer: the hook asks
for `cudagraph_mode` FULL there, one graph per step (`QWENVL_VLLM_SLICER_FULL_GRAPHS`; twenty-second visit:
the paced slicer's step-time p99 at c=64 26.8 to 23.0 ms, its longest step 53 to 27-36 ms). vLLM falls
back to FULL_AND_PIECEWISE where the attention backend cannot graph mixed steps (FlashAttention 2).
"""

from __future__ import annotations

from qwenvl_vllm.log import logger
from qwenvl_vllm.models.encoder_stream import scheduler_class, wants_tower_slices
from qwenvl_vllm.settings import get_settings


def apply_full_graphs(vllm_config: object) -> None:
    """FULL graphs under a slicing scheduler where the user chose no mode (vLLM's defaults come later)."""
    compilation = vllm_config.compilation_config
    if (
        compilation.cudagraph_mode is None
        and get_settings().slicer_full_graphs
        and wants_tower_slices(vllm_config)
    ):
        from vllm.config import CUDAGraphMode

        compilation.cudagraph_mode = CUDAGraphMode.FULL
        logger.info("qwenvl-vllm: whole-step CUDA graphs (cudagraph_mode FULL) for the slicing scheduler")


def apply_step_tokens(vllm_config: object) -> None:
    scheduler = vllm_config.scheduler_config
    step_tokens = getattr(scheduler_class(vllm_config), "step_tokens", None)
    # steps are capped only with chunked prefill: unchunked, a prompt longer than the cap would never be
    # scheduled (and block the queue)
    if step_tokens and scheduler.enable_chunked_prefill:
        step_tokens = min(step_tokens, scheduler.max_num_batched_tokens)
        if scheduler.max_num_scheduled_tokens is None:
            scheduler.max_num_scheduled_tokens = step_tokens
        graph_tokens = step_tokens
    else:
        graph_tokens = min(get_settings().graph_tokens, scheduler.max_num_batched_tokens)
    compilation = vllm_config.compilation_config
    sizes = (compilation.max_cudagraph_capture_size, compilation.cudagraph_capture_sizes)
    if graph_tokens > 0 and sizes == (None, None):  # else the user chose
        compilation.max_cudagraph_capture_size = graph_tokens
    logger.info(
        "qwenvl-vllm: steps of at most %s tokens, CUDA graphs up to %s tokens",
        scheduler.max_num_scheduled_tokens or scheduler.max_num_batched_tokens,
        compilation.max_cudagraph_capture_size or compilation.cudagraph_capture_sizes or "vLLM's default",
    )

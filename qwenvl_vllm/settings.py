"""Every plugin setting in one place; read from the environment when asked, never cached."""

from __future__ import annotations

import os
from dataclasses import dataclass

DISABLE_ENV = "QWENVL_VLLM_DISABLE"
VIT_FP8_ENV = "QWENVL_VLLM_VIT_FP8"
# 20 of Qwen2-VL's 32 tower blocks on a 1024x768 image (3996 patches, padded to 4096 in its graphs): ~9.5 ms
# on an H200 beside a step's ~3.5-5 ms of decodes; smaller budgets cost throughput at c=64, larger ones
# inter-token latency at c=16 (benchmarks/sched_sim.py; predictions in benchmarks/results/*-round7/)
TOWER_STEP_PATCH_LAYERS = 20 * 4096
TOWER_STEP_MS = 9.5  # what TOWER_STEP_PATCH_LAYERS takes on an H200 (2B)
# The slicers' step-time targets and their backlog settings, as measured best on an H200 (twenty-second
# visit, the paced slicer with whole-step graphs: c=16 ITL p99 14.4 ms, c=64 27.3 at 1.07x vLLM's
# scheduler's req/s; benchmarks/results/*-round22/)
STEP_TARGET_MS = 16.0
TOWER_BACKLOG_SCALE = 1.35  # the budget (or the target) while requests wait in the scheduler
TOWER_BACKLOG_REQUESTS = 12  # the paced slicer's backlog: this many requests before their first token
STEP_TARGET_SMALL_MS = 12.0  # the target while at most SMALL_BATCH_DECODES requests decode
SMALL_BATCH_DECODES = 16
STEP_TARGET_MARGIN = 0.0  # deviations of the step's noise kept free under the target: off until measured
GRAPH_TOKENS = 2048  # language-model CUDA graphs up to here: one image's prompt (~1k tokens) and the decodes


def _env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    return default if not raw else raw.lower() in ("1", "true", "yes")


def _env_number(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float)


def _env_int(name: str, default: int) -> int:
    return int(_env_number(name, default, int))


@dataclass(frozen=True)
class Settings:
    # Turns the whole plugin off so in-tree vLLM serves the same architectures.
    disabled: bool
    # Media fetching limits (URLs and files). In `vllm serve` (our media connector) fetch_timeout_s is one
    # total deadline per download (vLLM's shorter per-modality timeout wins) and max_media_bytes is enforced
    # while streaming.
    fetch_timeout_s: float
    max_media_bytes: int
    # Decompression-bomb guard: images with more pixels than this are refused before decoding.
    max_image_pixels: int
    # None: local paths allowed as in qwen-vl-utils (offline use); else only files under this folder.
    allowed_local_media_path: str | None
    # Qwen2-VL vision tower in fp8 (e4m3 weights per channel, activations per token): faster, less exact.
    vit_fp8: bool
    # Batches of up to this many patches run the vision tower as a CUDA graph (0: always eager).
    vit_graph_max_patches: int
    # The processors ship decoded uint8 pixels; the model resizes / patchifies them on its device
    # (bit-identical rows). Off: the API server resizes and patchifies, as transformers' processors do.
    device_pixels: bool
    # With device pixels: vLLM's batching leaves the decoded pixels on the CPU and the model copies them to
    # its device, instead of vLLM's pinned copy and transfer (round 16: 2.39 ms for one 1024x768 image's
    # 2.4 MB against 0.65 ms for in-tree's 9.4 MB of rows; round 17's benchmarks/pin_probe.py: the pinned
    # path alone 0.18 ms, the model's pageable copy 0.44 ms, so off).
    model_copies_pixels: bool
    # Encoder (vision tower) output tokens per engine step under our paced schedulers
    # (qwenvl_vllm.serving.scheduler); 0 keeps vLLM's budget (= max_num_batched_tokens); the sliced paced
    # one never goes above its step size (qwenvl_vllm.serving.encode_ahead).
    encoder_step_tokens: int
    # Under our slicing schedulers with step_target_ms 0: the vision tower's work launched per engine step, in
    # patches x blocks (qwenvl_vllm.models.tower_slices); a slice is whole blocks, at least one.
    tower_step_patch_layers: int
    # ... times this while requests wait in the scheduler (the paced slicing scheduler: while
    # `tower_backlog_requests` are before their first token); the engine is behind: admission before latency
    tower_backlog_scale: float
    # Under our slicing schedulers: each step gets the tower work that brings it to about this many ms
    # (models.step_budget), instead of tower_step_patch_layers and the backlog scale; 0: off.
    step_target_ms: float
    # ... this many ms instead while at most SMALL_BATCH_DECODES requests decode (0: the one target): a
    # lightly loaded server's streams smoother than a heavy one's (issue 12: 20 ms at c=16, 30 at c=64).
    step_target_small_ms: float
    # ... less this many times the learned mean absolute deviation of the steps that launched tower work
    # (models.step_budget): the target then bounds more of the tail than the mean on a noisy host.
    step_target_margin: float
    # ... learning apart the extra cost of the steps that queue a new image's encode (models.step_budget);
    # off (twenty-first visit's A/B on one H200: one fixed cost was as good or better on every metric).
    step_admit_cost: bool
    # Under the paced slicing scheduler: the backlog that grows the tower's budget, in requests whose prompt
    # is not computed yet.
    tower_backlog_requests: int
    # Under our slicing schedulers: each step's tower slices on a side stream of lower priority, beside the
    # step's language model instead of before it (models.slice_stream). On since the twenty-third visit's
    # A/B on one H200 (c=64: 1.05x the req/s and a 3% lower TTFT p99 than on one stream).
    slices_on_side_stream: bool
    # Under an encode-ahead scheduler (or the slices on a side stream): the language model's CUDA stream runs
    # at a higher priority than the vision tower's side stream (off: equal priorities).
    lm_stream_priority: bool
    # Qwen2-VL: run the logits once at every batch-size band before serving (models.logits_warmup).
    warm_logits: bool
    # Run the device pixels and the vision tower (Qwen2-VL, Qwen-VL v1) once on the engine's first logits call
    # (models.tower_warmup), so their kernels compile and the first tower graph is captured before serving.
    warm_tower: bool
    # Our models' language-model CUDA graphs up to this many tokens where the user set no capture size
    # (serving.step_graphs; vLLM's default stops at 512, below one image's prompt); 0: vLLM's default.
    graph_tokens: int
    # Under our slicing schedulers, where the user chose no `cudagraph_mode`: FULL, whole-step graphs for the
    # steps that prefill beside the decodes too (serving.step_graphs; vLLM falls back where the attention
    # backend cannot, e.g. FlashAttention 2). Off: vLLM's FULL_AND_PIECEWISE.
    slicer_full_graphs: bool
    # One of our schedulers as the engine's default for Qwen2-VL where the user passed no --scheduler-cls
    # (serving.default_scheduler: its short names); unset: vLLM's scheduler.
    scheduler: str | None
    # A file our schedulers append one JSON line per engine step to (serving.step_trace); unset: off.
    step_trace_path: str | None
    # With the step trace: count the CUDA synchronisations inside our host scopes into it (`syncs`; torch's
    # sync debug mode, models.host_scopes). A diagnostic: it slows the scopes a little.
    sync_check: bool
    # qwen-vl-utils' MODEL_SEQ_LEN: the default total_pixels budget of a video is 90% of it in tokens.
    model_seq_len: int


def get_settings() -> Settings:
    return Settings(
        disabled=_env_flag(DISABLE_ENV),
        fetch_timeout_s=_env_float("QWENVL_VLLM_FETCH_TIMEOUT", 10.0),
        max_media_bytes=_env_int("QWENVL_VLLM_MAX_MEDIA_BYTES", 512 * 1024 * 1024),
        max_image_pixels=_env_int("QWENVL_VLLM_MAX_IMAGE_PIXELS", 178_956_970),
        allowed_local_media_path=os.environ.get("QWENVL_VLLM_ALLOWED_LOCAL_MEDIA_PATH") or None,
        vit_fp8=_env_flag(VIT_FP8_ENV),
        vit_graph_max_patches=_env_int("QWENVL_VLLM_VIT_GRAPH_MAX_PATCHES", 16384),
        device_pixels=_env_flag("QWENVL_VLLM_DEVICE_PIXELS", default=True),
        model_copies_pixels=_env_flag("QWENVL_VLLM_MODEL_COPIES_PIXELS"),
        encoder_step_tokens=_env_int("QWENVL_VLLM_ENCODER_STEP_TOKENS", 2048),
        tower_step_patch_layers=_env_int("QWENVL_VLLM_TOWER_STEP_PATCH_LAYERS", TOWER_STEP_PATCH_LAYERS),
        tower_backlog_scale=_env_float("QWENVL_VLLM_TOWER_BACKLOG_SCALE", TOWER_BACKLOG_SCALE),
        step_target_ms=_env_float("QWENVL_VLLM_STEP_TARGET_MS", STEP_TARGET_MS),
        step_target_small_ms=_env_float("QWENVL_VLLM_STEP_TARGET_SMALL_MS", STEP_TARGET_SMALL_MS),
        step_target_margin=_env_float("QWENVL_VLLM_STEP_TARGET_MARGIN", STEP_TARGET_MARGIN),
        step_admit_cost=_env_flag("QWENVL_VLLM_STEP_ADMIT_COST"),
        tower_backlog_requests=_env_int("QWENVL_VLLM_TOWER_BACKLOG_REQUESTS", TOWER_BACKLOG_REQUESTS),
        slices_on_side_stream=_env_flag("QWENVL_VLLM_SLICES_ON_SIDE_STREAM", default=True),
        lm_stream_priority=_env_flag("QWENVL_VLLM_LM_STREAM_PRIORITY", default=True),
        warm_logits=_env_flag("QWENVL_VLLM_WARM_LOGITS", default=True),
        warm_tower=_env_flag("QWENVL_VLLM_WARM_TOWER", default=False),  # on once a GPU run has checked it
        graph_tokens=_env_int("QWENVL_VLLM_GRAPH_TOKENS", GRAPH_TOKENS),
        slicer_full_graphs=_env_flag("QWENVL_VLLM_SLICER_FULL_GRAPHS", default=True),
        scheduler=os.environ.get("QWENVL_VLLM_SCHEDULER") or None,
        step_trace_path=os.environ.get("QWENVL_VLLM_STEP_TRACE") or None,
        sync_check=_env_flag("QWENVL_VLLM_SYNC_CHECK"),
        model_seq_len=int(_env_float("MODEL_SEQ_LEN", 128000)),  # qwen-vl-utils reads it as a float
    )

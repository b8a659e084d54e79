"""A fixed KV-cache size for the GPU scripts' engines, so that several can share one GPU.

With `kv_cache_memory_bytes` vLLM skips its profiling-based sizing, whose check fails when another process
on the GPU frees memory during the profile (e.g. a parity run's engine shutting down beside a server).
"""

from __future__ import annotations

KV_CACHE_HELP = "fixed KV cache in GiB instead of profiling (lets engines share the GPU); default: profile"


def kv_cache_bytes(gib: float | None) -> int | None:
    return int(gib * 2**30) if gib else None

"""vLLM's Prometheus histograms around a benchmark level: where a latency tail comes from.

The client's inter-token gaps include the API server (request parsing, media decoding, detokenising,
streaming) and the engine; vLLM's `vllm:inter_token_latency_seconds` is stamped in the engine core, so it
holds the engine's gaps only. The share of gaps above a threshold on both sides says which one stalls.
"""

from __future__ import annotations

import re

import requests

ENGINE_ITL = "vllm:inter_token_latency_seconds"
ITL_THRESHOLDS_MS = (50, 100, 200)  # each an upper bound of one of vLLM's ITL buckets
_BUCKET = re.compile(r"^(?P<name>[\w:]+)_bucket\{(?P<labels>[^}]*)\}\s+(?P<count>\S+)")
_LE = re.compile(r'le="(?P<le>[^"]+)"')

Buckets = dict[float, float]  # upper bound (s) -> cumulative count, summed over engines


def parse_histograms(text: str) -> dict[str, Buckets]:
    """Cumulative bucket counts of every histogram in a Prometheus text exposition."""
    histograms: dict[str, Buckets] = {}
    for line in text.splitlines():
        match = _BUCKET.match(line)
        le = match and _LE.search(match["labels"])
        if not le:
            continue
        buckets = histograms.setdefault(match["name"], {})
        bound = float(le["le"])  # "+Inf" parses to inf
        buckets[bound] = buckets.get(bound, 0.0) + float(match["count"])
    return histograms


def scrape(url: str) -> dict[str, Buckets]:
    """The server's histograms; none when it has no metrics endpoint (the shares are then None)."""
    try:
        response = requests.get(f"{url}/metrics", timeout=10)
    except requests.RequestException:
        return {}
    return parse_histograms(response.text) if response.ok else {}


def difference(after: Buckets, before: Buckets) -> Buckets:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def share_above(buckets: Buckets, threshold_s: float) -> float | None:
    """Share of observations above `threshold_s`, which must be one of the bucket bounds."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0 or threshold_s not in buckets:
        return None
    return 1.0 - buckets[threshold_s] / total


def itl_shares(gaps_ms: list[float]) -> dict[str, float | None]:
    """The client's share of inter-token gaps above each threshold."""
    if not gaps_ms:
        return {f"over_{t}ms": None for t in ITL_THRESHOLDS_MS}
    return {f"over_{t}ms": sum(g > t for g in gaps_ms) / len(gaps_ms) for t in ITL_THRESHOLDS_MS}


def engine_itl_shares(after: dict[str, Buckets], before: dict[str, Buckets]) -> dict[str, float | None]:
    """The engine's share of inter-token gaps above each threshold between two scrapes."""
    buckets = difference(after.get(ENGINE_ITL, {}), before.get(ENGINE_ITL, {}))
    return {f"over_{t}ms": share_above(buckets, t / 1000) for t in ITL_THRESHOLDS_MS}

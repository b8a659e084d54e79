"""The load generator of `serve_bench.py`: closed-loop streamed chat requests against one server.

One level runs `concurrency` workers that each send a request, read its stream to the end and send the
next. The client's own stalls count in what it measures (an inter-token gap is stamped when the client
reads the chunk), so each process also times its event loop's lateness (`client_lag_*`), and the workers
can be spread over several processes (`processes`) so that one event loop does not serialise every stream.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import aiohttp
import numpy as np
import requests
from server_metrics import itl_shares

LAG_TICK_S = 0.005  # the event-loop probe's period: coarse enough to cost the loop nothing measurable
START_TIMEOUT_S = 120.0
_start_together = None  # a client process's barrier: every client starts its share at once


def wait_ready(proc: subprocess.Popen, url: str, timeout_s: float = 600) -> None:
    """Until the server at `url` answers its health check; an error if its process exits first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)
    raise RuntimeError("server did not become ready")


def output_lengths(count: int, max_tokens: int, spread: int) -> list[int]:
    """Each request's output tokens: `max_tokens` for all, or drawn from max_tokens +- spread (seeded), so
    that a closed loop's clients stop finishing together."""
    if spread <= 0:
        return [max_tokens] * count
    rng = np.random.default_rng(0)
    return [int(n) for n in rng.integers(max_tokens - spread, max_tokens + spread + 1, size=count)]


def chat_body(image_url: str, max_tokens: int) -> dict:
    content = [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "text", "text": "Describe this image in detail."},
    ]
    return {
        "model": "m",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
    }


async def one_request(session: aiohttp.ClientSession, url: str, image_url: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    stamps: list[float] = []
    async with session.post(f"{url}/v1/chat/completions", json=chat_body(image_url, max_tokens)) as response:
        if response.status != 200:
            return {"error": response.status}
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    if not stamps:
        return {"error": "no tokens"}
    return {"ttft": stamps[0] - start, "itl": list(np.diff(stamps)), "e2e": stamps[-1] - start}


async def _probe_lag(lags: list[float], done: asyncio.Event) -> None:
    """How late the event loop wakes a sleeper: the delay every chunk read in that moment also got."""
    while not done.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(LAG_TICK_S)
        lags.append(time.perf_counter() - asked - LAG_TICK_S)


async def _collect(url: str, concurrency: int, jobs: list[tuple[str, int]]) -> tuple[list[dict], list[float]]:
    queue = list(jobs)
    results: list[dict] = []
    lags: list[float] = []
    done = asyncio.Event()

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            image, length = queue.pop()
            results.append(await one_request(session, url, image, length))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        probe = asyncio.create_task(_probe_lag(lags, done))
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        done.set()
        await probe
    return results, lags


def _join(barrier) -> None:
    global _start_together
    _start_together = barrier


def _collect_together(url: str, concurrency: int, jobs: list[tuple[str, int]]) -> tuple:
    """One client process: start with the others, run its share, report results and when it ran."""
    _start_together.wait(timeout=START_TIMEOUT_S)  # a sibling that failed to start breaks it, no hang
    start = time.time()
    results, lags = asyncio.run(_collect(url, concurrency, jobs))
    return results, lags, start, time.time()


def split(concurrency: int, jobs: list, processes: int) -> list[tuple[int, list]]:
    """Workers and requests dealt to `processes` clients, each keeping the level's requests per worker."""
    parts = min(processes, concurrency)
    workers = [concurrency // parts + (i < concurrency % parts) for i in range(parts)]
    bounds = np.cumsum([0, *workers]) * len(jobs) // concurrency
    return [(w, jobs[bounds[i] : bounds[i + 1]]) for i, w in enumerate(workers)]


def run_level(
    url: str, concurrency: int, images: list[str], max_tokens: int, spread: int = 0, processes: int = 1
) -> dict:
    jobs = list(zip(images, output_lengths(len(images), max_tokens, spread), strict=True))
    if min(processes, concurrency) <= 1:
        start = time.perf_counter()
        results, lags = asyncio.run(_collect(url, concurrency, jobs))
        return summarize(concurrency, results, time.perf_counter() - start, lags, 1)
    parts = split(concurrency, jobs, processes)
    context = get_context("spawn")
    # a share per process: each blocks on the barrier, so no process can take two
    with ProcessPoolExecutor(len(parts), context, _join, (context.Barrier(len(parts)),)) as pool:
        outcomes = [f.result() for f in [pool.submit(_collect_together, url, w, part) for w, part in parts]]
    results = [r for outcome in outcomes for r in outcome[0]]
    lags = [lag for outcome in outcomes for lag in outcome[1]]
    elapsed = max(outcome[3] for outcome in outcomes) - min(outcome[2] for outcome in outcomes)
    return summarize(concurrency, results, elapsed, lags, len(parts))


def summarize(
    concurrency: int, results: list[dict], elapsed: float, lags: list[float], processes: int
) -> dict:
    ok = [r for r in results if "error" not in r]
    ttft = [r["ttft"] * 1000 for r in ok]
    itl = [x * 1000 for r in ok for x in r["itl"]]
    lag_ms = [x * 1000 for x in lags]
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else None  # noqa: E731
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "req_per_s": len(ok) / elapsed,
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p99_ms": pct(ttft, 99),
        "itl_p50_ms": pct(itl, 50),
        "itl_p99_ms": pct(itl, 99),
        "itl_share": itl_shares(itl),
        "client_processes": processes,
        "client_lag_p99_ms": pct(lag_ms, 99),
        "client_lag_max_ms": max(lag_ms) if lag_ms else None,
    }

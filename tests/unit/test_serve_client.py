"""The serve benchmark's load generator against a small streaming server on this machine (no engine)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import serve_client  # noqa: E402

BAD_IMAGE = "data:image/jpeg;base64,bad"


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if body["messages"][0]["content"][0]["image_url"]["url"] == BAD_IMAGE:
        return web.json_response({"error": "bad image"}, status=400)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for _ in range(body["max_tokens"]):
        chunk = {"choices": [{"delta": {"content": "x"}}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(0.001)
    await response.write(b"data: [DONE]\n\n")
    return response


@pytest.fixture(scope="module")
def server_url():
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


@pytest.mark.parametrize("processes", [1, 3])
def test_a_level_counts_every_request_token_and_error(server_url: str, processes: int) -> None:
    images = [f"data:image/jpeg;base64,{i}" for i in range(11)] + [BAD_IMAGE]
    level = serve_client.run_level(server_url, 6, images, max_tokens=5, processes=processes)
    assert level["requests"] == 12 and level["errors"] == 1
    assert level["client_processes"] == processes
    assert level["itl_p50_ms"] > 0 and level["ttft_p99_ms"] > 0
    assert level["req_per_s"] > 0
    assert level["client_lag_p99_ms"] is not None and level["client_lag_max_ms"] >= 0


def test_one_worker_stays_in_this_process(server_url: str) -> None:
    level = serve_client.run_level(server_url, 1, ["data:image/jpeg;base64,0"] * 2, max_tokens=3, processes=4)
    assert level["client_processes"] == 1 and level["requests"] == 2 and level["errors"] == 0


def test_split_keeps_the_requests_per_worker() -> None:
    jobs = list(range(256))
    parts = serve_client.split(64, jobs, 3)
    assert [workers for workers, _ in parts] == [22, 21, 21]
    assert [len(share) for _, share in parts] == [88, 84, 84]
    assert [job for _, share in parts for job in share] == jobs
    assert serve_client.split(2, jobs[:8], 4) == [(1, jobs[:4]), (1, jobs[4:8])]


def test_summary_percentiles_and_errors() -> None:
    ok = {"ttft": 0.1, "itl": [0.01, 0.02, 0.03], "e2e": 0.2}
    level = serve_client.summarize(4, [ok, ok, {"error": 500}], 2.0, [0.001, 0.003], 2)
    assert level["requests"] == 3 and level["errors"] == 1 and level["req_per_s"] == 1.0
    assert level["ttft_p50_ms"] == pytest.approx(100.0) and level["itl_p50_ms"] == pytest.approx(20.0)
    assert level["client_lag_max_ms"] == pytest.approx(3.0) and level["client_processes"] == 2


def test_serve_bench_levels_keep_their_request_counts_and_take_fewer_waves() -> None:
    import serve_bench

    assert [serve_bench.requests_for(c) for c in (1, 16, 64)] == [32, 64, 256]  # the counts of every round
    assert [serve_bench.requests_for(c, waves=1) for c in (1, 16, 64)] == [8, 16, 64]

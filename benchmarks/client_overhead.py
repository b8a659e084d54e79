"""What the serve benchmark's client and a Python streaming server add to inter-token latency, no engine.

  python benchmarks/client_overhead.py [--concurrency 64] [--step-ms 22] [--processes 1 4]
A stand-in server (aiohttp, one process) streams every request's tokens on one global clock of
`--step-ms`, as an engine emits one token per running request per step; `serve_client.run_level` drives it
exactly as `serve_bench.py` drives `vllm serve` (same bodies: ~140 KB of base64 image each). Any ITL above
the step is added by the client, the stand-in server and this machine's scheduling: the part of a served
ITL p99 that no engine change can remove. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_client  # noqa: E402

PORT = 8555
IMAGE_BYTES = 105_000  # a 1024x768 JPEG of serve_bench's size, base64 in the body


def serve(port: int, step_s: float) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(body["max_tokens"]):
            await asyncio.sleep(step_s - time.monotonic() % step_s)
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": " w"}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=2**24)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--step-ms", type=float, default=22.0)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(PORT, args.step_ms / 1000)
        return
    url = f"http://127.0.0.1:{PORT}"
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--step-ms", str(args.step_ms)])
    try:
        serve_client.wait_ready(server, url, timeout_s=60)
        image = "data:image/jpeg;base64," + base64.b64encode(os.urandom(IMAGE_BYTES)).decode()
        images, tokens = [image] * (3 * args.concurrency), args.max_tokens
        for processes in args.processes:
            level = serve_client.run_level(url, args.concurrency, images, tokens, processes=processes)
            level["itl_p99_over_step_ms"] = level["itl_p99_ms"] - args.step_ms
            print(json.dumps({"step_ms": args.step_ms, "cpu_count": os.cpu_count(), **level}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

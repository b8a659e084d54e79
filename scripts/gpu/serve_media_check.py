"""Media handling of a running `vllm serve` with the plugin: good media answered, every bad-media class a 4xx.

  python scripts/gpu/serve_media_check.py --base-url http://127.0.0.1:8000 --out media.json [--family qwen-vl]
  python scripts/gpu/serve_media_check.py --base-url URL --out load.json --load 1000 --concurrency 64

Starts no vLLM server: point it at one already serving a Qwen2-VL (or, with --family qwen-vl, a Qwen-VL-Chat)
checkpoint on this machine. For the http cases it starts a small media server of its own on 127.0.0.1
(slow, endless, failing and normal answers), which the vLLM server must be able to reach. Start vLLM
without --allowed-local-media-path (a file:// URL must then be refused) and keep the default fetch deadline
(QWENVL_VLLM_FETCH_TIMEOUT, 10 s) or pass the one used with --deadline.

Checks mode: each case once, JSON of status codes and times; per-item options and video sampling are
checked through `usage.prompt_tokens` against the token counts of qwen-vl-utils sizing (our processors,
equal to qwen-vl-utils in the CPU tests).
Load mode: N requests at concurrency C, about --bad-fraction of them bad (every class in turn); counts good
requests lost (any non-200) and bad ones answered with something other than a 4xx, then checks the server
still answers. For it, start vLLM with QWENVL_VLLM_MAX_MEDIA_BYTES=67108864 so that the endless-download
class stops at 64 MiB instead of the default 512 MiB per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.server
import io
import json
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from PIL import Image

from qwenvl_vllm.processors import fetch_image, fetch_video
from qwenvl_vllm.synthetic import make_image, write_video

REQUEST_TIMEOUT_S = 120


# ---------------------------------------------------------------------------------------------------------
# media
# ---------------------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


class MediaHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        try:
            if self.path.startswith("/status/"):
                self.send_response(int(self.path.rsplit("/", 1)[1]))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/slow":  # never answers within any sane deadline (60 s, then gives up)
                for _ in range(600):
                    time.sleep(0.1)
            elif self.path == "/endless":  # no Content-Length, ~4 GiB: only a streamed byte limit stops it
                self.send_response(200)
                self.end_headers()
                for _ in range(65536):
                    self.wfile.write(b"\0" * 65536)
            elif self.path in self.files:
                body = self.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass


def start_media_server(host: str) -> str:
    httpd = http.server.ThreadingHTTPServer((host, 0), MediaHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://{host}:{httpd.server_address[1]}"


def closed_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Media:
    """Every good and bad input, built once."""

    def __init__(self, media_base: str, host: str, workdir: Path) -> None:
        self.images = {
            f"{w}x{h}": make_image(w, h, seed=i)
            for i, (w, h) in enumerate([(224, 224), (640, 480), (1280, 720), (97, 1000), (1000, 800)])
        }
        self.image_urls = {k: data_url(encode(v, "JPEG"), "image/jpeg") for k, v in self.images.items()}
        self.video_path = write_video(workdir / "clip.mp4", 90, 30.0, 320, 240, seed=1)
        video = self.video_path.read_bytes()
        self.video_url = data_url(video, "video/mp4")
        one_frame = write_video(workdir / "one.mp4", 1, 30.0, 64, 64).read_bytes()
        png = encode(make_image(300, 200, seed=9))
        MediaHandler.files.update({"/ok.png": png, "/clip.mp4": video})
        self.http_image = f"{media_base}/ok.png"
        self.http_video = f"{media_base}/clip.mp4"
        frames = ",".join(
            base64.b64encode(encode(make_image(160, 120, seed=i), "JPEG")).decode() for i in range(4)
        )
        self.jpeg_frames_url = f"data:video/jpeg;base64,{frames}"
        bomb = encode(Image.new("1", (14_000, 14_000)))
        self.bad: dict[str, tuple[str, str]] = {  # class -> (modality, url)
            "bomb_png": ("image", data_url(bomb, "image/png")),
            "truncated_png": ("image", data_url(png[: len(png) // 2], "image/png")),
            "text_as_image": ("image", data_url(b"this is not an image", "image/png")),
            "empty_image": ("image", "data:image/png;base64,"),
            "jpeg_as_video": ("video", data_url(encode(make_image(64, 64), "JPEG"), "video/mp4")),
            "corrupt_video": ("video", data_url(bytes(random.Random(0).randbytes(50_000)), "video/mp4")),
            "truncated_video": ("video", data_url(video[: len(video) // 2], "video/mp4")),
            "one_frame_video": ("video", data_url(one_frame, "video/mp4")),
            "http_404": ("image", f"{media_base}/status/404"),
            "http_500": ("image", f"{media_base}/status/500"),
            "refused_connection": ("image", f"http://{host}:{closed_port(host)}/a.png"),
            "tls_to_plain_http": ("image", self.http_image.replace("http://", "https://")),
            "slow_server": ("image", f"{media_base}/slow"),
            "endless_download": ("image", f"{media_base}/endless"),
            "local_file_not_allowed": ("image", "file:///etc/hostname"),
            "bad_scheme": ("image", "ftp://127.0.0.1/a.png"),
        }


def part(modality: str, url: str) -> dict:
    key = f"{modality}_url"
    return {"type": key, key: {"url": url}}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


# ---------------------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------------------


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str) -> None:
        self.session, self.base_url, self.model = session, base_url.rstrip("/"), model

    async def chat(self, content: list[dict], **extra: object) -> dict:
        body = {"model": self.model, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
        body |= extra
        start = time.monotonic()
        try:
            async with self.session.post(f"{self.base_url}/v1/chat/completions", json=body) as response:
                payload = await response.text()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            payload, status = f"{type(exc).__name__}: {exc}", 0
        result = {"status": status, "elapsed_s": round(time.monotonic() - start, 3)}
        if status == 200:
            result["prompt_tokens"] = json.loads(payload)["usage"]["prompt_tokens"]
        else:
            result["detail"] = payload[:300]
        return result

    async def healthy(self) -> bool:
        try:
            async with self.session.get(f"{self.base_url}/health") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False


async def served_model(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.get(f"{base_url.rstrip('/')}/v1/models") as response:
        return (await response.json())["data"][0]["id"]


def image_tokens(image: Image.Image, **options: object) -> int:
    resized = fetch_image({"image": image, **options})
    return (resized.height // 28) * (resized.width // 28)


def video_tokens(path: Path, **options: object) -> int:
    frames = fetch_video({"video": str(path), **options})
    t, _, h, w = frames.shape
    return (t // 2) * (h // 28) * (w // 28)


# ---------------------------------------------------------------------------------------------------------
# checks mode
# ---------------------------------------------------------------------------------------------------------


async def good_cases(client: Client, media: Media, video: bool) -> dict[str, dict]:
    q = text("Describe.")
    cases: dict[str, dict] = {}
    for name, url in media.image_urls.items():
        cases[f"image_{name}"] = await client.chat([part("image", url), q])
    cases["image_http"] = await client.chat([part("image", media.http_image), q])
    if video:
        cases["video_data_url"] = await client.chat([part("video", media.video_url), q])
        cases["video_http"] = await client.chat([part("video", media.http_video), q])
        cases["video_jpeg_frames"] = await client.chat([part("video", media.jpeg_frames_url), q])
    for result in cases.values():
        result["ok"] = result["status"] == 200
    return cases


async def token_cases(client: Client, media: Media, video: bool) -> dict[str, dict]:
    """Per-item options and video sampling change prompt_tokens exactly as qwen-vl-utils sizing says."""
    other = media.images["640x480"]
    two = [part("image", media.image_urls["1000x800"]), part("image", media.image_urls["640x480"]), text("?")]
    small = {"max_pixels": 64 * 28 * 28}
    plain = await client.chat(two)
    items = await client.chat(two, mm_processor_kwargs={"items": {"image": {"1": small}}})
    expected = image_tokens(other) - image_tokens(other, **small)
    cases = {"items_image": _delta(plain, items, expected)}
    if video:
        one = [part("video", media.video_url), text("?")]
        fps2 = await client.chat(one)
        fps1 = await client.chat(one, media_io_kwargs={"video": {"fps": 1.0}})
        cases["video_fps"] = _delta(
            fps2, fps1, video_tokens(media.video_path) - video_tokens(media.video_path, fps=1.0)
        )
        sized = await client.chat(one, mm_processor_kwargs={"total_pixels": 200_000})
        cases["video_total_pixels"] = _delta(
            fps2, sized, video_tokens(media.video_path) - video_tokens(media.video_path, total_pixels=200_000)
        )
    return cases


def _delta(before: dict, after: dict, expected: int) -> dict:
    got = before.get("prompt_tokens", 0) - after.get("prompt_tokens", 0)
    ok = before["status"] == after["status"] == 200 and got == expected
    return {
        "statuses": [before["status"], after["status"]],
        "token_delta": got,
        "expected_delta": expected,
        "ok": ok,
    }


async def bad_cases(client: Client, media: Media, deadline_s: float) -> dict[str, dict]:
    q = text("Describe.")
    cases: dict[str, dict] = {}
    for name, (modality, url) in media.bad.items():
        cases[name] = await client.chat([part(modality, url), q])
    video = [part("video", media.video_url), q]
    cases["unknown_video_option"] = await client.chat(video, media_io_kwargs={"video": {"fsp": 1}})
    cases["sizing_key_in_media_io"] = await client.chat(
        video, media_io_kwargs={"video": {"max_pixels": 1000}}
    )
    image = [part("image", media.image_urls["224x224"]), q]
    cases["item_index_out_of_range"] = await client.chat(
        image, mm_processor_kwargs={"items": {"image": {"3": {"max_pixels": 50_000}}}}
    )
    cases["item_bad_value"] = await client.chat(
        image, mm_processor_kwargs={"items": {"image": {"0": {"max_pixels": -1}}}}
    )
    for name, result in cases.items():
        result["ok"] = 400 <= result["status"] < 500
        if name == "slow_server":  # the total deadline, with a little slack for the request itself
            result["ok"] = result["ok"] and result["elapsed_s"] < deadline_s + 5
    return cases


async def run_checks(client: Client, media: Media, args: argparse.Namespace) -> dict:
    video = args.family == "qwen2-vl"
    result = {
        "good": await good_cases(client, media, video),
        "tokens": await token_cases(client, media, video) if video else {},
        "bad": await bad_cases(client, media, args.deadline),
    }
    result["alive_after"] = await client.healthy() and (await client.chat([text("hi")]))["status"] == 200
    checks = [c["ok"] for group in ("good", "tokens", "bad") for c in result[group].values()]
    result["summary"] = {
        "cases": len(checks),
        "failed": checks.count(False),
        "alive_after": result["alive_after"],
    }
    return result


# ---------------------------------------------------------------------------------------------------------
# load mode
# ---------------------------------------------------------------------------------------------------------


def load_plan(
    media: Media, n: int, bad_fraction: float, video: bool, seed: int = 0
) -> list[tuple[str, list[dict]]]:
    """(kind, content) for n requests: good images of several sizes (and videos), bad classes in turn."""
    rng = random.Random(seed)
    good: list[Callable[[], list[dict]]] = [
        lambda u=u: [part("image", u), text("?")] for u in media.image_urls.values()
    ]
    good.append(lambda: [part("image", media.http_image), text("?")])
    if video:
        good += [
            lambda: [part("video", media.video_url), text("?")],
            lambda: [part("video", media.jpeg_frames_url)],
        ]
    bad_names = [k for k, (modality, _) in media.bad.items() if video or modality == "image"]
    plan, bad_index = [], 0
    for _ in range(n):
        if rng.random() < bad_fraction:
            name = bad_names[bad_index % len(bad_names)]
            bad_index += 1
            modality, url = media.bad[name]
            plan.append((f"bad:{name}", [part(modality, url), text("?")]))
        else:
            plan.append(("good", rng.choice(good)()))
    return plan


async def run_load(client: Client, media: Media, args: argparse.Namespace) -> dict:
    plan = load_plan(media, args.load, args.bad_fraction, args.family == "qwen2-vl")
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one(kind: str, content: list[dict]) -> tuple[str, dict]:
        async with semaphore:
            return kind, await client.chat(content)

    start = time.monotonic()
    results = await asyncio.gather(*(one(kind, content) for kind, content in plan))
    wall = time.monotonic() - start
    good = [r for kind, r in results if kind == "good"]
    bad = [(kind, r) for kind, r in results if kind != "good"]
    lost = [r for r in good if r["status"] != 200]
    not_4xx = [{"kind": kind, **r} for kind, r in bad if not 400 <= r["status"] < 500]
    alive = await client.healthy() and (await client.chat([text("hi")]))["status"] == 200
    return {
        "requests": len(results),
        "concurrency": args.concurrency,
        "wall_s": round(wall, 1),
        "good": len(good),
        "good_lost": len(lost),
        "lost_examples": lost[:10],
        "bad": len(bad),
        "bad_4xx": len(bad) - len(not_4xx),
        "bad_not_4xx": not_4xx[:20],
        "bad_classes": sorted({kind for kind, _ in bad}),
        "alive_after": alive,
        "ok": not lost and not not_4xx and alive,
    }


async def main_async(args: argparse.Namespace) -> dict:
    media_base = start_media_server(args.media_host)
    with tempfile.TemporaryDirectory() as workdir:
        media = Media(media_base, args.media_host, Path(workdir))
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=max(args.concurrency, 8))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            client = Client(session, args.base_url, args.model or await served_model(session, args.base_url))
            mode = run_load if args.load else run_checks
            return {
                "base_url": args.base_url,
                "model": client.model,
                "family": args.family,
                **await mode(client, media, args),
            }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base-url", required=True, help="of the running vllm serve, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--model", help="served model name (default: the first of /v1/models)")
    parser.add_argument(
        "--family", choices=["qwen2-vl", "qwen-vl"], default="qwen2-vl", help="qwen-vl: images only"
    )
    parser.add_argument("--media-host", default="127.0.0.1", help="address of the local media server")
    parser.add_argument(
        "--deadline", type=float, default=10.0, help="QWENVL_VLLM_FETCH_TIMEOUT of the server"
    )
    parser.add_argument("--load", type=int, default=0, help="load mode: number of requests")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    summary = (
        {k: result[k] for k in ("good", "good_lost", "bad", "bad_4xx", "alive_after", "ok")}
        if args.load
        else result["summary"]
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""`vllm serve` with the plugin: OpenAI chat requests with images/videos succeed, bad ones get 4xx.

  python scripts/gpu/serve_check.py --ckpt DIR --out result.json [--video] [--log server.log]
Starts an unchanged `vllm serve`, checks its log names our model class, sends good and bad requests,
and checks the server stays up and keeps answering after every bad one.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import io
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import requests

from qwenvl_vllm.synthetic import make_image, write_video

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from serve_client import wait_ready  # noqa: E402

PORT = 8011


def jpeg_b64(width: int, height: int, seed: int) -> str:
    buf = io.BytesIO()
    make_image(width, height, seed=seed).save(buf, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def chat(content: list[dict], max_tokens: int = 16, **extra: object) -> requests.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    body |= extra
    return requests.post(f"http://127.0.0.1:{PORT}/v1/chat/completions", json=body, timeout=120)


# Random weights never emit a box on their own; vLLM's structured outputs make the reply take the v1
# grounding form, so the check covers the path a real reply takes: the grounding tokens <ref>/<box> survive
# detokenisation in the server and parse_boxes maps them to pixels of the original image.
POINT = r"\([0-9]{1,3},[0-9]{1,3}\)"
GROUNDING_REGEX = rf"<ref>[a-z]{{2,8}}( [a-z]{{2,8}})?</ref><box>{POINT},{POINT}</box>"


def grounding_boxes() -> dict:
    from qwenvl_vllm.grounding import parse_boxes

    content = [image_part(jpeg_b64(800, 600, 7)), text_part("Where is the red box? Answer with a box.")]
    response = chat(content, 80, structured_outputs={"regex": GROUNDING_REGEX})
    reply = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else ""
    boxes = parse_boxes(reply or "", image_size=(800, 600))
    inside = all(0 <= b["box"][0] <= 800 and 0 <= b["box"][3] <= 600 for b in boxes)
    return {
        "status": response.status_code,
        "reply": (reply or response.text)[:300],
        "boxes": boxes,
        "ok": response.status_code == 200 and len(boxes) == 1 and inside,
        "server_ok_after": chat([text_part("hi")]).status_code == 200,
    }


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def start_server(
    ckpt: str, media: Path, log: Path, extra: list[str], max_len: int, video: bool
) -> subprocess.Popen:
    # the `vllm` console script is the same entry point; -m works where only a --target install exists
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
        ckpt,
        "--served-model-name",
        "m",
        "--port",
        str(PORT),
        "--max-model-len",
        str(max_len),
    ]
    limits = '{"image": 2, "video": 1}' if video else '{"image": 2}'
    cmd += ["--allowed-local-media-path", str(media), "--limit-mm-per-prompt", limits]
    cmd += ["--gpu-memory-utilization", "0.8", *extra]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def media_server(root: Path) -> str:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", default="server.log")
    parser.add_argument("--video", action="store_true")
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--grounding", action="store_true", help="also ask a grounding question")
    parser.add_argument("--extra", nargs="*", default=["--enforce-eager"])
    args = parser.parse_args()
    media = Path(tempfile.mkdtemp(prefix="media"))
    make_image(640, 480, seed=1).save(media / "local.jpg")
    if args.video:
        write_video(media / "clip.mp4", 40, 10.0, 320, 240)
    outside = Path(tempfile.mkdtemp(prefix="outside")) / "secret.jpg"
    make_image(64, 64).save(outside)
    base_url = media_server(media)
    is_v1 = json.loads((Path(args.ckpt) / "config.json").read_text()).get("model_type") == "qwen"
    proc = start_server(args.ckpt, media, Path(args.log), args.extra, args.max_model_len, args.video)
    checks: dict[str, dict] = {}
    try:
        wait_ready(proc, f"http://127.0.0.1:{PORT}", timeout_s=420)
        good = [image_part(jpeg_b64(1024, 768, 2)), text_part("Describe the image.")]
        cases = {
            "image_base64": (good, 200),
            "image_file": ([image_part(f"file://{media / 'local.jpg'}"), text_part("What is this?")], 200),
            "image_http": ([image_part(f"{base_url}/local.jpg"), text_part("What is this?")], 200),
            "two_images": (
                [image_part(jpeg_b64(300, 200, 3)), image_part(jpeg_b64(200, 300, 4)), text_part("Compare.")],
                200,
            ),
            "bad_base64": ([image_part("data:image/jpeg;base64,@@@@"), text_part("x")], 400),
            "not_an_image": (
                [
                    image_part("data:image/png;base64," + base64.b64encode(b"junk" * 50).decode()),
                    text_part("x"),
                ],
                400,
            ),
            "file_outside_allowed": ([image_part(f"file://{outside}"), text_part("x")], 400),
            "too_many_images": ([image_part(jpeg_b64(64, 64, i)) for i in range(3)] + [text_part("x")], 400),
            "unknown_part": ([{"type": "hologram", "hologram": "x"}, text_part("x")], 400),
            # Qwen2-VL refuses aspect ratios over 200; Qwen-VL v1 resizes every image to 448x448
            "extreme_aspect": ([image_part(jpeg_b64(4000, 10, 5)), text_part("x")], 200 if is_v1 else 400),
        }
        if args.video:
            cases["video_file"] = (
                [
                    {"type": "video_url", "video_url": {"url": f"file://{media / 'clip.mp4'}"}},
                    text_part("What?"),
                ],
                200,
            )
        if args.grounding:
            cases["grounding"] = ([image_part(jpeg_b64(800, 600, 6)), text_part("Find the red box.")], 200)
        for name, (content, expected) in cases.items():
            response = chat(content)
            after = chat(good)  # the server keeps serving other requests after a bad one
            checks[name] = {
                "status": response.status_code,
                "expected": expected,
                "ok": (response.status_code == expected)
                if expected == 200
                else 400 <= response.status_code < 500,
                "server_ok_after": after.status_code == 200,
                "body": response.text[:300],
            }
            print(
                name, checks[name]["status"], checks[name]["ok"], checks[name]["server_ok_after"], flush=True
            )
        if args.grounding:
            checks["grounding_boxes"] = grounding_boxes()
            print("grounding_boxes", checks["grounding_boxes"], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    log_text = Path(args.log).read_text(errors="replace")
    result = {
        "ckpt": args.ckpt,
        "plugin_in_log": "qwenvl-vllm registered" in log_text or "qwenvl_vllm" in log_text,
        "checks": checks,
        "all_ok": all(c["ok"] and c["server_ok_after"] for c in checks.values()),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "checks"}))
    sys.exit(0 if result["all_ok"] else 1)


if __name__ == "__main__":
    main()

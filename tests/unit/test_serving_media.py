"""The hardened media connector `vllm serve` loads, called directly: good media as qwen-vl-utils decodes it,
and every class of bad media a ValueError (which vLLM's API server answers with 400).

http cases run against a local server on 127.0.0.1 only; deadlines are kept short through our settings.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image
from qwen_vl_utils import vision_process as qvu

from qwenvl_vllm.serving import MEDIA_CONNECTOR_ENV, register_serving
from qwenvl_vllm.serving.connector import MEDIA_CONNECTOR_NAME, QwenVLMediaConnector
from qwenvl_vllm.serving.video_loader import QWEN2_VL_VIDEO_PROCESSOR
from qwenvl_vllm.synthetic import make_image, write_video


def _encode(image: Image.Image, fmt: str = "PNG", **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, length: bool = True) -> None:
        self.send_response(status)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path
        try:
            if path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]), b"error page")
            elif path == "/slow":  # answers after the test's deadline, in small steps so the thread ends
                for _ in range(30):
                    time.sleep(0.1)
                self._send(200, b"late")
            elif path == "/trickle":  # headers at once, then one byte per 0.1 s
                self.send_response(200)
                self.send_header("Content-Length", "40")
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif path == "/endless":  # no Content-Length: only the streamed byte count can stop it
                self.send_response(200)
                self.end_headers()
                for _ in range(2000):
                    self.wfile.write(b"\0" * 65536)
            elif path == "/lying":  # a Content-Length far below what is sent
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                self.wfile.write(b"\0" * 200_000)
            else:
                self._send(200, self.files[path]) if path in self.files else self._send(404, b"not found")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def url(path: str, content: bytes | None = None) -> str:
        if content is not None:
            _Handler.files[path] = content
        return f"http://127.0.0.1:{httpd.server_address[1]}{path}"

    yield url
    httpd.shutdown()


@pytest.fixture
def short_deadline(monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_FETCH_TIMEOUT", "0.5")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fetch_both(connector: QwenVLMediaConnector, url: str) -> list[Image.Image]:
    """The image through the blocking path and the async path (the one `vllm serve` uses)."""
    return [connector.fetch_image(url), asyncio.run(connector.fetch_image_async(url))]


def _assert_client_error(connector: QwenVLMediaConnector, url: str, match: str | None = None) -> None:
    with pytest.raises(ValueError, match=match):
        connector.fetch_image(url)
    with pytest.raises(ValueError, match=match):
        asyncio.run(connector.fetch_image_async(url))


# ---------------------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------------------


def test_default_connector_unless_the_user_chose_one(monkeypatch) -> None:
    from vllm import envs
    from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY

    monkeypatch.setenv(MEDIA_CONNECTOR_ENV, "placeholder")  # restored after the test
    monkeypatch.delenv(MEDIA_CONNECTOR_ENV)
    register_serving()
    assert envs.VLLM_MEDIA_CONNECTOR == MEDIA_CONNECTOR_NAME
    assert isinstance(MEDIA_CONNECTOR_REGISTRY.load(envs.VLLM_MEDIA_CONNECTOR), QwenVLMediaConnector)
    monkeypatch.setenv(MEDIA_CONNECTOR_ENV, "http")  # the opt-out
    register_serving()
    assert type(MEDIA_CONNECTOR_REGISTRY.load(envs.VLLM_MEDIA_CONNECTOR)).__name__ == "MediaConnector"


# ---------------------------------------------------------------------------------------------------------
# good media: decoded as qwen-vl-utils does
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_images_decode_as_qwen_vl_utils(server, mode: str) -> None:
    data = _encode(make_image(67, 45, mode, seed=3))
    expected = np.asarray(qvu.to_rgb(Image.open(io.BytesIO(data))))
    connector = QwenVLMediaConnector()
    for url in (_data_url(data), server(f"/img-{mode}.png", data)):
        for image in _fetch_both(connector, url):
            assert np.array_equal(np.asarray(image), expected)


def test_exif_orientation_is_not_applied(server) -> None:
    """qwen-vl-utils decodes pixels as stored; vLLM's own connector rotates by EXIF."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(make_image(40, 24, seed=2), "JPEG", exif=exif)
    expected = np.asarray(qvu.to_rgb(Image.open(io.BytesIO(data))))
    image = QwenVLMediaConnector().fetch_image(_data_url(data, "image/jpeg"))
    assert np.array_equal(np.asarray(image), expected) and image.size == (40, 24)


def test_local_files_only_under_the_allowed_folder(tmp_path) -> None:
    allowed = tmp_path / "media"
    allowed.mkdir()
    data = _encode(make_image(30, 20))
    (allowed / "a.png").write_bytes(data)
    (tmp_path / "outside.png").write_bytes(data)
    inside = QwenVLMediaConnector(allowed_local_media_path=str(allowed))
    assert np.asarray(inside.fetch_image(f"file://{allowed}/a.png")).shape == (20, 30, 3)
    _assert_client_error(inside, f"file://{tmp_path}/outside.png", "allowed-local-media-path")
    _assert_client_error(inside, f"file://{allowed}/../outside.png", "allowed-local-media-path")
    _assert_client_error(inside, f"file://{allowed}/missing.png")
    _assert_client_error(QwenVLMediaConnector(), f"file://{allowed}/a.png", "allowed-local-media-path")


# ---------------------------------------------------------------------------------------------------------
# bad images
# ---------------------------------------------------------------------------------------------------------


def test_decompression_bomb_refused_from_the_header() -> None:
    """A 14000x14000 bilevel PNG: tiny file, 196 M pixels (over PIL's and our limit)."""
    data = _encode(Image.new("1", (14_000, 14_000)))
    assert len(data) < 200_000
    _assert_client_error(QwenVLMediaConnector(), _data_url(data), "decompression bomb")


def test_pixel_limit_setting(monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_MAX_IMAGE_PIXELS", "1000")
    _assert_client_error(QwenVLMediaConnector(), _data_url(_encode(make_image(50, 50))), "over the limit")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"just some text, not an image",
        _encode(make_image(64, 64), "PNG")[:300],
        _encode(make_image(64, 64), "JPEG")[:400],
        b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "corrupt-png"],
)
def test_bad_image_bytes(server, data: bytes) -> None:
    connector = QwenVLMediaConnector()
    _assert_client_error(connector, _data_url(data))
    _assert_client_error(connector, server(f"/bad-{hash(data)}.png", data))


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png,not-base64",
        "data:image/png;base64,@@@@",
        "ftp://127.0.0.1/a.png",
        "http://[::1/a.png",
        "nothing",
    ],
)
def test_bad_urls(url: str) -> None:
    _assert_client_error(QwenVLMediaConnector(), url)


def test_data_url_byte_limit(monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_MAX_MEDIA_BYTES", "1000")
    _assert_client_error(QwenVLMediaConnector(), _data_url(_encode(make_image(200, 200))), "limit")


# ---------------------------------------------------------------------------------------------------------
# fetching over http
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 410, 500, 503])
def test_http_errors(server, status: int) -> None:
    _assert_client_error(QwenVLMediaConnector(), server(f"/status/{status}"), f"HTTP {status}")


def test_refused_connection() -> None:
    _assert_client_error(QwenVLMediaConnector(), f"http://127.0.0.1:{_free_port()}/a.png")


def test_dns_failure(monkeypatch) -> None:
    """The resolver answers "no such host" (no network here, so the OS call is replaced for one name)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "media.example.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    _assert_client_error(QwenVLMediaConnector(), "http://media.example.test/a.png", "host name not found")


def test_tls_error(server) -> None:
    """https to a server that speaks plain http: the TLS handshake fails."""
    url = server("/tls.png", _encode(make_image(8, 8))).replace("http://", "https://")
    _assert_client_error(QwenVLMediaConnector(), url)


@pytest.mark.parametrize("path", ["/slow", "/trickle"])
def test_total_deadline(server, short_deadline, path: str) -> None:
    _assert_client_error(QwenVLMediaConnector(), server(path), "within 0.5 s")


@pytest.mark.parametrize("path", ["/endless", "/lying"])
def test_byte_limit_while_streaming(server, monkeypatch, path: str) -> None:
    monkeypatch.setenv("QWENVL_VLLM_MAX_MEDIA_BYTES", "100000")
    with pytest.raises(ValueError):
        QwenVLMediaConnector().fetch_image(server(path))


def test_blocking_fetch_from_a_thread_running_an_event_loop(server) -> None:
    """vLLM's synchronous parser may run where a loop is running: the fetch must not nest event loops."""
    data = _encode(make_image(20, 10, seed=6))
    url = server("/in-loop.png", data)

    async def inside_a_loop() -> Image.Image:
        return QwenVLMediaConnector().fetch_image(url)

    assert np.array_equal(np.asarray(asyncio.run(inside_a_loop())), np.asarray(Image.open(io.BytesIO(data))))


def test_declared_length_over_the_limit(server, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_MAX_MEDIA_BYTES", "1000")
    url = server("/big.png", _encode(make_image(300, 300)))
    _assert_client_error(QwenVLMediaConnector(), url, "limit")


# ---------------------------------------------------------------------------------------------------------
# videos
# ---------------------------------------------------------------------------------------------------------


def _fetch_video(url: str, **media_io_kwargs):
    connector = QwenVLMediaConnector(media_io_kwargs={"video": media_io_kwargs} if media_io_kwargs else None)
    register_serving()
    return asyncio.run(connector.fetch_video_async(url, video_processor=QWEN2_VL_VIDEO_PROCESSOR))


@pytest.mark.parametrize(
    "data",
    [b"", b"plain text " * 50, _encode(make_image(64, 48), "JPEG"), _encode(make_image(64, 48), "PNG")],
    ids=["empty", "text", "jpeg-as-video", "png-as-video"],
)
def test_bad_video_bytes(server, data: bytes) -> None:
    for url in (_data_url(data, "video/mp4"), server(f"/badvideo-{hash(data)}.mp4", data)):
        with pytest.raises(ValueError):
            _fetch_video(url)


def test_truncated_and_one_frame_videos(tmp_path, server) -> None:
    data = write_video(tmp_path / "v.mp4", 30, 10.0, 32, 24).read_bytes()
    one = write_video(tmp_path / "one.mp4", 1, 10.0, 32, 24).read_bytes()
    frames, _ = _fetch_video(server("/v.mp4", data))
    assert frames.shape[0] == 6  # 3 s at fps 2
    for bad in (data[: len(data) // 2], one):
        with pytest.raises(ValueError):
            _fetch_video(_data_url(bad, "video/mp4"))


def test_bad_video_options(tmp_path) -> None:
    url = _data_url(write_video(tmp_path / "v.mp4", 30, 10.0, 32, 24).read_bytes(), "video/mp4")
    with pytest.raises(ValueError):
        _fetch_video(url, video_backend="no-such-backend")
    with pytest.raises(ValueError, match="mm_processor_kwargs"):
        _fetch_video(url, max_pixels=10_000)


def test_jpeg_frame_list_video() -> None:
    """vLLM's multi-frame data:video/jpeg form; frames decoded by our image decoding."""
    frames = [make_image(32, 24, seed=i) for i in range(4)]
    parts = ",".join(base64.b64encode(_encode(f, "JPEG")).decode() for f in frames)
    video, _ = _fetch_video(f"data:video/jpeg;base64,{parts}")
    assert video.shape == (4, 24, 32, 3)
    bomb = base64.b64encode(_encode(Image.new("1", (14_000, 14_000)))).decode()
    with pytest.raises(ValueError, match="decompression bomb"):
        _fetch_video(f"data:video/jpeg;base64,{parts},{bomb}")


# ---------------------------------------------------------------------------------------------------------
# Qwen-VL v1 through the same connector
# ---------------------------------------------------------------------------------------------------------


def test_qwen_vl_v1_processes_connector_images(tmp_path, cpu_pixels) -> None:
    """Images our connector returns go through the v1 processor as the released recipe prescribes."""
    import torch
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.processing import ProcessorInputs, TimingContext

    from qwenvl_vllm.checkpoint.writer import write_checkpoint
    from qwenvl_vllm.model_registry import register
    from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values

    register()
    ckpt = write_checkpoint("tiny-qwen-vl", "bf16", tmp_path / "tiny-qwen-vl", seed=3)
    processor = MULTIMODAL_REGISTRY.create_processor(
        ModelConfig(model=str(ckpt), limit_mm_per_prompt={"image": 1})
    )
    data = _encode(make_image(90, 60, "RGBA", seed=4))
    image = QwenVLMediaConnector().fetch_image(_data_url(data))
    items = processor.info.parse_mm_data({"image": [image]})
    out = processor.apply(
        ProcessorInputs("Picture 1: <img></img>\nWhat?", items), TimingContext(enabled=False)
    )
    expected = qwen_vl_pixel_values([qvu.to_rgb(Image.open(io.BytesIO(data)))])
    torch.testing.assert_close(out["mm_kwargs"]["image"][0]["pixel_values"].data, expected[0], rtol=0, atol=0)

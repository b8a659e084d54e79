"""Every bad input gets a clear ValueError naming the problem, never a crash or a hang."""

from __future__ import annotations

import io
import struct
import zlib

import pytest

from qwenvl_vllm import processors
from qwenvl_vllm.synthetic import make_image, write_video


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    make_image(width, height).save(buf, format="PNG")
    return buf.getvalue()


def test_unknown_content_type() -> None:
    with pytest.raises(ValueError, match="unknown content type"):
        processors.process_vision_info([{"role": "user", "content": [{"type": "audio", "audio": "x.wav"}]}])


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="not found"):
        processors.fetch_image({"image": str(tmp_path / "nope.png")})
    with pytest.raises(ValueError, match="not found"):
        processors.fetch_video({"video": f"file://{tmp_path / 'nope.mp4'}"})


def test_undecodable_bytes(tmp_path) -> None:
    path = tmp_path / "junk.png"
    path.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ValueError, match="cannot decode"):
        processors.fetch_image({"image": str(path)})
    video = tmp_path / "junk.mp4"
    video.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match="cannot decode video"):
        processors.fetch_video({"video": str(video)})


def test_truncated_image(tmp_path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes(_png(300, 300)[:500])
    with pytest.raises(ValueError, match="cannot decode"):
        processors.fetch_image({"image": str(path)})


def test_bad_base64() -> None:
    with pytest.raises(ValueError, match="base64"):
        processors.fetch_image({"image": "data:image/png;base64,@@@not-base64@@@"})
    with pytest.raises(ValueError, match="base64"):
        processors.fetch_image({"image": "data:image/png,rawdata"})


def test_truncated_lazy_pil_image(tmp_path) -> None:
    # a PIL object opened by the caller is decoded only on conversion: its OSError becomes ValueError
    from PIL import Image

    path = tmp_path / "cut.png"
    path.write_bytes(_png(300, 300)[:500])
    with pytest.raises(ValueError, match="cannot convert"):
        processors.fetch_image({"image": Image.open(path)})


@pytest.mark.parametrize(
    "options",
    [
        {"min_pixels": "1000"},
        {"max_pixels": [5000]},
        {"max_pixels": float("nan")},
        {"min_pixels": float("inf"), "max_pixels": float("inf")},
        {"resized_height": "100", "resized_width": 100},
    ],
    ids=str,
)
def test_bad_image_size_options(options: dict) -> None:
    with pytest.raises(ValueError, match="number|max_pixels|min_pixels"):
        processors.fetch_image({"image": make_image(64, 64), **options})


@pytest.mark.parametrize(
    "options",
    [
        {"nframes": "4"},
        {"nframes": float("inf")},
        {"fps": None},
        {"min_frames": "2"},
        {"max_frames": float("inf")},
        {"video_start": "1"},
        {"video_end": [2]},
        {"min_pixels": None},
        {"min_pixels": float("inf")},
        {"max_pixels": "40000"},
        # qwen-vl-utils evaluates total_pixels even when resized_* is given
        {"total_pixels": "x", "resized_height": 56, "resized_width": 56},
    ],
    ids=str,
)
def test_bad_video_options(tmp_path, options: dict) -> None:
    path = write_video(tmp_path / "v.mp4", 10, 5.0, 64, 64)
    with pytest.raises(ValueError, match="must be a number|cannot compute|invalid min_pixels"):
        processors.fetch_video({"video": str(path), **options})


@pytest.mark.parametrize(
    "options, match",
    [
        ({"sample_fps": 0}, "sample_fps"),
        ({"sample_fps": "2"}, "sample_fps"),
        ({"raw_fps": None}, "raw_fps"),
    ],
)
def test_bad_frame_list_fps(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        processors.fetch_video({"video": [make_image(64, 64)] * 2, **options})


@pytest.mark.parametrize(
    "options", [{"min_pixels": 1, "max_pixels": 100}, {"min_pixels": 0, "total_pixels": 10}]
)
def test_max_pixels_too_small_for_one_cell(tmp_path, options: dict) -> None:
    # smart_resize floors a side to 0 (as in qwen-vl-utils); torchvision would raise a RuntimeError
    path = write_video(tmp_path / "v.mp4", 10, 5.0, 32, 320)
    with pytest.raises(ValueError, match="empty"):
        processors.fetch_video({"video": str(path), "nframes": 4, **options})
    with pytest.raises(ValueError, match="empty"):
        processors.fetch_image({"image": make_image(30, 300), "min_pixels": 1, "max_pixels": 100})


def test_frame_list_of_mixed_sizes() -> None:
    frames = [make_image(200, 120), make_image(200, 400)]
    with pytest.raises(ValueError, match="one size"):
        processors.fetch_video({"video": frames})


def test_aspect_ratio() -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        processors.fetch_image({"image": make_image(2010, 10)})


def test_decompression_bomb(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_VLLM_MAX_IMAGE_PIXELS", "10000")
    path = tmp_path / "big.png"
    path.write_bytes(_png(200, 100))
    with pytest.raises(ValueError, match="over the limit"):
        processors.fetch_image({"image": str(path)})


def test_real_bomb_header_is_refused_before_decoding(tmp_path) -> None:
    # a PNG header announcing 60000x60000 pixels: refused from the header, nothing is decoded
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 1, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(ValueError, match="decompression bomb"):
        processors.fetch_image({"image": str(path)})


def test_fps_and_nframes_together(tmp_path) -> None:
    path = write_video(tmp_path / "v.mp4", 10, 5.0, 64, 64)
    with pytest.raises(ValueError, match="either `fps` or `nframes`"):
        processors.fetch_video({"video": str(path), "fps": 1.0, "nframes": 4})


@pytest.mark.parametrize("nframes", [0, 1, 40])
def test_nframes_out_of_range(tmp_path, nframes: int) -> None:
    path = write_video(tmp_path / "v.mp4", 10, 5.0, 64, 64)
    with pytest.raises(ValueError, match="nframes should be in interval"):
        processors.fetch_video({"video": str(path), "nframes": nframes})


def test_video_with_one_frame(tmp_path) -> None:
    path = write_video(tmp_path / "one.mp4", 1, 5.0, 64, 64)
    with pytest.raises(ValueError, match="nframes"):
        processors.fetch_video({"video": str(path)})
    with pytest.raises(ValueError, match="empty"):
        processors.fetch_video({"video": []})


def test_min_pixels_above_max_pixels() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        processors.fetch_image({"image": make_image(64, 64), "min_pixels": 10_000, "max_pixels": 5_000})


@pytest.mark.parametrize("h, w", [(0, 100), (-5, 100), (100, 0)])
def test_non_positive_sizes(h: int, w: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        processors.fetch_image({"image": make_image(64, 64), "resized_height": h, "resized_width": w})
    with pytest.raises(ValueError, match="positive"):
        processors.smart_resize(h, w)


@pytest.mark.parametrize("messages", [[], [[]], "text", [{"role": "user"}]])
def test_empty_or_malformed_messages(messages) -> None:
    with pytest.raises(ValueError):
        processors.process_vision_info(messages)


def test_url_byte_limit(http_server, monkeypatch) -> None:
    url = http_server(_png(200, 200), "PNG")
    monkeypatch.setenv("QWENVL_VLLM_MAX_MEDIA_BYTES", "1000")
    with pytest.raises(ValueError, match="limit"):
        processors.fetch_image({"image": url})


def test_url_timeout_and_errors(monkeypatch) -> None:
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    monkeypatch.setenv("QWENVL_VLLM_FETCH_TIMEOUT", "0.5")
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow.png"
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(pytest.raises(ValueError, processors.fetch_image, {"image": url}))
    )
    worker.start()
    worker.join(timeout=20)
    listener.close()
    assert not worker.is_alive() and result, "URL fetch did not time out"


def test_http_404(http_server) -> None:
    url = http_server(_png(20, 20), "PNG").rsplit("/", 1)[0] + "/missing.png"
    with pytest.raises(ValueError, match="could not fetch"):
        processors.fetch_image({"image": url})


def test_local_media_path_restriction(tmp_path, monkeypatch) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.png").write_bytes(_png(64, 64))
    (tmp_path / "secret.png").write_bytes(_png(64, 64))
    monkeypatch.setenv("QWENVL_VLLM_ALLOWED_LOCAL_MEDIA_PATH", str(allowed))
    assert processors.fetch_image({"image": str(allowed / "ok.png")}).size == (56, 56)
    with pytest.raises(ValueError, match="outside the allowed folder"):
        processors.fetch_image({"image": str(allowed / ".." / "secret.png")})


def test_data_url_byte_limit(monkeypatch) -> None:
    import base64

    url = "data:image/png;base64," + base64.b64encode(_png(200, 200)).decode()
    monkeypatch.setenv("QWENVL_VLLM_MAX_MEDIA_BYTES", "1000")
    with pytest.raises(ValueError, match="limit"):
        processors.fetch_image({"image": url})

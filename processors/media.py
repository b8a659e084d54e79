"""Safe reading of media bytes: local paths, file://, http(s) and base64 data URLs, with limits."""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path

import requests
from PIL import Image, UnidentifiedImageError

from qwenvl_vllm.settings import get_settings

HTTP_SCHEMES = ("http://", "https://")


def _check_local_path(path: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    allowed = get_settings().allowed_local_media_path
    if allowed is not None:
        root = Path(allowed).expanduser().resolve()
        if root != resolved and root not in resolved.parents:
            raise ValueError(f"local media path {path!r} is outside the allowed folder {allowed!r}")
    if not resolved.is_file():
        raise ValueError(f"media file not found: {path!r}")
    max_bytes = get_settings().max_media_bytes
    if resolved.stat().st_size > max_bytes:
        raise ValueError(f"media file {path!r} is larger than the {max_bytes}-byte limit")
    return resolved


def local_path(source: str) -> Path:
    """A checked local path for `source` given as a plain path or a file:// URL."""
    return _check_local_path(source[7:] if source.startswith("file://") else source)


def fetch_url(url: str) -> bytes:
    """GET `url` with the configured timeout and byte limit; errors become ValueError."""
    settings = get_settings()
    try:
        with requests.get(url, stream=True, timeout=settings.fetch_timeout_s) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if size > settings.max_media_bytes:
                    raise ValueError(f"{url!r} is larger than the {settings.max_media_bytes}-byte limit")
                chunks.append(chunk)
    except requests.RequestException as exc:
        raise ValueError(f"could not fetch {url!r}: {exc}") from exc
    return b"".join(chunks)


def decode_base64_url(data_url: str) -> bytes:
    if "base64," not in data_url:
        raise ValueError("data URL must be base64-encoded (data:<mime>;base64,...)")
    payload = data_url.split("base64,", 1)[1]
    max_bytes = get_settings().max_media_bytes
    if len(payload) * 3 // 4 > max_bytes:  # checked before decoding, like a download's byte limit
        raise ValueError(f"data URL is larger than the {max_bytes}-byte limit")
    try:
        # not validate=True: like qwen-vl-utils, skip characters outside the alphabet, so MIME-style
        # base64 with line breaks or spaces decodes
        return base64.b64decode(payload)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64 data in data URL: {exc}") from exc


def source_bytes(source: str) -> bytes:
    """The raw bytes behind a URL, data URL, file:// URL or local path."""
    if source.startswith(HTTP_SCHEMES):
        return fetch_url(source)
    if source.startswith("data:"):
        return decode_base64_url(source)
    return local_path(source).read_bytes()


def open_image(data: bytes | os.PathLike, what: str = "image") -> Image.Image:
    """Decode an image, refusing pixel counts over the limit before decoding the pixels."""
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{what} is too large to decode (decompression bomb?): {exc}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot decode {what}: {exc}") from exc
    width, height = image.size
    limit = get_settings().max_image_pixels
    if width * height > limit:
        msg = f"{what} has {width}x{height} pixels, over the limit of {limit} (decompression bomb?)"
        raise ValueError(msg)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, MemoryError) as exc:
        # MemoryError: one block per image (rgbx.single_block_images) refuses a single image over 2 GiB
        raise ValueError(f"cannot decode {what}: {type(exc).__name__}: {exc}") from exc
    return image


def load_image(source: str | bytes | Image.Image) -> Image.Image:
    """A decoded PIL image (mode unchanged) from any supported source."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        return open_image(source)
    if not isinstance(source, str):
        raise ValueError(f"unsupported image input of type {type(source).__name__}")
    if source.startswith("data:") and not source.startswith("data:image"):
        raise ValueError(f"data URL is not an image: {source[:40]!r}")
    if source.startswith(HTTP_SCHEMES + ("data:",)):
        return open_image(source_bytes(source), what=source[:80])
    return open_image(local_path(source), what=source)

"""Hardened media connector for `vllm serve`: every failure of a client's media is a ValueError (400).

vLLM's own connector lets some failures through as 500s (a PNG decompression bomb, DNS errors, refused
connections, a JPEG sent as a video) and waits up to its per-modality timeout per read, so a server that
trickles bytes can hold a request far longer. This one fetches http(s) with one total deadline and a byte
limit (see fetch.py), decodes images as qwen-vl-utils does (image_io.py), and turns any error raised while
decoding the client's bytes into a ValueError. Local files keep vLLM's `--allowed-local-media-path` rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import numpy.typing as npt
from PIL import Image
from urllib3.util import Url, parse_url
from vllm import envs
from vllm.multimodal.media import MediaConnector
from vllm.multimodal.media.base import MediaIO
from vllm.multimodal.media.connector import global_thread_pool
from vllm.multimodal.media.video import VideoMediaIO
from vllm.multimodal.video import get_video_loader_backend_for_processor

from qwenvl_vllm.serving.fetch import fetch_bytes, fetch_bytes_async
from qwenvl_vllm.serving.image_io import QwenVLImageMediaIO
from qwenvl_vllm.settings import get_settings

MEDIA_CONNECTOR_NAME = "qwenvl_vllm"

_M = TypeVar("_M")


def _client_error(what: str, load: Callable[[], _M]) -> _M:
    """load(), with any error it raises on the client's media reported as a ValueError."""
    try:
        return load()
    except ValueError:
        raise
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, AssertionError, ...)
        raise ValueError(f"cannot load {what}: {type(exc).__name__}: {exc}") from exc


def _deadline(fetch_timeout: float | None) -> float:
    """The plugin's total fetch deadline, or vLLM's per-modality timeout when that is shorter."""
    ours = get_settings().fetch_timeout_s
    return min(ours, fetch_timeout) if fetch_timeout else ours


def _check_data_url_size(url: str) -> None:
    max_bytes = get_settings().max_media_bytes
    if (len(url) - url.find(",") - 1) * 3 // 4 > max_bytes:  # checked before decoding the base64
        raise ValueError(f"data URL is larger than the {max_bytes}-byte limit")


class QwenVLMediaConnector(MediaConnector):
    # -- fetching ------------------------------------------------------------------------------------------

    def _http_spec(self, url: str) -> Url | None:
        """The parsed URL if it is http(s) (domain checked), None for data: and file: URLs."""
        if url[:5].lower() == "data:":
            _check_data_url_size(url)
            return None
        try:
            spec = parse_url(url)
        except ValueError as exc:  # urllib3's LocationParseError
            raise ValueError(f"invalid media URL {url[:200]!r}: {exc}") from exc
        if spec.scheme in ("http", "https"):
            self._assert_url_in_allowed_media_domains(spec)
            return spec
        if spec.scheme != "file":
            raise ValueError(f"media URL must be http(s), data or file, got {url[:200]!r}")
        return None

    def _load_local(self, url: str, media_io: MediaIO[_M]) -> _M:
        if url[:5].lower() == "data:":
            return self._load_data_url(url, media_io)
        if self.allowed_local_media_path is None:
            raise ValueError(
                "local media files are refused: the server was started without --allowed-local-media-path"
            )
        return self._load_file_url(parse_url(url), media_io)

    def _fetch_kwargs(self, fetch_timeout: float | None) -> dict[str, Any]:
        return dict(
            deadline_s=_deadline(fetch_timeout),
            max_bytes=get_settings().max_media_bytes,
            allow_redirects=envs.VLLM_MEDIA_URL_ALLOW_REDIRECTS,
        )

    def load_from_url(self, url: str, media_io: MediaIO[_M], *, fetch_timeout: int | None = None) -> _M:
        spec = self._http_spec(url)
        if spec is None:
            return _client_error("media", lambda: self._load_local(url, media_io))
        data = self._get_cached_bytes(url)
        if data is None:
            data = fetch_bytes(spec.url, **self._fetch_kwargs(fetch_timeout))
            self._put_cached_bytes(url, data)
        return _client_error(f"media from {url[:200]!r}", lambda: media_io.load_bytes(data))

    async def load_from_url_async(
        self, url: str, media_io: MediaIO[_M], *, fetch_timeout: int | None = None
    ) -> _M:
        loop = asyncio.get_running_loop()
        spec = self._http_spec(url)
        if spec is None:
            load = lambda: _client_error("media", lambda: self._load_local(url, media_io))
            return await loop.run_in_executor(global_thread_pool, load)
        data = await loop.run_in_executor(global_thread_pool, self._get_cached_bytes, url)
        if data is None:
            data = await fetch_bytes_async(spec.url, **self._fetch_kwargs(fetch_timeout))
            await loop.run_in_executor(global_thread_pool, self._put_cached_bytes, url, data)
        decode = lambda: _client_error(f"media from {url[:200]!r}", lambda: media_io.load_bytes(data))
        return await loop.run_in_executor(global_thread_pool, decode)

    # -- media kinds ---------------------------------------------------------------------------------------

    def _image_io(self, image_mode: str) -> QwenVLImageMediaIO:
        return QwenVLImageMediaIO(image_mode=image_mode, **self.media_io_kwargs.get("image", {}))

    def _video_io(self, image_mode: str, video_processor: str | None) -> VideoMediaIO:
        kwargs = dict(self.media_io_kwargs.get("video", {}))
        if "video_backend" not in kwargs and (
            backend := get_video_loader_backend_for_processor(video_processor)
        ):
            kwargs["video_backend"] = backend
        # an unknown video_backend fails inside vLLM's registry with an AssertionError
        return _client_error("video options", lambda: VideoMediaIO(self._image_io(image_mode), **kwargs))

    def fetch_image(self, image_url: str, *, image_mode: str = "RGB") -> Image.Image:
        io = self._image_io(image_mode)
        return self.load_from_url(image_url, io, fetch_timeout=envs.VLLM_IMAGE_FETCH_TIMEOUT)

    async def fetch_image_async(self, image_url: str, *, image_mode: str = "RGB") -> Image.Image:
        io = self._image_io(image_mode)
        return await self.load_from_url_async(image_url, io, fetch_timeout=envs.VLLM_IMAGE_FETCH_TIMEOUT)

    def fetch_video(
        self, video_url: str, *, image_mode: str = "RGB", video_processor: str | None = None
    ) -> tuple[npt.NDArray, dict[str, Any]]:
        io = self._video_io(image_mode, video_processor)
        return self.load_from_url(video_url, io, fetch_timeout=envs.VLLM_VIDEO_FETCH_TIMEOUT)

    async def fetch_video_async(
        self, video_url: str, *, image_mode: str = "RGB", video_processor: str | None = None
    ) -> tuple[npt.NDArray, dict[str, Any]]:
        io = self._video_io(image_mode, video_processor)
        return await self.load_from_url_async(video_url, io, fetch_timeout=envs.VLLM_VIDEO_FETCH_TIMEOUT)

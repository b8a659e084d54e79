"""An image's cache identity from its encoded bytes, hashed beside its decoding instead of after it.

vLLM keys its processor cache on a hash of each image's encoded bytes (`MultiModalHasher`, on the API
server's request path, one thread): 1.8 ms of a 12 MP JPEG's 3.55 ms front end over decode on the H200
host (round 12). An image that carries a `uuid.UUID` as its EXIF ImageID is hashed by those 16 bytes
instead. Here that id is the first 16 bytes of the same algorithm's digest (`VLLM_MM_HASHER_ALGORITHM`) of
the same bytes, computed on a worker thread while Pillow decodes. Both release the GIL, so on a host with
a spare core the hash costs no wall time. Equal bytes give equal ids, so cache hits are unchanged; vLLM
still mixes in the model and the per-request processor options (max_pixels and the like).
"""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import vllm.envs as envs
from PIL import Image

BESIDE_BYTES = 1 << 20  # smaller images hash in ~0.1 ms: not worth a thread hand-off
IMAGE_ID_TAG = Image.ExifTags.Base.ImageID

_worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qwenvl-content-id")


def _digest(data: bytes) -> bytes:
    algorithm = envs.VLLM_MM_HASHER_ALGORITHM.lower()
    if algorithm == "blake3":
        from blake3 import blake3

        return blake3(data).digest()
    return hashlib.new(algorithm, data).digest()


def content_id(data: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=_digest(data)[:16])


def content_id_beside(data: bytes) -> Future[uuid.UUID] | None:
    """The id of a large image's bytes, started now on a worker thread; None for a small one."""
    return _worker.submit(content_id, data) if len(data) >= BESIDE_BYTES else None


def tag(image: Image.Image, data: bytes, pending: Future[uuid.UUID] | None) -> None:
    """Mark a decoded image with its bytes' id (vLLM's hasher then reads the id, not the bytes)."""
    image.getexif()[IMAGE_ID_TAG] = pending.result() if pending is not None else content_id(data)

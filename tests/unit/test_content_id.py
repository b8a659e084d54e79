"""The server's image cache id (serving.content_id): the digest of the encoded bytes under vLLM's configured
algorithm, hashed beside decoding for large images, read by vLLM's hasher in place of the bytes; equal bytes
share a cache entry, different bytes or processor options do not."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest
from blake3 import blake3
from PIL import Image
from vllm.multimodal.hasher import MultiModalHasher

from qwenvl_vllm.serving import content_id as cid
from qwenvl_vllm.serving.image_io import QwenVLImageMediaIO
from qwenvl_vllm.synthetic import make_image


def _jpeg(width: int, height: int, seed: int, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    make_image(width, height, seed=seed).save(buf, format="JPEG", quality=95, exif=exif or Image.Exif())
    return buf.getvalue()


def test_the_id_is_the_configured_digest_of_the_bytes(monkeypatch) -> None:
    data = b"\x01" * 1000
    assert cid.content_id(data) == uuid.UUID(bytes=blake3(data).digest()[:16])
    monkeypatch.setenv("VLLM_MM_HASHER_ALGORITHM", "sha256")
    assert cid.content_id(data) == uuid.UUID(bytes=hashlib.sha256(data).digest()[:16])


@pytest.mark.parametrize("size", [(64, 48), (2400, 1800)])  # hashed inline; hashed beside the decoding
def test_a_loaded_image_carries_its_bytes_id(size: tuple[int, int]) -> None:
    data = _jpeg(*size, seed=3)
    assert (len(data) >= cid.BESIDE_BYTES) == (size[0] > 1000)
    media = QwenVLImageMediaIO().load_bytes(data)
    assert media.media.getexif()[cid.IMAGE_ID_TAG] == cid.content_id(data)


def test_vllms_cache_key_follows_bytes_and_options() -> None:
    io_ = QwenVLImageMediaIO()
    first, second = _jpeg(64, 48, seed=1), _jpeg(64, 48, seed=2)

    def key(data: bytes, **options: object) -> str:
        return MultiModalHasher.hash_kwargs(model_id="m", image=io_.load_bytes(data), **options)

    assert key(first) == key(first)
    assert key(first) != key(second)
    assert key(first, max_pixels=50_000) != key(first, max_pixels=60_000)


def test_an_id_inside_the_file_is_not_trusted() -> None:
    """A client's own EXIF ImageID (a string in the file) is replaced by the bytes' id."""
    exif = Image.Exif()
    exif[cid.IMAGE_ID_TAG] = "00000000000000000000000000000000"
    data = _jpeg(64, 48, seed=1, exif=exif)
    media = QwenVLImageMediaIO().load_bytes(data)
    assert media.media.getexif()[cid.IMAGE_ID_TAG] == cid.content_id(data)

"""Decoded images shipped as views of Pillow's memory (processors.rgbx): same pixels, memory kept alive."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
from PIL import Image

from qwenvl_vllm.processors.image import pixels_to_ship, to_rgb
from qwenvl_vllm.processors.media import open_image
from qwenvl_vllm.processors.rgbx import (
    PIXEL_BYTES,
    is_unshared,
    mark_unshared,
    rgbx_view,
    single_block_images,
)
from qwenvl_vllm.synthetic import make_image

BIG = (4032, 3024)  # 48 MB of Pillow storage: above its 16 MB blocks


@pytest.fixture
def block_allocator():
    """Restores Pillow's process-wide allocator choice after a test that changes it."""
    before = Image.core.get_use_block_allocator()
    yield
    Image.core.set_use_block_allocator(before)


def _jpeg(width: int, height: int, seed: int) -> bytes:
    out = io.BytesIO()
    make_image(width, height, seed=seed).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (7, 1), (300, 200), (1024, 768)])
def test_view_holds_the_images_pixels(size: tuple[int, int]) -> None:
    image = make_image(*size, seed=sum(size))
    view = rgbx_view(image)
    assert view is not None and view.dtype == torch.uint8
    assert tuple(view.shape) == (size[1], size[0], PIXEL_BYTES)
    assert np.array_equal(view[..., :3].numpy(), np.asarray(image))


def test_a_large_decoded_image_is_viewed_whole(block_allocator) -> None:
    from qwenvl_vllm.serving.image_io import QwenVLImageMediaIO

    Image.core.set_use_block_allocator(0)
    image = QwenVLImageMediaIO(image_mode="RGB").load_bytes(_jpeg(*BIG, seed=1)).media  # asks for one block
    view = rgbx_view(image)
    assert view is not None and np.array_equal(view[..., :3].numpy(), np.asarray(image))


def test_a_chained_image_falls_back_to_a_packed_copy(block_allocator) -> None:
    Image.core.set_use_block_allocator(0)
    image = make_image(*BIG, seed=2).convert("RGB")
    assert rgbx_view(image) is None
    shipped = pixels_to_ship(mark_unshared(image))
    assert tuple(shipped.shape) == (BIG[1], BIG[0], 3)
    assert np.array_equal(shipped.numpy(), np.asarray(image))


def test_the_view_outlives_the_image(block_allocator) -> None:
    single_block_images()
    image = open_image(_jpeg(640, 480, seed=3))
    want = np.asarray(image).copy()
    view = rgbx_view(image)
    del image
    gc.collect()
    churn = [Image.new("RGB", (640, 480), (9, 9, 9)) for _ in range(8)]  # would reuse freed memory
    assert np.array_equal(view[..., :3].numpy(), want)
    del churn


def test_arrays_ship_packed() -> None:
    array = np.asarray(make_image(30, 20, seed=4))
    shipped = pixels_to_ship(array)
    assert tuple(shipped.shape) == (20, 30, 3) and np.array_equal(shipped.numpy(), array)


def test_a_callers_image_ships_as_a_copy() -> None:
    image = make_image(30, 20, seed=7)
    want = np.asarray(image).copy()
    shipped = pixels_to_ship(image)
    image.paste((1, 2, 3), (0, 0, 30, 20))  # the caller reuses its image
    assert tuple(shipped.shape) == (20, 30, 3) and np.array_equal(shipped.numpy(), want)


def test_only_rgb_is_viewed() -> None:
    with pytest.raises(ValueError, match="RGB"):
        rgbx_view(make_image(8, 8, seed=5).convert("L"))


def test_to_rgb_keeps_an_rgb_image_and_loads_it() -> None:
    lazy = Image.open(io.BytesIO(_jpeg(64, 48, seed=6)))
    assert to_rgb(lazy) is lazy
    assert lazy.im is not None and np.asarray(lazy).shape == (48, 64, 3)


def test_the_servers_decoder_marks_its_images_and_copies_are_not_marked() -> None:
    from qwenvl_vllm.serving.image_io import QwenVLImageMediaIO

    image = QwenVLImageMediaIO(image_mode="RGB").load_bytes(_jpeg(64, 48, seed=8)).media
    assert is_unshared(image) and not is_unshared(image.copy()) and not is_unshared(make_image(4, 4, seed=0))
    assert pixels_to_ship(image).shape[-1] == PIXEL_BYTES

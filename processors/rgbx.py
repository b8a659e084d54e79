"""A decoded RGB image's pixels as a torch view of Pillow's own memory: no copy on the API server.

Pillow stores an RGB pixel in four bytes (R, G, B, pad). Packing them into three (`tobytes`) reads and
writes every byte on the API server's event loop, ~10 ms of a 12 MP photo's front end on the dev CPU; the
model drops the pad on its device instead. Pillow exports its storage through the Arrow C data interface
(a fixed-size list of 4 uint8 per pixel) when the image is one memory block, which is what
`single_block_images` asks Pillow to allocate (otherwise images above 16 MB are chains of blocks).
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from PIL import Image

PIXEL_BYTES = 4  # Pillow's storage of an RGB pixel: R, G, B and a pad byte
_FIXED_LIST = f"+w:{PIXEL_BYTES}".encode()
_UINT8 = b"C"


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_void_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


_UNSHARED = "_qwenvl_unshared"  # an attribute: PIL images compare by content, so they cannot be hashed


def mark_unshared(image: Image.Image) -> Image.Image:
    """Marks an image that only vLLM will ever hold (decoded by the server from a request's bytes): its
    memory may then be shipped as it is, since nothing changes it later."""
    setattr(image, _UNSHARED, True)
    return image


def is_unshared(image: object) -> bool:
    return getattr(image, _UNSHARED, False) is True  # copies (convert, resize, copy) are not marked


def single_block_images() -> None:
    """New Pillow images in this process are one allocation each, so that `rgbx_view` can see them."""
    Image.core.set_use_block_allocator(1)


def _is_rgbx_list(schema: _ArrowSchema) -> bool:
    return (
        schema.format == _FIXED_LIST
        and schema.n_children == 1
        and schema.children[0].contents.format == _UINT8
    )


def rgbx_view(image: Image.Image) -> torch.Tensor | None:
    """uint8 [H, W, 4] sharing the memory of a loaded RGB `image` (channel 3 is Pillow's pad byte), or
    None when Pillow cannot export it in one piece. The view keeps that memory alive after `image` is gone;
    nothing may write to it (`_Memory`)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    image.load()
    pixels = image.width * image.height
    if not pixels:
        return None
    try:
        schema_capsule, array_capsule = image.__arrow_c_array__()
    except ValueError:  # "rows are not contiguous": a chain of blocks
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    if not _is_rgbx_list(schema) or array.n_children != 1 or array.length != pixels:
        return None
    values = array.children[0].contents
    if values.n_buffers != 2 or not values.buffers[1] or values.length < pixels * PIXEL_BYTES:
        return None
    start = values.buffers[1] + values.offset + array.offset * PIXEL_BYTES
    flat = torch.from_numpy(np.asarray(_Memory(start, pixels * PIXEL_BYTES, array_capsule)))
    return flat.view(image.height, image.width, PIXEL_BYTES)


class _Memory:
    """Bytes at an address, for numpy; holds the Arrow array that keeps them alive (its capsule releases
    Pillow's reference when the last array over them is gone). Declared writable only because torch has
    no read-only tensors (it would warn); nothing writes to them: every consumer copies first (device
    transfer, `without_pad`, vLLM's serialisation)."""

    def __init__(self, address: int, nbytes: int, owner: object) -> None:
        self.owner = owner
        self.__array_interface__ = {
            "data": (address, False),
            "shape": (nbytes,),
            "typestr": "|u1",
            "version": 3,
        }


def without_pad(image: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] of a shipped image, [H, W, 3] or `rgbx_view`'s [H, W, 4] (on any device)."""
    if image.ndim != 3 or image.shape[-1] not in (3, PIXEL_BYTES):
        raise ValueError(f"an image must be [H, W, 3] or [H, W, 4] uint8, got shape {tuple(image.shape)}")
    return image[..., :3].contiguous() if image.shape[-1] == PIXEL_BYTES else image

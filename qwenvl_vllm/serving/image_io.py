"""Image decoding for the server as qwen-vl-utils does it, with the plugin's safety limits.

vLLM's ImageMediaIO applies EXIF rotation and lets PIL's DecompressionBombError escape (a 500); qwen-vl-utils
decodes the pixels as stored. Here the pixel count is refused from the header before decoding, truncated or
corrupt bytes are a ValueError, and RGBA is composited on white as qwen-vl-utils does. The bytes' cache id is
hashed beside the decoding (serving.content_id).
"""

from __future__ import annotations

from vllm.multimodal.media.base import MediaWithBytes
from vllm.multimodal.media.image import ImageMediaIO

from qwenvl_vllm.processors.image import to_rgb
from qwenvl_vllm.processors.media import open_image
from qwenvl_vllm.processors.rgbx import mark_unshared, single_block_images
from qwenvl_vllm.serving.content_id import content_id_beside, tag


class QwenVLImageMediaIO(ImageMediaIO):
    def load_bytes(self, data: bytes) -> MediaWithBytes:
        if not data:
            raise ValueError("image is empty (0 bytes)")
        single_block_images()  # before the pixels are allocated: the processor can then ship them uncopied
        pending = content_id_beside(data)
        image = open_image(data)
        image = to_rgb(image) if self.image_mode == "RGB" else self._convert_image_mode(image)
        tag(image, data, pending)
        return MediaWithBytes(mark_unshared(image), data)  # only vLLM holds it: shipped uncopied

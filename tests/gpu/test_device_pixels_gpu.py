"""Decoded photos shipped uncopied ([H, W, 4], Pillow's storage) give, on the GPU, the rows that the packed
[H, W, 3] pixels give on the CPU: byte for byte.

Run on the GPU machine: `python -m pytest tests/gpu/test_device_pixels_gpu.py -q`.
"""

from __future__ import annotations

import io

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("size", [(1024, 768), (1920, 1080), (4032, 3024), (29, 3000)])
def test_uncopied_photo_rows_on_cuda_equal_packed_rows_on_cpu(size: tuple[int, int]) -> None:
    from qwenvl_vllm.geometry import QWEN2_VL
    from qwenvl_vllm.models.qwen2_vl_device_pixels import uint8_rows
    from qwenvl_vllm.processors.image import pixels_to_ship, uint8_hwc
    from qwenvl_vllm.processors.sizing import smart_resize
    from qwenvl_vllm.serving.image_io import QwenVLImageMediaIO
    from qwenvl_vllm.synthetic import make_image

    jpeg = io.BytesIO()
    make_image(*size, seed=sum(size)).save(jpeg, "JPEG", quality=90)
    image = QwenVLImageMediaIO(image_mode="RGB").load_bytes(jpeg.getvalue()).media  # as the server decodes
    shipped = pixels_to_ship(image)
    assert shipped.shape[-1] == 4  # the decoder we own allocates one block: viewed, not copied
    height, width = smart_resize(image.height, image.width, factor=28, max_pixels=16384 * 28 * 28)
    grid = (1, height // 14, width // 14)
    got = uint8_rows(shipped, grid, QWEN2_VL, torch.device("cuda"), torch.bfloat16)
    want = uint8_rows(uint8_hwc(image), grid, QWEN2_VL, torch.device("cpu"), torch.bfloat16)
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("frames,size", [(16, (640, 360)), (5, (90, 60))])
def test_shipped_video_frames_give_the_cpu_rows_on_cuda(frames: int, size: tuple[int, int]) -> None:
    """Frames shipped as decoded ([T, H, W, 3]) and resized on the GPU give the CPU path's rows."""
    import numpy as np

    from qwenvl_vllm.geometry import QWEN2_VL
    from qwenvl_vllm.models.qwen2_vl_device_pixels import uint8_rows
    from qwenvl_vllm.synthetic import make_image

    video = torch.from_numpy(np.stack([np.asarray(make_image(*size, seed=s)) for s in range(frames)]))
    grid = (-(-frames // 2), 8, 14)  # resized to 112x196
    got = uint8_rows(video, grid, QWEN2_VL, torch.device("cuda"), torch.bfloat16)
    want = uint8_rows(video, grid, QWEN2_VL, torch.device("cpu"), torch.bfloat16)
    assert torch.equal(got.cpu(), want)

"""patchify_on_device on CPU: the same bytes as processors.patchify, any dtype, images and odd videos.

(The CUDA comparison is in tests/gpu/test_kernels_gpu.py.)
"""

from __future__ import annotations

import pytest
import torch

from qwenvl_vllm.kernels.patchify import patchify_on_device
from qwenvl_vllm.processors.patchify import patchify


def _pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(56, 84, 3), (28, 28, 3), (1, 3, 56, 56), (3, 3, 28, 56), (5, 3, 56, 28)])
def test_same_bytes_as_patchify(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    pixels = _pixels(*shape, seed=sum(shape))
    rows, grid = patchify_on_device(pixels, "cpu", dtype)
    expected, expected_grid = patchify(pixels.clone(), dtype=dtype)
    assert grid == expected_grid and rows.dtype == dtype and rows.device.type == "cpu"
    assert torch.equal(rows.view(torch.uint8), expected.view(torch.uint8))


def test_odd_frame_count_pads_last_frame() -> None:
    video = _pixels(3, 3, 28, 28)
    rows, grid = patchify_on_device(video)
    padded, _ = patchify_on_device(torch.cat([video, video[-1:]]))
    assert grid == (2, 2, 2) and torch.equal(rows, padded)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="uint8"):
        patchify_on_device(torch.zeros((28, 28, 3)))
    with pytest.raises(ValueError, match="RGB"):
        patchify_on_device(torch.zeros((28, 28, 4), dtype=torch.uint8))
    with pytest.raises(ValueError, match="RGB"):
        patchify_on_device(torch.zeros((2, 4, 28, 28), dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of 28"):
        patchify_on_device(torch.zeros((30, 28, 3), dtype=torch.uint8))

"""patchify vs transformers 5.17's Qwen2-VL image / video processors (do_resize=False) on the same pixels.

Tolerance 1e-6 absolute: both sides compute (x - mean/rescale) / (std/rescale) in float32 with the same two
roundings, so results are expected bit-identical; the margin only absorbs a change of operation order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

from qwenvl_vllm.processors.patchify import patchify

ATOL = 1e-6


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _hf_image(image) -> tuple[torch.Tensor, list[int]]:
    out = Qwen2VLImageProcessor()(images=[image], do_resize=False, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"][0].tolist()


def _hf_video(video: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    out = Qwen2VLVideoProcessor()(
        videos=[video], do_resize=False, cap_pixels_per_frame=False, return_tensors="pt"
    )
    return out["pixel_values_videos"], out["video_grid_thw"][0].tolist()


@pytest.mark.parametrize("height,width", [(28, 28), (56, 84), (112, 56), (84, 308)])
def test_image_matches_hf(height: int, width: int) -> None:
    array = _rgb(height, width, seed=height + width)
    expected, grid = _hf_image(Image.fromarray(array))
    for source in (Image.fromarray(array), array):
        rows, ours = patchify(source)
        assert list(ours) == grid == [1, height // 14, width // 14]
        assert rows.dtype == torch.float32 and rows.shape == expected.shape == (height * width // 196, 1176)
        torch.testing.assert_close(rows, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("frames", [1, 2, 4, 5])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_video_matches_hf(frames: int, dtype: torch.dtype) -> None:
    # qwen-vl-utils returns float frames [T, C, H, W] with integer values; vLLM gets uint8.
    video = torch.from_numpy(np.stack([_rgb(56, 112, seed=i) for i in range(frames)])).permute(0, 3, 1, 2)
    video = video.to(dtype)
    expected, grid = _hf_video(video)
    rows, ours = patchify(video)
    assert list(ours) == grid == [(frames + 1) // 2, 4, 8]
    torch.testing.assert_close(rows, expected, atol=ATOL, rtol=0)


def test_single_frame_video_equals_image() -> None:
    array = _rgb(56, 56)
    video_rows, video_grid = patchify(torch.from_numpy(array).permute(2, 0, 1)[None])
    image_rows, image_grid = patchify(array)
    assert video_grid == image_grid == (1, 4, 4)
    assert torch.equal(video_rows, image_rows)


def test_merge_window_order() -> None:
    # A 28x56 image: two merge windows side by side; the first 4 rows must all come from the left window.
    array = np.zeros((28, 56, 3), dtype=np.uint8)
    array[:, 28:] = 255
    rows, grid = patchify(array, mean=(0, 0, 0), std=(1, 1, 1))
    assert grid == (1, 2, 4)
    assert torch.all(rows[:4] == 0) and torch.all(rows[4:] == 1)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="multiple of 28"):
        patchify(_rgb(30, 56))
    with pytest.raises(ValueError, match="RGB"):
        patchify(Image.fromarray(_rgb(28, 28)).convert("L"))
    with pytest.raises(ValueError, match="HWC image"):
        patchify(np.zeros((28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="mean/std"):
        patchify(_rgb(28, 28), mean=(0.5,), std=(0.5,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_output_dtype_equals_casting_afterwards(dtype: torch.dtype) -> None:
    image = _rgb(56, 84, seed=3)
    video = torch.from_numpy(np.stack([_rgb(56, 56, seed=i) for i in range(3)])).permute(0, 3, 1, 2)
    for source in (image, video):
        want, grid = patchify(source)
        got, got_grid = patchify(source, dtype=dtype)
        assert got.dtype == dtype and got_grid == grid
        assert torch.equal(got, want.to(dtype))  # bit-identical, not merely close

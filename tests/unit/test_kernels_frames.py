"""resize_frames_torch (the device-independent path) vs torchvision's resize as qwen-vl-utils calls it,
and kernels.torch_aa's float32 interpolation vs torch's CPU kernel before any rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from qwenvl_vllm.kernels.frames import resize_frames_like_qwen_vl_utils, resize_frames_torch
from qwenvl_vllm.kernels.torch_aa import CANDIDATE_BLOCKS, aa_bicubic_taps, interpolate_float, summation_block


def _torchvision(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return tvf.resize(frames, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)


SIZES = [
    (3, 48, 64, 28, 56),  # downscale
    (2, 30, 40, 84, 112),  # upscale
    (5, 120, 90, 28, 28),  # strong downscale, odd frame count
    (1, 1, 1, 28, 28),  # one pixel in
    (2, 37, 53, 2, 1),  # one pixel wide out: torch takes another path, so do we (the CPU reference)
    (2, 37, 53, 1, 3),  # one pixel high out
    (3, 64, 48, 64, 112),  # height unchanged: width pass only
    (3, 64, 48, 28, 48),  # width unchanged: height pass only
    (2, 23, 19, 23, 19),  # identity
    (1, 3, 600, 2, 196),  # aspect ratio 200
    (2, 144, 256, 252, 448),  # a 256x144 video scaled up as for the model
]


@pytest.mark.parametrize("frames,h,w,oh,ow", SIZES)
def test_matches_torchvision(frames: int, h: int, w: int, oh: int, ow: int) -> None:
    generator = torch.Generator().manual_seed(h * 1000 + w)
    video = torch.randint(0, 256, (frames, 3, h, w), dtype=torch.uint8, generator=generator)
    expected = _torchvision(video, oh, ow)
    if ow > 1:
        assert torch.equal(resize_frames_torch(video, oh, ow), expected)
    assert torch.equal(resize_frames_like_qwen_vl_utils(video, oh, ow), expected)


def test_matches_torchvision_on_random_sizes() -> None:
    generator = torch.Generator().manual_seed(0)
    differing = []
    for _ in range(150):
        h, w, oh = (int(v) for v in torch.randint(1, 90, (3,), generator=generator))
        ow = int(torch.randint(2, 90, (1,), generator=generator))
        video = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=generator)
        if not torch.equal(resize_frames_torch(video, oh, ow), _torchvision(video, oh, ow)):
            differing.append((h, w, oh, ow))
    assert not differing, differing[:5]


@pytest.mark.parametrize(
    "h,w,oh,ow",
    [
        (59, 58, 56, 64),
        (40, 90, 17, 30),
        (90, 80, 30, 20),
        (23, 80, 40, 87),
        (360, 640, 28, 56),
        (7, 3, 67, 30),
        (144, 256, 252, 448),
    ],
)
def test_float_sums_match_torch_bit_for_bit(h: int, w: int, oh: int, ow: int) -> None:
    # before rounding to uint8: catches any difference in the order or fusing of the float32 sums
    # (4 to 40 taps per output here, i.e. full blocks, leftovers and both)
    video = torch.randint(0, 256, (2, 3, h, w), generator=torch.Generator().manual_seed(h + w)).float()
    expected = F.interpolate(video, size=(oh, ow), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(interpolate_float(video, oh, ow), expected)


def test_summation_block_is_known_here() -> None:
    # this torch build's CPU kernel must sum in one of the known ways, or the device path is not exact
    assert summation_block() in CANDIDATE_BLOCKS, torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("in_size,out_size", [(50, 13), (13, 50), (7, 1), (1, 9), (1920, 448)])
def test_taps_are_normalised_and_in_bounds(in_size: int, out_size: int) -> None:
    start, count, weights = aa_bicubic_taps(in_size, out_size)
    assert int(start.min()) >= 0 and int((start + count).max()) <= in_size
    assert torch.all(weights[torch.arange(weights.shape[1])[None, :] >= count[:, None]] == 0)
    # torch normalises every output's weights to sum to 1 (in float32)
    ones = torch.ones(out_size, dtype=torch.float64)
    torch.testing.assert_close(weights.double().sum(1), ones, atol=1e-5, rtol=0)


def test_bad_inputs() -> None:
    good = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    for frames in [good.float(), good[0], torch.zeros((0, 3, 8, 8), dtype=torch.uint8), good.numpy()]:
        with pytest.raises(ValueError):
            resize_frames_like_qwen_vl_utils(frames, 4, 4)
    for height, width in [(0, 4), (4, 2.5)]:
        with pytest.raises(ValueError):
            resize_frames_torch(good, height, width)

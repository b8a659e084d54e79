"""resize_like_pil (CPU torch path) vs Pillow's own bicubic resize, byte for byte.

The size pairs cover what Pillow treats differently: up- and downscaling (over 10x), one-pixel sides,
unchanged axes and identity, aspect ratios near 200, very tall images, and sizes either side of Pillow's
pass-order rule (vertical pass first when the height loses over twice the width's pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from qwenvl_vllm.kernels import resize
from qwenvl_vllm.kernels.pil_coeffs import PRECISION_BITS, ROUNDING, bicubic_coeffs
from qwenvl_vllm.kernels.resize import VERTICAL_FIRST_FACTOR, resize_like_pil, vertical_first

Case = tuple[int, int, int, int]  # in height, in width, out height, out width


def _random_cases(rng: np.random.Generator) -> list[Case]:
    def sides(n: int, lo: int, hi: int) -> list[int]:
        return [int(v) for v in rng.integers(lo, hi + 1, n)]

    cases: list[Case] = []
    for _ in range(1200):  # small images, any direction
        cases.append(tuple(sides(4, 1, 64)))
    for _ in range(400):  # larger sides
        cases.append(tuple(sides(4, 1, 300)))
    for _ in range(200):  # downscaling by more than 10x on both axes
        h, w = sides(2, 100, 400)
        cases.append((h, w, *sides(1, 1, h // 11), *sides(1, 1, w // 11)))
    for _ in range(100):  # one-pixel sides in or out
        h, w, oh, ow = sides(4, 1, 120)
        pick = int(rng.integers(4))
        sizes = [h, w, oh, ow]
        sizes[pick] = 1
        cases.append(tuple(sizes))
    for _ in range(100):  # aspect ratio near 200, both orientations and directions
        short, out_short = sides(2, 1, 3)
        long_, out_long = int(short * rng.integers(150, 230)), int(rng.integers(28, 700))
        case = (short, long_, out_short, out_long)
        cases.append(case if rng.integers(2) else (case[1], case[0], case[3], case[2]))
    for _ in range(100):  # over 100 times taller than wide, shrinking vertically
        w = sides(1, 1, 3)[0]
        h = int(w * rng.integers(101, 260))
        cases.append((h, w, int(rng.integers(1, h)), sides(1, 1, 40)[0]))
    cases += _order_boundary_cases(rng, 150)
    for _ in range(50):  # one axis unchanged, or nothing at all
        h, w, o = sides(3, 1, 150)
        cases.append((h, w, h, o) if rng.integers(2) else (h, w, o, w))
    cases += [(17, 23, 17, 23), (1, 1, 1, 1), (768, 1024, 756, 1008), (1080, 1920, 28, 56), (300, 2, 280, 28)]
    return cases


def _order_boundary_cases(rng: np.random.Generator, count: int) -> list[Case]:
    """Sizes where the height shrinks by about VERTICAL_FIRST_FACTOR times the width's lost pixels."""
    cases: list[Case] = []
    while len(cases) < count:
        h, w = (int(v) for v in rng.integers(20, 121, 2))
        ow = int(rng.integers(1, w))
        oh = h - VERTICAL_FIRST_FACTOR * (w - ow) - int(rng.integers(-2, 3))
        if 1 <= oh < h:
            cases.append((h, w, oh, ow))
    return cases


@pytest.fixture(autouse=True)
def one_thread():
    # many small resizes: intra-op threads only add overhead on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pil(array: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC))


def test_matches_pillow_on_random_sizes() -> None:
    rng = np.random.default_rng(10)
    cases = _random_cases(rng)
    assert len(cases) >= 2000
    mismatches = []
    for h, w, oh, ow in cases:
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = resize_like_pil(torch.from_numpy(array), oh, ow)
        assert ours.dtype == torch.uint8 and tuple(ours.shape) == (oh, ow, 3)
        if not np.array_equal(ours.numpy(), _pil(array, oh, ow)):
            mismatches.append((h, w, oh, ow))
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ from Pillow, e.g. {mismatches[:5]}"


@pytest.mark.parametrize("pattern", ["edges", "extremes"])
def test_matches_pillow_on_overshooting_content(pattern: str) -> None:
    # hard 0/255 edges make bicubic overshoot below 0 and above 255: the clip after each pass matters
    if pattern == "edges":
        array = np.zeros((61, 47, 3), dtype=np.uint8)
        array[::2] = 255
        array[:, ::3, 1] = 255
    else:
        array = np.random.default_rng(1).choice(np.array([0, 255], dtype=np.uint8), (61, 47, 3))
    for oh, ow in [(122, 94), (200, 31), (13, 150), (7, 5)]:
        ours = resize_like_pil(torch.from_numpy(array), oh, ow).numpy()
        np.testing.assert_array_equal(ours, _pil(array, oh, ow))


def test_pass_order_follows_pillow() -> None:
    # Both orders are valid resizes; only Pillow's choice gives its bytes, and near the boundary the
    # wrong order really differs (so the order rule is tested, not just the arithmetic).
    rng = np.random.default_rng(3)
    wrong_order_differs = 0
    for h, w, oh, ow in _order_boundary_cases(rng, 60):
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected, image = _pil(array, oh, ow), torch.from_numpy(array)
        first, second = (resize._vertical_first, resize._horizontal_first)
        if not vertical_first(h, w, oh, ow):
            first, second = second, first
        np.testing.assert_array_equal(first(image, oh, ow, "torch").numpy(), expected)
        wrong_order_differs += not np.array_equal(second(image, oh, ow, "torch").numpy(), expected)
    assert wrong_order_differs >= 50


def test_identity_is_a_copy() -> None:
    image = torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8)
    out = resize_like_pil(image, 5, 7)
    assert torch.equal(out, image) and out.data_ptr() != image.data_ptr()


def test_int32_accumulator_cannot_overflow() -> None:
    # Pillow accumulates in a C int; our torch and Triton paths use int32 too, so the worst case
    # (all-255 pixels on every positive weight) must stay below 2**31 for every size pair we can see.
    worst = 0
    for in_size in [*range(1, 70), 97, 255, 1000, 4032]:
        for out_size in [*range(1, 70), 112, 448, 1288, 3000]:
            weights = bicubic_coeffs(in_size, out_size).weights.astype(np.int64)
            worst = max(worst, int(np.clip(weights, 0, None).sum(1).max()))
    assert ROUNDING + 255 * worst < 2**31
    assert worst < 1.3 * (1 << PRECISION_BITS)


def test_bad_inputs() -> None:
    good = torch.zeros((4, 4, 3), dtype=torch.uint8)
    bad_images = [
        good.float(),
        good[..., :2],
        good[0],
        torch.zeros((0, 4, 3), dtype=torch.uint8),
        good.numpy(),
    ]
    for image in bad_images:
        with pytest.raises(ValueError):
            resize_like_pil(image, 2, 2)
    for height, width in [(0, 2), (2, -1), (2.0, 2), (True, 2)]:
        with pytest.raises(ValueError):
            resize_like_pil(good, height, width)
    with pytest.raises(ValueError, match="backend"):
        resize_like_pil(good, 2, 2, backend="cuda")
    with pytest.raises(ValueError, match="CUDA"):
        resize_like_pil(good, 2, 2, backend="triton")

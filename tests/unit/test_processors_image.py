"""Image parity with qwen-vl-utils 0.0.14: identical sizes and identical pixels, many generated cases."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import pytest
import qwen_vl_utils

from qwenvl_vllm import processors
from qwenvl_vllm.synthetic import make_image


def _same_result(ours, ref) -> None:
    assert ours.size == ref.size and ours.mode == ref.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ValueError, AssertionError):
        return "error"


def test_smart_resize_random_cases() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        h, w = rng.randint(1, 9000), rng.randint(1, 9000)
        factor = rng.choice([28, 32, 56])
        lo = rng.choice([None, rng.randint(1, 400_000)])
        hi = rng.choice([None, rng.randint(1, 20_000_000)])
        ours = _outcome(processors.smart_resize, h, w, factor, lo, hi)
        ref = _outcome(qwen_vl_utils.smart_resize, h, w, factor, lo, hi)
        assert ours == ref, (h, w, factor, lo, hi)


@pytest.mark.parametrize("lo", [0, -1, -(10**6)])
def test_smart_resize_non_positive_min_pixels_means_no_lower_bound(lo: int) -> None:
    # qwen-vl-utils returns a size for min_pixels <= 0; an earlier version of ours refused it
    for h, w in ((10, 1000), (5, 7), (300, 200)):
        assert processors.smart_resize(h, w, 28, lo, None) == qwen_vl_utils.smart_resize(h, w, 28, lo, None)


def test_smart_resize_differs_from_transformers_where_documented() -> None:
    assert processors.smart_resize(10, 1000) == (28, 1008)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "CMYK", "I;16"])
def test_modes_match(tmp_path, mode: str) -> None:
    image = make_image(173, 91, mode, seed=3)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = tmp_path / f"img.{fmt.lower()}"
    image.save(path, format=fmt)
    for source in (str(path), f"file://{path}", image):
        ele = {"type": "image", "image": source, "max_pixels": 28 * 28 * 40}
        _same_result(processors.fetch_image(ele), qwen_vl_utils.fetch_image(ele))


def test_random_sizes_and_pixel_limits(tmp_path) -> None:
    rng = random.Random(1)
    for i in range(40):
        w, h = rng.randint(8, 700), rng.randint(8, 700)
        image = make_image(w, h, rng.choice(["RGB", "RGBA", "L"]), seed=i)
        ele: dict = {"image": image}
        choice = rng.randrange(4)
        if choice == 1:
            ele["min_pixels"] = rng.randint(784, 200_000)
            ele["max_pixels"] = ele["min_pixels"] + rng.randint(0, 400_000)
        elif choice == 2:
            ele["max_pixels"] = rng.randint(3136, 100_000)
        elif choice == 3:
            ele["resized_height"], ele["resized_width"] = rng.randint(20, 500), rng.randint(20, 500)
        ours = _outcome(processors.fetch_image, ele)
        ref = _outcome(qwen_vl_utils.fetch_image, ele)
        if ref == "error":
            assert ours == "error", ele
        else:
            _same_result(ours, ref)


def test_base64_and_image_url(tmp_path) -> None:
    buf = io.BytesIO()
    make_image(300, 200, seed=5).save(buf, format="JPEG", quality=90)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    for ele in ({"image": url}, {"type": "image_url", "image_url": url}):
        _same_result(processors.fetch_image(ele), qwen_vl_utils.fetch_image(ele))


def test_base64_with_line_breaks_and_spaces() -> None:
    # MIME-style base64 (76-char lines) decodes in qwen-vl-utils, which skips non-alphabet characters
    buf = io.BytesIO()
    make_image(120, 90, seed=6).save(buf, format="PNG")
    for payload in (
        base64.encodebytes(buf.getvalue()).decode(),
        " " + base64.b64encode(buf.getvalue()).decode(),
    ):
        ele = {"image": "data:image/png;base64," + payload}
        _same_result(processors.fetch_image(ele), qwen_vl_utils.fetch_image(ele))


@pytest.mark.parametrize(
    "options",
    [
        {"resized_height": 70.2, "resized_width": 98.6},  # rounded as floats, not truncated to 70 / 98
        {"min_pixels": 0},
        {"min_pixels": -5, "max_pixels": 20_000},
        {"max_pixels": float("inf")},
        {"min_pixels": None, "max_pixels": None},  # None means the default, as in qwen-vl-utils
        {"resized_height": 100, "resized_width": 60, "min_pixels": "unused with resized_*"},
    ],
    ids=str,
)
def test_unusual_size_options_match(options: dict) -> None:
    ele = {"image": make_image(173, 91, seed=4), **options}
    _same_result(processors.fetch_image(ele), qwen_vl_utils.fetch_image(ele))


def test_http_url(http_server) -> None:
    url = http_server(make_image(320, 240, seed=7), "JPEG")
    ele = {"image": url, "min_pixels": 100_000}
    _same_result(processors.fetch_image(ele), qwen_vl_utils.fetch_image(ele))


def test_patch_size_argument() -> None:
    ele = {"image": make_image(400, 300, seed=2)}
    _same_result(
        processors.fetch_image(ele, image_patch_size=16), qwen_vl_utils.fetch_image(ele, image_patch_size=16)
    )


def test_process_vision_info_images(tmp_path) -> None:
    path = tmp_path / "a.png"
    make_image(640, 480, seed=11).save(path)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(path)},
                {"type": "image", "image": make_image(90, 800, seed=12), "max_pixels": 50_000},
                {"type": "text", "text": "compare"},
            ],
        },
        {"role": "assistant", "content": "ok"},
    ]
    ours_images, ours_videos = processors.process_vision_info(messages)
    ref_images, ref_videos = qwen_vl_utils.process_vision_info(messages)
    assert ours_videos is None and ref_videos is None
    for a, b in zip(ours_images, ref_images, strict=True):
        _same_result(a, b)


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1), (1024, 768), (3000, 23), (23, 3000)])
def test_rgb_bytes_equals_tobytes(size: tuple[int, int]) -> None:
    from qwenvl_vllm.processors.image import rgb_bytes

    image = make_image(*size, seed=3).convert("RGB")
    assert rgb_bytes(image) == image.tobytes()


def test_rgb_bytes_decodes_a_lazy_jpeg() -> None:
    from PIL import Image

    from qwenvl_vllm.processors.image import rgb_bytes

    buf = io.BytesIO()
    make_image(640, 480, seed=4).save(buf, format="JPEG", quality=90)
    lazy, other = (Image.open(io.BytesIO(buf.getvalue())) for _ in range(2))
    assert lazy.mode == "RGB" and rgb_bytes(lazy) == other.tobytes()


def test_rgb_bytes_refuses_other_modes() -> None:
    from qwenvl_vllm.processors.image import rgb_bytes

    with pytest.raises(ValueError, match="RGB"):
        rgb_bytes(make_image(8, 8, seed=0).convert("L"))

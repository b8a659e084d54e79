"""Synthetic media for tests and benchmarks: deterministic images and encoded video files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise, so resizing and compression behave like on real photos."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / max(width, 1), ys * 255 / max(height, 1), (xs + ys) % 256], axis=-1)
    noise = rng.integers(-40, 41, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """An image of the given PIL mode (RGB, RGBA, LA, L, P, CMYK, I;16)."""
    rgb = Image.fromarray(random_rgb(height, width, seed))
    if mode in ("RGBA", "LA"):
        alpha_values = np.random.default_rng(seed + 1).integers(0, 256, (height, width), dtype=np.uint8)
        alpha = Image.fromarray(alpha_values)
        img = rgb.convert(mode[:-1] if mode == "LA" else "RGB")
        img.putalpha(alpha)
        return img
    if mode == "I;16":
        gray = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(gray)  # uint16 arrays become mode I;16
    if mode == "P":
        return rgb.quantize(colors=64)
    return rgb.convert(mode)


def write_video(path: str | Path, n_frames: int, fps: float, width: int, height: int, seed: int = 0) -> Path:
    """Encode `n_frames` moving frames as MPEG-4 in an .mp4 file (PyAV)."""
    from fractions import Fraction

    import av

    path = Path(path)
    base = random_rgb(height, width, seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            frame = np.roll(base, shift=3 * i, axis=1)
            frame[: height // 8, : width // 8] = (i * 37) % 256  # a frame counter patch
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

"""GPU checks of qwenvl_vllm.kernels: Triton resize == Pillow and == the torch path on CUDA, video-frame
resize on CUDA == torchvision on CPU, device patchify on CUDA == CPU patchify, byte for byte.

Run on the GPU machine: `python -m pytest tests/gpu/test_kernels_gpu.py -q`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.gpu

# the same kinds of size pairs as the CPU test (up/down, >10x, 1-pixel sides, aspect ~200, tall-first)
CASES = [
    (48, 64, 28, 56),
    (30, 40, 84, 112),
    (400, 300, 28, 28),
    (1, 1, 28, 28),
    (37, 53, 1, 1),
    (3, 600, 2, 196),
    (600, 3, 196, 2),
    (500, 2, 120, 28),  # > 100x taller than wide, shrinking: vertical pass first
    (64, 48, 64, 112),
    (23, 19, 23, 19),
    (100, 80, 59, 60),  # height loses 41 > 2 * 20 pixels: vertical first
    (100, 80, 61, 60),  # 39 <= 2 * 20: horizontal first
    (768, 1024, 756, 1008),
    (3024, 4032, 1232, 1652),
]


def _random_cases(count: int) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(7)
    return [tuple(int(v) for v in rng.integers(1, 200, 4)) for _ in range(count)]


def _pil(array: np.ndarray, height: int, width: int) -> np.ndarray:
    import PIL

    from qwenvl_vllm.kernels.resize import PILLOW_SERIES

    # The GPU image has its own Pillow; an older one orders the passes differently (carry the pinned one:
    # `bash ../shared/gpu/bundle.sh pillow==13.0.0`).
    assert PIL.__version__.startswith(PILLOW_SERIES), (
        f"reference needs Pillow {PILLOW_SERIES}x, found {PIL.__version__}"
    )
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_cuda_resize_matches_pillow(backend: str) -> None:
    from qwenvl_vllm.kernels.resize import resize_like_pil

    rng = np.random.default_rng(0)
    differing = []
    for h, w, oh, ow in CASES + _random_cases(300):
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = resize_like_pil(torch.from_numpy(array).cuda(), oh, ow, backend=backend)
        assert ours.is_cuda and ours.dtype == torch.uint8
        if not np.array_equal(ours.cpu().numpy(), _pil(array, oh, ow)):
            differing.append((h, w, oh, ow))
    assert not differing, differing[:5]


def test_triton_equals_torch_path_on_cuda() -> None:
    from qwenvl_vllm.kernels.resize import resize_like_pil

    generator = torch.Generator(device="cuda").manual_seed(1)
    for h, w, oh, ow in CASES:
        image = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, device="cuda", generator=generator)
        fused = resize_like_pil(image, oh, ow, backend="triton")
        assert torch.equal(fused, resize_like_pil(image, oh, ow, backend="torch"))


def test_resize_kernel_compiles_one_variant_per_pass_kind() -> None:
    # any other size, a narrow width or a source at an odd offset must reuse the two variants the tower
    # warm-up compiles: a new one is a JIT compile while serving
    from qwenvl_vllm.kernels.resample_triton import _resample_kernel
    from qwenvl_vllm.kernels.resize import resize_like_pil

    cases = CASES + _random_cases(100) + [(1000, 40, 1008, 28), (50, 2, 56, 28), (9, 5, 28, 56)]
    base = torch.randint(
        0, 256, (max(h * w * 3 for h, w, _, _ in cases) + 16,), dtype=torch.uint8, device="cuda"
    )
    for index, (h, w, oh, ow) in enumerate(cases):
        offset = index % 16  # views at every alignment
        image = base[offset : offset + h * w * 3].view(h, w, 3)
        assert torch.equal(
            resize_like_pil(image, oh, ow, backend="triton"), resize_like_pil(image, oh, ow, "torch")
        )
    compiled = _resample_kernel.device_caches[torch.cuda.current_device()][0]
    assert len(compiled) <= 2, list(compiled)


FRAME_CASES = [
    (3, 48, 64, 28, 56),
    (5, 120, 90, 28, 28),
    (2, 30, 40, 84, 112),
    (4, 360, 640, 252, 448),
    (2, 1080, 1920, 476, 840),
    (1, 3, 600, 2, 196),
    (2, 23, 19, 23, 19),
]


@pytest.mark.parametrize("frames,h,w,oh,ow", FRAME_CASES)
def test_cuda_frames_match_torchvision_cpu(frames: int, h: int, w: int, oh: int, ow: int) -> None:
    from qwenvl_vllm.kernels.frames import resize_frames_like_qwen_vl_utils
    from qwenvl_vllm.kernels.torch_aa import summation_block
    from qwenvl_vllm.processors.video import resize_frames

    # otherwise the CUDA call would fall back to the CPU reference and prove nothing
    assert summation_block() is not None, torch.backends.cpu.get_cpu_capability()

    video = torch.randint(0, 256, (frames, 3, h, w), dtype=torch.uint8)
    expected = resize_frames(video, (oh, ow))
    ours = resize_frames_like_qwen_vl_utils(video.cuda(), oh, ow)
    assert ours.is_cuda
    diff = (ours.cpu().int() - expected.int()).abs()
    capability = torch.backends.cpu.get_cpu_capability()
    assert int(diff.max()) == 0, (
        f"max diff {int(diff.max())} at {int((diff > 0).sum())} of {diff.numel()} values (CPU {capability})"
    )


@pytest.mark.parametrize("frames,h,w,oh,ow", FRAME_CASES)
def test_cuda_frame_float_sums_match_cpu_interpolate(frames: int, h: int, w: int, oh: int, ow: int) -> None:
    # before rounding: kernels.torch_aa must know how this host's torch CPU kernel sums
    import torch.nn.functional as F

    from qwenvl_vllm.kernels.torch_aa import interpolate_float

    video = torch.randint(0, 256, (frames, 3, h, w)).float()
    expected = F.interpolate(video, size=(oh, ow), mode="bicubic", align_corners=False, antialias=True)
    ours = interpolate_float(video.cuda(), oh, ow).cpu()
    diff = (ours - expected).abs()
    capability = torch.backends.cpu.get_cpu_capability()
    assert torch.equal(ours, expected), f"max diff {float(diff.max())} (CPU {capability})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(756, 1036, 3), (56, 84, 3), (1, 3, 56, 56), (5, 3, 56, 84)])
def test_cuda_patchify_same_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    from qwenvl_vllm.kernels.patchify import patchify_on_device
    from qwenvl_vllm.processors.patchify import patchify

    pixels = torch.randint(0, 256, shape, dtype=torch.uint8)
    rows, grid = patchify_on_device(pixels, "cuda", dtype)
    expected, expected_grid = patchify(pixels.clone(), dtype=dtype)
    assert rows.is_cuda and grid == expected_grid
    assert torch.equal(rows.cpu().view(torch.uint8), expected.view(torch.uint8))

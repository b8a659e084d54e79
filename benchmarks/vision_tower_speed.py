"""GPU: our Qwen2-VL vision tower vs vLLM's in-tree one on Qwen2-VL-2B vision shapes (same random weights).

Run on the GPU machine: python benchmarks/vision_tower_speed.py [--images 32] [--out FILE.json]
Times N x 1024x768 images (3996 patches each) through both towers in bf16 and prints ms per call and per
image. A measurement, not a test: speed claims live here, correctness in tests/gpu/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # vllm_env, shared with the tests
from helpers import vllm_env  # noqa: E402

from qwenvl_vllm.checkpoint.configs import qwen2_vl_config  # noqa: E402

IMAGE_1024x768 = [1, 54, 74]  # 1036x756 after smart_resize: 3996 patches, 999 LLM tokens
PATCH_ROW = 3 * 2 * 14 * 14  # channels x temporal patch x patch x patch


def vision_config():
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    vision = qwen2_vl_config("qwen2-vl-2b", "bfloat16")["vision_config"]
    return Qwen2VLVisionConfig(**vision, in_channels=vision["in_chans"], hidden_act="quick_gelu")


def build(cls, cfg, weights):
    from vllm.utils.torch_utils import set_default_torch_dtype

    with set_default_torch_dtype(torch.bfloat16), torch.device("cuda"):
        model = cls(cfg, norm_eps=1e-6, prefix="visual")
    model.load_weights(iter(weights))
    return model.eval()


def seconds_per_call(fn, iters: int = 5) -> float:
    fn()
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def measure(images: int) -> dict:
    from vllm.model_executor.models.qwen2_vl import Qwen2VisionTransformer

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower, hf_weight_shapes

    cfg = vision_config()
    gen = torch.Generator().manual_seed(0)
    weights = [(k, torch.randn(s, generator=gen) * 0.02) for k, s in hf_weight_shapes(cfg).items()]
    ours = build(Qwen2VisionTower, cfg, weights)
    intree = build(Qwen2VisionTransformer, cfg, weights)
    grids = [IMAGE_1024x768] * images
    pixels = torch.randn(images * 3996, PATCH_ROW, device="cuda")
    with torch.inference_mode():
        ours_ms = seconds_per_call(lambda: ours(pixels, grids)) * 1e3
        intree_ms = seconds_per_call(lambda: intree(pixels, torch.tensor(grids))) * 1e3
    return {
        "images": images,
        "ours_ms": ours_ms,
        "intree_ms": intree_ms,
        "ours_ms_per_image": ours_ms / images,
        "intree_ms_per_image": intree_ms / images,
        "ratio_intree_over_ours": intree_ms / ours_ms,
        "device": torch.cuda.get_device_name(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with vllm_env("cuda"):
        result = measure(args.images)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU preprocessing speed: ours vs qwen-vl-utils + transformers' fast Qwen2-VL processors.

Run: python benchmarks/processor_speed.py [--repeats N] [--out benchmarks/results/processor_speed_cpu.json]
Each case goes from the encoded file on disk to model-ready pixel_values (+ grid_thw); the last one starts
from a decoded PIL image and compares with the image processor in-tree vLLM runs (where our TTFT goes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")  # before qwen_vl_utils is imported

import qwen_vl_utils  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor  # noqa: E402
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: E402

from qwenvl_vllm import processors  # noqa: E402
from qwenvl_vllm.checkpoint.configs import qwen2_vl_preprocessor_config  # noqa: E402
from qwenvl_vllm.processors.patchify import patchify  # noqa: E402
from qwenvl_vllm.synthetic import make_image, write_video  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (decoder and thread pools)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ours_image(path: str):
    return patchify(processors.fetch_image({"image": path}))


def reference_image(path: str, hf: Qwen2VLImageProcessor):
    image = qwen_vl_utils.fetch_image({"image": path})
    out = hf(images=image, return_tensors="pt")
    assert out["pixel_values"].shape[0] == image.width * image.height // 196, "reference resized the image"
    return out


def ours_video(ele: dict):
    return patchify(processors.fetch_video(ele))


def reference_video(ele: dict, hf: Qwen2VLVideoProcessor):
    video = qwen_vl_utils.fetch_video(ele)
    return hf(videos=[video], do_sample_frames=False, return_tensors="pt")


def in_tree_path(hf: Qwen2VLImageProcessor, repeats: int) -> dict:
    """Offline W1's per-image CPU work from a decoded 1024x768 PIL image: ours (PIL bicubic resize to the
    qwen-vl-utils size, patchify straight to bf16) vs in-tree vLLM's (transformers' torchvision processor)."""
    image = make_image(1024, 768, seed=1)
    size = (1036, 756)  # smart_resize(768, 1024)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    breakdown = {
        "pil_bicubic_resize_ms": median_ms(lambda: image.resize(size, Image.Resampling.BICUBIC), repeats),
        "patchify_to_bf16_ms": median_ms(lambda: patchify(resized, dtype=torch.bfloat16), repeats),
    }
    in_tree = median_ms(
        lambda: hf(images=image, return_tensors="pt")["pixel_values"].to(torch.bfloat16), repeats
    )
    return {
        "case": "in_tree_path_pil_1024x768",
        "ours_ms": sum(breakdown.values()),
        "reference_ms": in_tree,
        "reference": "transformers Qwen2VLImageProcessor (torchvision backend), as in-tree vLLM runs it",
        "ours_breakdown": breakdown,
    }


def make_media(root: Path) -> dict[str, str]:
    media = {}
    for name, (w, h) in {"image_1024x768": (1024, 768), "image_4000x3000": (4000, 3000)}.items():
        media[name] = str(root / f"{name}.jpg")
        make_image(w, h, seed=1).save(media[name], quality=90)
    media["video_30s_720p"] = str(write_video(root / "clip.mp4", 900, 30.0, 1280, 720))
    return media


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--video-repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/processor_speed_cpu.json")
    args = parser.parse_args()
    # the released checkpoints' pixel limits; transformers' own defaults would downscale large images
    released = qwen2_vl_preprocessor_config()
    hf_image = Qwen2VLImageProcessor(min_pixels=released["min_pixels"], max_pixels=released["max_pixels"])
    hf_video = Qwen2VLVideoProcessor()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        media = make_media(Path(tmp))
        for name in ("image_1024x768", "image_4000x3000"):
            path = media[name]
            ours = median_ms(lambda p=path: ours_image(p), args.repeats)
            ref = median_ms(lambda p=path: reference_image(p, hf_image), args.repeats)
            image = processors.fetch_image({"image": path})
            breakdown = {
                "fetch_image_ms (decode + PIL bicubic resize)": median_ms(
                    lambda p=path: processors.fetch_image({"image": p}), args.repeats
                ),
                "patchify_ms": median_ms(lambda im=image: patchify(im), args.repeats),
            }
            rows.append({"case": name, "ours_ms": ours, "reference_ms": ref, "ours_breakdown": breakdown})
        ele = {"video": media["video_30s_720p"], "fps": 2.0}
        ours = median_ms(lambda: ours_video(ele), args.video_repeats)
        ref = median_ms(lambda: reference_video(ele, hf_video), args.video_repeats)
        video = processors.fetch_video(ele)
        breakdown = {
            "fetch_video_ms (decord decode + resize)": median_ms(lambda: processors.fetch_video(ele), 1),
            "patchify_ms": median_ms(lambda: patchify(video), 1),
        }
        rows.append(
            {"case": "video_30s_720p_fps2", "ours_ms": ours, "reference_ms": ref, "ours_breakdown": breakdown}
        )
        rows.append(in_tree_path(hf_image, args.repeats))
    for row in rows:
        row["speedup"] = row["reference_ms"] / row["ours_ms"]
        print(
            f"{row['case']:24s} ours {row['ours_ms']:9.1f} ms   reference {row['reference_ms']:9.1f} ms"
            f"   speedup {row['speedup']:.2f}x"
        )
    result = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "reference": "qwen-vl-utils 0.0.14 (decord) + transformers Qwen2-VL image/video processors",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""API-server CPU time per image: what `vllm serve` does on its front end before the engine sees a request.

    python benchmarks/frontend_speed.py [--repeats N] [--out FILE]

Per JPEG photo size (1024x768, 1920x1080, 4032x3024; synthetic photos, quality 90), three sides, each in its
own process (the plugin registers at import): ours with pixels on the GPU (the default: the processor ships
decoded uint8 and the target size), ours with CPU pixels (resize + normalise + patchify on the API server),
and in-tree vLLM (transformers' torchvision processor). Each side: decode (the side's own media IO:
`QwenVLImageMediaIO` for ours, vLLM's `ImageMediaIO` in-tree) and vLLM's multimodal processor `apply` on the
decoded image (`MediaWithBytes` with uuid None, as the chat endpoint passes it; one torch thread, as vLLM's
renderer sets it; no processor cache),
median ms. Issue 10's target: front end <= decode + 1 ms. Last, W3's 16-frame clips (already decoded
frames) through the same processor: in-tree resizes them on the CPU, ours on the GPU.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import print_and_save

SIZES = ((1024, 768), (1920, 1080), (4032, 3024))
SIDES = {  # name -> environment
    "ours_device_pixels": {"QWENVL_VLLM_DISABLE": "0", "QWENVL_VLLM_DEVICE_PIXELS": "1"},
    "ours_cpu_pixels": {"QWENVL_VLLM_DISABLE": "0", "QWENVL_VLLM_DEVICE_PIXELS": "0"},
    "in_tree": {"QWENVL_VLLM_DISABLE": "1"},
}
VIDEO_CASE = "16 x 640x360 frames (W3)"
PROMPT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"


def jpeg(width: int, height: int, seed: int) -> bytes:
    from qwenvl_vllm.synthetic import make_image

    buf = io.BytesIO()
    make_image(width, height, seed=seed).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def median_ms(fn, inputs: list) -> float:
    fn(inputs[0])  # warm-up
    times = []
    for item in inputs[1:]:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _media_io(side: str):
    if side == "in_tree":
        from vllm.multimodal.media.image import ImageMediaIO

        return ImageMediaIO()
    from qwenvl_vllm.serving.image_io import QwenVLImageMediaIO

    return QwenVLImageMediaIO()


def processor_for(side: str, ckpt: str):
    """vLLM's multimodal processor for `ckpt` as the side's server builds it (ours: the plugin registered)."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    if side != "in_tree":
        from qwenvl_vllm.model_registry import register

        register()
    config = ModelConfig(model=ckpt, max_model_len=16384, limit_mm_per_prompt={"image": 1, "video": 1})
    return MULTIMODAL_REGISTRY.create_processor(config)


def apply(processor, media, prompt: str = PROMPT, modality: str = "image", uuids: list | None = None) -> None:
    """`processor.apply` as vLLM's renderer calls it: one torch thread (unless OMP_NUM_THREADS), and per-item
    uuids of None from the chat endpoint (then the hash covers the encoded bytes of a MediaWithBytes, not the
    pixels); offline `LLM.generate` passes none."""
    from vllm.multimodal.processing import ProcessorInputs, TimingContext
    from vllm.utils.torch_utils import set_default_torch_num_threads

    items = processor.info.parse_mm_data({modality: media})
    uuid_items = {modality: uuids} if uuids is not None else None
    with set_default_torch_num_threads():
        inputs = ProcessorInputs(prompt, items, uuid_items, hf_processor_mm_kwargs={})
        processor.apply(inputs, TimingContext(enabled=False))


def measure_side(side: str, ckpt: str, repeats: int) -> dict:
    from vllm.multimodal.hasher import MultiModalHasher

    process = functools.partial(apply, processor_for(side, ckpt))
    media_io = _media_io(side)
    rows = []
    for width, height in SIZES:
        blobs = [jpeg(width, height, seed) for seed in range(repeats + 1)]
        images = [media_io.load_bytes(b) for b in blobs]  # MediaWithBytes, as `vllm serve` passes it
        decode = median_ms(media_io.load_bytes, blobs)
        proc = median_ms(lambda image: process(image, uuids=[None]), images)
        rows.append(
            {
                "image": f"{width}x{height}",
                "decode_ms": decode,
                "processor_ms": proc,
                "total_ms": decode + proc,
                # of processor_ms: vLLM's hash for its processor cache key: of the encoded bytes in-tree; ours
                # tags each image with its bytes' id, hashed beside the decoding (serving.content_id), so
                # vLLM hashes the 16-byte id (the bytes' hash is then in decode_ms, on a second thread)
                "vllm_hash_ms": median_ms(
                    lambda image: MultiModalHasher.hash_kwargs(model_id=ckpt, image=image), images
                ),
            }
        )
    rows.append(
        {"video": VIDEO_CASE, "processor_ms": median_ms(lambda r: process(*r), video_requests(repeats))}
    )
    return {"side": side, "rows": rows}


def video_requests(repeats: int) -> list[tuple]:
    """Benchmark W3's clips (decoded uint8 frames): the processor alone, as `LLM.generate` runs it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from workloads import w3

    return [(r["multi_modal_data"]["video"], r["prompt"], "video") for r in w3(repeats + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES), help="default: all")
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure_side(args.side, args.ckpt, args.repeats)))
        return
    from qwenvl_vllm.checkpoint import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(
            write_checkpoint("tiny-qwen2-vl", "bf16", Path(tmp) / "ckpt")
        )  # the released processor config
        sides = {}
        for side in args.sides:
            env = SIDES[side]
            cmd = [sys.executable, __file__, "--side", side, "--ckpt", ckpt, "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, env=dict(os.environ, **env), check=True, capture_output=True, text=True)
            sides[side] = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "repeats": args.repeats,
        "sides": sides,
        "over_decode_ms": {
            side: {r.get("image", r.get("video")): r["processor_ms"] for r in rows}
            for side, rows in sides.items()
        },
    }
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()

"""Interleaved A/Bs of the front end's parts, run by run in one process (this host's drift hits both sides;
frontend_speed.py runs its sides one after the other, each in its own process).

    python benchmarks/frontend_ab.py [--runs 200] [--out FILE]

- `decode`: our server's decoder (`QwenVLImageMediaIO.load_bytes`) against vLLM's (`ImageMediaIO`), ms per
  JPEG photo.
- `prompt_join`: vLLM's multimodal processor `apply` on a decoded photo (frontend_speed.py's "over
  decode") with our prompt join (`list.extend`, models.token_matches) against vLLM's list comprehension.
  The join's cost grows with the prompt's tokens: ~1,000 at 1024x768, ~15,560 at 4032x3024.
- `placeholder_search`: the same `apply` with our placeholder search (models.token_matches) against
  vLLM's, which copies a prompt-long slice at each text token before a placeholder.
Medians per photo size.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import frontend_speed  # noqa: E402
from report import print_and_save  # noqa: E402

SIZES = ((1024, 768), (4032, 3024))


def interleaved(sides: dict, inputs: list, runs: int, before=None) -> dict[str, float]:
    """Median ms of each side over `runs` rounds, the sides' order alternating; `before(side)` sets up."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for run in range(runs):
        for name in list(sides) if run % 2 else list(reversed(sides)):
            if before is not None:
                before(name)
            start = time.perf_counter()
            sides[name](inputs[run % len(inputs)])
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def decode(runs: int) -> dict[str, dict[str, float]]:
    from vllm.multimodal.media.image import ImageMediaIO

    from qwenvl_vllm.serving.image_io import QwenVLImageMediaIO

    sides = {"ours": QwenVLImageMediaIO().load_bytes, "vllm": ImageMediaIO().load_bytes}
    result = {}
    for width, height in SIZES:
        blobs = [frontend_speed.jpeg(width, height, seed) for seed in range(4)]
        result[f"{width}x{height}"] = interleaved(sides, blobs, runs)
    return result


def processor_part(ckpt: str, runs: int, method: str) -> dict[str, dict[str, float]]:
    """`apply` on decoded photos with our processor's `method` against `BaseMultiModalProcessor`'s."""
    from vllm.multimodal.processing import BaseMultiModalProcessor

    proc = frontend_speed.processor_for("ours", ckpt)
    vllms = functools.partial(getattr(BaseMultiModalProcessor, method), proc)
    ways = {"ours": getattr(proc, method), "vllm": vllms}
    media_io = frontend_speed._media_io("ours")

    def apply(image) -> None:
        frontend_speed.apply(proc, image, uuids=[None])

    def use(name: str) -> None:
        setattr(proc, method, ways[name])

    result = {}
    for width, height in SIZES:
        images = [media_io.load_bytes(frontend_speed.jpeg(width, height, seed)) for seed in range(4)]
        apply(images[0])  # warm-up
        result[f"{width}x{height}"] = interleaved({name: apply for name in ways}, images, runs, use)
    return result


PARTS = {  # name -> what it compares
    "decode": None,
    "prompt_join": "_apply_token_matches",
    "placeholder_search": "_find_mm_placeholders",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from qwenvl_vllm.checkpoint import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(write_checkpoint("tiny-qwen2-vl", "bf16", Path(tmp) / "ckpt"))
        medians = {
            part: decode(args.runs) if PARTS[part] is None else processor_part(ckpt, args.runs, PARTS[part])
            for part in args.parts
        }
    meta = {"machine": platform.machine(), "date": time.strftime("%Y-%m-%d"), "runs": args.runs}
    print_and_save({**meta, "median_ms": medians}, args.out)


if __name__ == "__main__":
    main()

"""A/B of the processor's prompt join: ours (`list.extend`, models.token_matches) against vLLM's list
comprehension, on the same processor and images, interleaved run by run (this host's drift hits both).

    python benchmarks/prompt_join_ab.py [--runs 200] [--out FILE]

Median ms of vLLM's multimodal processor `apply` on a decoded JPEG photo (as frontend_speed.py measures
"over decode"), per photo size. The join's cost grows with the prompt's tokens: ~1,000 at 1024x768,
~15,560 at 4032x3024.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import frontend_speed  # noqa: E402

SIZES = ((1024, 768), (4032, 3024))


def measure(ckpt: str, runs: int) -> dict[str, dict[str, float]]:
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.processing import BaseMultiModalProcessor, ProcessorInputs, TimingContext
    from vllm.utils.torch_utils import set_default_torch_num_threads

    from qwenvl_vllm.model_registry import register

    register()
    config = ModelConfig(model=ckpt, max_model_len=16384, limit_mm_per_prompt={"image": 1, "video": 1})
    proc = MULTIMODAL_REGISTRY.create_processor(config)
    joins = {
        "ours_extend": proc._apply_token_matches,
        "vllm_listcomp": functools.partial(BaseMultiModalProcessor._apply_token_matches, proc),
    }
    media_io = frontend_speed._media_io("ours")

    def apply(image) -> float:
        items = proc.info.parse_mm_data({"image": image})
        start = time.perf_counter()
        with set_default_torch_num_threads():
            inputs = ProcessorInputs(
                frontend_speed.PROMPT, items, {"image": [None]}, hf_processor_mm_kwargs={}
            )
            proc.apply(inputs, TimingContext(enabled=False))
        return (time.perf_counter() - start) * 1000

    result = {}
    for width, height in SIZES:
        images = [media_io.load_bytes(frontend_speed.jpeg(width, height, seed)) for seed in range(4)]
        apply(images[0])  # warm-up
        times: dict[str, list[float]] = {name: [] for name in joins}
        for run in range(runs):
            order = list(joins) if run % 2 else list(reversed(joins))
            for name in order:
                proc._apply_token_matches = joins[name]
                times[name].append(apply(images[run % len(images)]))
        result[f"{width}x{height}"] = {name: statistics.median(t) for name, t in times.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from qwenvl_vllm.checkpoint import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(write_checkpoint("tiny-qwen2-vl", "bf16", Path(tmp) / "ckpt"))
        medians = measure(ckpt, args.runs)
    text = json.dumps(
        {
            "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
            "runs": args.runs,
            "median_ms": medians,
        },
        indent=2,
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

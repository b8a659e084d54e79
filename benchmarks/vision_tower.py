"""Qwen2-VL-2B vision tower alone: ours (bf16, fp8) vs vLLM's in-tree tower, same weights, same process.

  python benchmarks/vision_tower.py --out-dir benchmarks/results/<date>-<gpu>

For 448x448, 1024x768 and 1920x1080 images (batches of 8, and single 448x448 / 1024x768 images: the
latency case) and a 16-frame 640x360 video (`--cases` also offers one 4032x3024 photo): ms per item,
TFLOP/s, % of the bf16 floor (FLOPs / H200 dense bf16 rate) and a torch-profiler breakdown by kernel
category; plus output error of each path vs ours bf16 on synthetic photos. Writes vision_tower.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from qwenvl_vllm.processors.patchify import patchify  # noqa: E402
from qwenvl_vllm.processors.sizing import smart_resize  # noqa: E402
from qwenvl_vllm.processors.video import video_size  # noqa: E402
from qwenvl_vllm.synthetic import random_rgb  # noqa: E402

PEAK_BF16_FLOPS = 790e12  # H200 dense bf16 rate used for the floor
GRAPH_MAX_PATCHES = 16384  # ours_bf16 / ours_fp8 run batches up to this size as CUDA graphs
VISION_2B = dict(
    depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
    temporal_patch_size=2, spatial_merge_size=2, in_channels=3, hidden_act="quick_gelu",
)  # fmt: skip
CATEGORIES = [  # first match wins; names of cuBLAS/CUTLASS/FlashAttention/Triton/ATen kernels
    ("attention", ("flash", "fmha", "attn", "cudnn")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul")),
    ("layernorm", ("layer_norm", "layernorm")),
    ("gelu", ("gelu",)),
    ("rotary", ("rotary",)),
    ("fp8 quant", ("quant", "fp8")),
    ("copy / cat", ("copy", "cat", "contiguous")),
    ("elementwise", ("elementwise", "vectorized")),
]


def cases() -> dict[str, tuple[list[tuple[int, int, int]], int]]:
    """name -> (grid per item, items per batch)."""

    def image(w: int, h: int) -> tuple[int, int, int]:
        rh, rw = smart_resize(h, w)
        return (1, rh // 14, rw // 14)

    vh, vw = video_size({}, 16, 360, 640, 28)
    return {
        "448x448": ([image(448, 448)] * 8, 8),
        "1024x768": ([image(1024, 768)] * 8, 8),
        "1920x1080": ([image(1920, 1080)] * 8, 8),
        "1024x768_single": ([image(1024, 768)], 1),
        "448x448_single": ([image(448, 448)], 1),
        "video_16x640x360": ([(8, vh // 14, vw // 14)], 1),
        "4032x3024_single": ([image(4032, 3024)], 1),  # 62,208 patches: ~1.3 s per call, opt-in
    }


OPT_IN_CASES = ("4032x3024_single",)  # run only when --cases names them


def flops_per_item(grid: tuple[int, int, int]) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one item through the 2B tower."""
    t, h, w = grid
    n, e, depth, mlp = t * h * w, VISION_2B["embed_dim"], VISION_2B["depth"], 4 * VISION_2B["embed_dim"]
    block = 2 * n * (e * 3 * e + e * e + 2 * e * mlp)
    merger = 2 * (n // 4) * (4 * e * 4 * e + 4 * e * VISION_2B["hidden_size"])
    linears = depth * block + 2 * n * 1176 * e + merger
    attention = depth * t * 4 * (h * w) ** 2 * e  # QK^T and PV per frame, all heads
    return float(linears), float(attention)


def pixels_for(grids: list[tuple[int, int, int]]) -> torch.Tensor:
    """Patch rows of synthetic photos with exactly these grids (one photo per item, frames repeated)."""
    rows = []
    for i, (t, h, w) in enumerate(grids):
        photo = random_rgb(h * 14, w * 14, seed=i)
        frames = np.repeat(photo.transpose(2, 0, 1)[None], 2 * t, axis=0) if t > 1 else photo
        rows.append(patchify(torch.from_numpy(np.ascontiguousarray(frames)), dtype=torch.bfloat16)[0])
    return torch.cat(rows).cuda()


def time_ms(fn, iters: int) -> float:
    for _ in range(2):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def host_ms(fn) -> float:
    """CPU time to enqueue one call while the GPU is kept busy: the launch cost per call. A value near
    1000 ms means the call waited for the GPU (a device sync inside)."""
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU spinning ahead of the call
    t0 = time.perf_counter()
    fn()
    elapsed = (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize()
    return elapsed


def graph_ms(fn, iters: int) -> float:
    """ms per call replaying a CUDA graph of `fn` (what launch overhead costs, by its absence)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_ms(graph.replay, iters)


def kernel_ms(fn) -> list[tuple[str, float]]:
    """(kernel name, GPU ms) of one profiled call, longest first."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    times = [(e.key, (getattr(e, "device_time_total", 0.0) or 0.0) / 1e3) for e in prof.key_averages()]
    return sorted(((k, ms) for k, ms in times if ms > 0 and not k.startswith("cuda")), key=lambda kv: -kv[1])


def breakdown_ms(kernels: list[tuple[str, float]], items: int) -> dict[str, float]:
    """GPU kernel time per item by category."""
    totals: dict[str, float] = defaultdict(float)
    for key, ms in kernels:
        name = key.lower()
        cat = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        totals[cat] += ms / items
    return {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def build_paths(attn_backends: list[str]) -> dict[str, torch.nn.Module]:
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from vllm.model_executor.models.qwen2_vl import Qwen2VisionTransformer
    from vllm.utils.torch_utils import set_default_torch_dtype
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower, hf_weight_shapes

    cfg = Qwen2VLVisionConfig(**VISION_2B)
    gen = torch.Generator().manual_seed(0)
    weights = {}
    for name, shape in hf_weight_shapes(cfg).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        weights[name] = torch.randn(shape, generator=gen) * (fan_in**-0.5 if fan_in else 0.1)
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("ln_q.weight"):
            weights[name] += 1.0

    def build(cls, **kw):
        with set_default_torch_dtype(torch.bfloat16), torch.device("cuda"):
            model = cls(cfg, norm_eps=1e-6, prefix="visual", **kw)
        model.load_weights(iter(list(weights.items())))
        return model.eval()

    paths = {
        "ours_bf16": build(Qwen2VisionTower, use_fp8=False, graph_max_patches=GRAPH_MAX_PATCHES),
        "ours_bf16_eager": build(Qwen2VisionTower, use_fp8=False, graph_max_patches=0),
        "ours_fp8": build(Qwen2VisionTower, use_fp8=True, graph_max_patches=GRAPH_MAX_PATCHES),
        "in_tree": build(Qwen2VisionTransformer),
    }
    for backend in attn_backends:
        model = build(Qwen2VisionTower, use_fp8=False)
        for block in model.blocks:
            block.attn.attn.attn_backend = AttentionBackendEnum[backend]
            block.attn.attn.is_flash_attn_backend = False
        paths[f"ours_bf16_{backend.lower()}"] = model
    return paths


def run_case(paths, name, grids, items, iters, profile: bool) -> dict:
    pixels = pixels_for(grids)
    lin, att = (sum(v) for v in zip(*(flops_per_item(g) for g in grids), strict=True))
    lin, att = lin / items, att / items
    out: dict = {"grid": grids[0], "items": items}
    out["tflop_per_item"] = {"linear": lin / 1e12, "attention": att / 1e12}
    out["bf16_floor_ms_per_item"] = (lin + att) / PEAK_BF16_FLOPS * 1e3
    outputs = {}
    for path, model in paths.items():
        grid_arg = torch.tensor(grids) if path == "in_tree" else grids

        def call(model=model, grid_arg=grid_arg):
            return model(pixels, grid_arg)

        try:
            with torch.inference_mode():
                outputs[path] = call().float()
                ms = time_ms(call, iters) / items
                entry = {"ms_per_item": round(ms, 3), "tflops": round((lin + att) / ms / 1e9, 1)}
                entry["pct_of_floor"] = round(100 * out["bf16_floor_ms_per_item"] / ms, 1)
                entry["host_ms_per_call"] = round(host_ms(call), 2)
                if path == "ours_bf16_eager":
                    try:
                        entry["cuda_graph_ms_per_item"] = round(graph_ms(call, iters) / items, 3)
                    except Exception as exc:
                        entry["cuda_graph_error"] = f"{type(exc).__name__}: {exc}"[:300]
                if profile:
                    kernels = kernel_ms(call)
                    entry["breakdown_ms_per_item"] = breakdown_ms(kernels, items)
                    entry["top_kernels_ms_per_call"] = [(k[:120], round(ms, 3)) for k, ms in kernels[:12]]
        except Exception as exc:  # a backend missing on this machine must not hide the others
            entry = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        out[path] = entry
        print(f"{name:>18} {path:>24}: {entry}", flush=True)
    ref = outputs.get("ours_bf16")
    if ref is not None:
        scale = ref.abs().max().item()
        out["max_rel_err_vs_ours_bf16"] = {
            p: (o - ref).abs().max().item() / scale for p, o in outputs.items() if p != "ours_bf16"
        }
        out["mean_rel_err_vs_ours_bf16"] = {
            p: ((o - ref).norm() / ref.norm()).item() for p, o in outputs.items() if p != "ours_bf16"
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--attn-backends", nargs="*", default=[], help="extra backends for ours bf16")
    ap.add_argument(
        "--cases", nargs="+", choices=list(cases()), default=[n for n in cases() if n not in OPT_IN_CASES]
    )
    args = ap.parse_args()
    from helpers import vllm_env

    with vllm_env("cuda"):
        paths = build_paths(args.attn_backends)
        results = {
            name: run_case(paths, name, grids, items, args.iters, profile=True)
            for name, (grids, items) in cases().items()
            if name in args.cases
        }
    main_case = results.get("1024x768", {})
    summary = {
        "gpu": torch.cuda.get_device_name(),
        "date": datetime.date.today().isoformat(),
        "vllm_version": __import__("vllm").__version__,
        "torch_version": torch.__version__,
        "peak_bf16_flops_for_floor": PEAK_BF16_FLOPS,
    }
    for path in ("ours_bf16", "ours_fp8", "in_tree"):
        summary[f"{path}_ms_per_img_1024x768"] = main_case.get(path, {}).get("ms_per_item")
    if summary["ours_bf16_ms_per_img_1024x768"] and summary["in_tree_ms_per_img_1024x768"]:
        summary["speedup_bf16_vs_in_tree_1024x768"] = round(
            summary["in_tree_ms_per_img_1024x768"] / summary["ours_bf16_ms_per_img_1024x768"], 3
        )
    if summary["ours_fp8_ms_per_img_1024x768"] and summary["in_tree_ms_per_img_1024x768"]:
        summary["speedup_fp8_vs_in_tree_1024x768"] = round(
            summary["in_tree_ms_per_img_1024x768"] / summary["ours_fp8_ms_per_img_1024x768"], 3
        )
    summary["cases"] = results
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vision_tower.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    main()

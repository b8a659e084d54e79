"""The vision tower's attention alone: FlashAttention-3 varlen (what the tower runs today; head_dim 80 runs
in its 96 kernel) against torch SDPA backends that take head_dim 80 as it is (GPU machine).

    python benchmarks/attention_kernels.py --out FILE [--iters 20]

Qwen2-VL tower shapes: 16 heads x 80, bf16, batches of 8 images of one size. The images of a batch have
equal lengths, so SDPA on the dense [B, H, S, D] view is the same computation as the varlen call. q, k, v
are strided views of one [B, S, 3, H, D] projection output, as in the tower. Per path: ms per image for
one attention call (the tower makes 32, one per block), TFLOP/s (4 * S^2 * H * D per image and call) and the
max abs difference from FA3 (bf16 rounding: ~1e-2 at most). `fa3_fp8`: the same FA3 call on e4m3 q, k, v
(per-tensor scales, quantized outside the timed call, as a fused producer would hand them over), issue 9's
fp8-attention candidate; its difference from bf16 FA3 is fp8 rounding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

HEADS, HEAD_DIM, BATCH = 16, 80, 8
SEQ_LENS = {"448x448": 32 * 32, "1024x768": 54 * 74, "1920x1080": 78 * 138}  # patches per image


def fa3(q, k, v, **descales):  # [B, S, H, D] each
    import torch
    from vllm.v1.attention.backends.fa_utils import flash_attn_varlen_func

    b, s = q.shape[:2]
    cu = torch.arange(0, (b + 1) * s, s, dtype=torch.int32, device=q.device)
    flat = [x.reshape(b * s, HEADS, HEAD_DIM) for x in (q, k, v)]
    out = flash_attn_varlen_func(
        *flat,
        cu_seqlens_q=cu,
        cu_seqlens_k=cu,
        max_seqlen_q=s,
        max_seqlen_k=s,
        softmax_scale=HEAD_DIM**-0.5,
        causal=False,
        fa_version=3,
        **descales,
    )
    return out.view(b, s, HEADS, HEAD_DIM)


def fp8_inputs(q, k, v) -> tuple[list, dict]:
    """e4m3 copies of q, k, v and FA3's descale arguments ([sequences, kv heads] each)."""
    import torch

    fp8 = torch.float8_e4m3fn
    quantized, descales = [], {}
    for name, x in zip("qkv", (q, k, v), strict=True):
        scale = x.abs().amax().float().clamp(min=1e-12) / torch.finfo(fp8).max
        quantized.append((x / scale).to(fp8))
        descales[f"{name}_descale"] = scale.reshape(1, 1).expand(x.shape[0], HEADS)
    return quantized, descales


def sdpa(backend_name: str):
    def run(q, k, v):
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(getattr(SDPBackend, backend_name)):
            out = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)))
        return out.transpose(1, 2)

    return run


def bf16(path):
    return lambda q, k, v: lambda: path(q, k, v)


def fa3_fp8(q, k, v):
    quantized, descales = fp8_inputs(q, k, v)
    return lambda: fa3(*quantized, **descales)


PATHS = {  # name -> (q, k, v) -> the timed call
    "fa3_varlen": bf16(fa3),
    **{
        f"sdpa_{n.lower()}": bf16(sdpa(n))
        for n in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")
    },
    "fa3_fp8": fa3_fp8,
}


def time_ms(fn, iters: int) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def measure(seq: int, iters: int) -> dict:
    import torch

    torch.manual_seed(0)
    qkv = torch.randn(BATCH, seq, 3, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.unbind(2)
    reference = fa3(q, k, v)
    flops = 4 * seq * seq * HEADS * HEAD_DIM
    rows = {}
    for name, prepare in PATHS.items():
        try:
            call = prepare(q, k, v)
            out = call()
            ms = time_ms(call, iters) / BATCH
        except (RuntimeError, TypeError, ValueError) as error:  # a backend that refuses these shapes
            rows[name] = {"error": str(error).splitlines()[0][:200]}
            continue
        rows[name] = {
            "ms_per_img": round(ms, 4),
            "tflops": round(flops / ms / 1e9, 1),
            "max_abs_diff_vs_fa3": float((out.float() - reference.float()).abs().max()),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    import torch

    result = {
        "gpu": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d"),
        "torch_version": torch.__version__,
        "cudnn_version": torch.backends.cudnn.version(),
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "batch": BATCH,
        "ms_per_img": "per image and attention call (the tower makes one per block)",
    }
    for size, seq in SEQ_LENS.items():
        result[size] = measure(seq, args.iters)
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

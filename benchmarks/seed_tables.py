"""The seed model cards' speed/memory tables on our stack, batch 1.

  python benchmarks/seed_tables.py --ckpt DIR --label gptq-int4 --out FILE
Qwen2-VL checkpoint: generate 2048 tokens after 1 / 6144 / 14336 / 30720 input tokens (the Qwen2-VL-2B
GPTQ-Int4 card). Qwen-VL checkpoint: one image (258 tokens) in context, generate 1792 and 7934 tokens (the
Qwen-VL-Chat-Int4 card's 2048 / 8192 rows). Reports tok/s (generated / generation time, prefill included
as in the cards) and memory two ways: weights + the KV cache the sequence needs, and the device's peak
(NVML) with vLLM's KV pool sized for one longest sequence, which is what a batch-1 deployment would hold.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

INPUT_LENGTHS = (1, 6144, 14336, 30720)
OUTPUT_TOKENS = 2048
V1_OUTPUTS = (1792, 7934)  # the Qwen-VL-Chat card: 258-token image context, 2048 / 8192 in all
V1_CONTEXT = 8192  # past seq_length 2048: logn attention (see qwenvl_vllm/models/qwen_vl.py)


def kv_bytes_per_token(config: dict) -> int:
    text = config.get("text_config") or config
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads  # v1: plain MHA
    head_dim = text.get("kv_channels") or text["hidden_size"] // heads
    return 2 * text["num_hidden_layers"] * kv_heads * head_dim * 2  # K and V, 16-bit


def make_llm(ckpt: str, max_model_len: int, limits: dict):
    """KV pool sized for one max_model_len sequence (+5%), so the process peak is the real footprint."""
    from vllm import LLM

    per_token = kv_bytes_per_token(json.loads((Path(ckpt) / "config.json").read_text()))
    budget = int(per_token * max_model_len * 1.05) + 2**26
    llm = LLM(ckpt, max_model_len=max_model_len, kv_cache_memory_bytes=budget, limit_mm_per_prompt=limits)
    return llm, per_token


def timed_row(llm, prompt: dict, max_tokens: int, per_token: int, memory) -> dict:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    elapsed = time.perf_counter() - start
    prompt_len, generated = len(out.prompt_token_ids), len(out.outputs[0].token_ids)
    row = {"input_tokens": prompt_len, "output_tokens": generated, "tok_per_s": generated / elapsed}
    row["kv_cache_gib"] = per_token * (prompt_len + generated) / 2**30
    row["peak_gpu_gib"] = memory.peak_gib()
    print(row, flush=True)
    return row


def worker_v1(args: argparse.Namespace, memory) -> list[dict]:
    """Qwen-VL-Chat card: one image (258 tokens) in context, generating 1792 and 7934 tokens."""
    from qwenvl_vllm.constants import IMG_END_ID, IMG_START_ID, QWEN_VL_IMAGE_SIZE
    from qwenvl_vllm.synthetic import make_image

    os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"  # vLLM derives 2048 from seq_length
    llm, per_token = make_llm(args.ckpt, V1_CONTEXT, {"image": 1})
    size = QWEN_VL_IMAGE_SIZE
    image = {
        "prompt_token_ids": [IMG_START_ID, IMG_END_ID],
        "multi_modal_data": {"image": make_image(size, size)},
    }
    timed_row(llm, image, 8, per_token, memory)  # warm-up
    return [timed_row(llm, image, n, per_token, memory) for n in V1_OUTPUTS]


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_memory import PeakMemory

    v1 = json.loads((Path(args.ckpt) / "config.json").read_text()).get("model_type") == "qwen"
    with PeakMemory() as memory:
        rows = worker_v1(args, memory) if v1 else worker_qwen2_vl(args, memory)
    Path(args.out).write_text(json.dumps(rows))


def worker_qwen2_vl(args: argparse.Namespace, memory) -> list[dict]:
    import numpy as np

    llm, per_token = make_llm(args.ckpt, 32768, {"image": 0, "video": 0})
    rng = np.random.default_rng(0)
    timed_row(llm, {"prompt_token_ids": [100] * 8}, 8, per_token, memory)  # warm-up
    rows = []
    for length in INPUT_LENGTHS:
        prompt = {"prompt_token_ids": rng.integers(1000, 150000, length).tolist()}
        rows.append(timed_row(llm, prompt, OUTPUT_TOKENS, per_token, memory))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows_file = Path(args.out).with_suffix(".rows.json")
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--ckpt",
        args.ckpt,
        "--label",
        args.label,
        "--out",
        str(rows_file),
    ]
    proc = subprocess.run(cmd, text=True, capture_output=True, env=dict(os.environ))
    log = proc.stdout + proc.stderr
    Path(args.out).with_suffix(".log").write_text(log)
    if proc.returncode != 0:
        print(log[-3000:])
        sys.exit(proc.returncode)
    weights = re.search(r"Model loading took ([\d.]+) GiB", log)
    weights_gib = float(weights.group(1)) if weights else None
    rows = json.loads(rows_file.read_text())
    for row in rows:
        row["weights_plus_kv_gib"] = (weights_gib or 0.0) + row["kv_cache_gib"]
    import torch
    import vllm

    result = {
        "gpu": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d"),
        "vllm_version": vllm.__version__,
        "workload": f"seed-table-{args.label}",
        "ckpt": args.ckpt,
        "weights_gib": weights_gib,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

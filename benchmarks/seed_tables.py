"""The seed model card's speed/memory table on our stack: batch 1, generate 2048 tokens after an input of
1 / 6144 / 14336 / 30720 tokens (Qwen2-VL-2B GPTQ-Int4 and BF16, as in the GPTQ-Int4 model card).

  python benchmarks/seed_tables.py --ckpt DIR --label gptq-int4 --out FILE
A Qwen-VL checkpoint gives the Qwen-VL-Chat card's row instead: one image in context, generating up to the
2048-token context (the card's 1792-token row; its 8192-token row needs dynamic NTK, which we don't have).
Reports decode tok/s (2048 / generation time) and memory: the weights vLLM loaded plus the KV cache the
sequence needs. vLLM preallocates its KV pool, so process-level peak memory would only show the pool size.
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
V1_CONTEXT = 2048  # Qwen-VL's seq_length; longer contexts need dynamic NTK / logn (not implemented)


def kv_bytes_per_token(config) -> int:
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads  # v1: plain MHA
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * 2  # K and V, 16-bit


def worker_v1(args: argparse.Namespace) -> None:
    """Qwen-VL-Chat card: one image in context, generate up to the 2048-token context (seq_length)."""
    from vllm import LLM, SamplingParams

    from qwenvl_vllm.processors.qwen_vl import qwen_vl_inputs
    from qwenvl_vllm.synthetic import make_image

    llm = LLM(
        args.ckpt, max_model_len=V1_CONTEXT, gpu_memory_utilization=0.6, limit_mm_per_prompt={"image": 1}
    )
    per_token = kv_bytes_per_token(llm.llm_engine.model_config.hf_text_config)
    inputs, _ = qwen_vl_inputs([{"image": make_image(640, 480)}, {"text": "Describe the picture."}])
    prompt_len = len(llm.generate([inputs], SamplingParams(max_tokens=1), use_tqdm=False)[0].prompt_token_ids)
    params = SamplingParams(temperature=0.0, max_tokens=V1_CONTEXT - prompt_len, ignore_eos=True)
    start = time.perf_counter()
    out = llm.generate([inputs], params, use_tqdm=False)[0]
    elapsed = time.perf_counter() - start
    generated = len(out.outputs[0].token_ids)
    row = {"input_tokens": prompt_len, "output_tokens": generated, "tok_per_s": generated / elapsed}
    row["kv_cache_gib"] = per_token * (prompt_len + generated) / 2**30
    print(row, flush=True)
    Path(args.out).write_text(json.dumps([row]))


def worker(args: argparse.Namespace) -> None:
    if json.loads((Path(args.ckpt) / "config.json").read_text()).get("model_type") == "qwen":
        return worker_v1(args)
    import numpy as np
    from vllm import LLM, SamplingParams

    llm = LLM(
        args.ckpt,
        max_model_len=32768,
        gpu_memory_utilization=0.6,
        limit_mm_per_prompt={"image": 0, "video": 0},
    )
    per_token = kv_bytes_per_token(llm.llm_engine.model_config.hf_text_config)
    rng = np.random.default_rng(0)
    params = SamplingParams(temperature=0.0, max_tokens=OUTPUT_TOKENS, ignore_eos=True)
    llm.generate([{"prompt_token_ids": [100] * 8}], SamplingParams(max_tokens=8), use_tqdm=False)
    rows = []
    for length in INPUT_LENGTHS:
        prompt = {"prompt_token_ids": rng.integers(1000, 150000, length).tolist()}
        start = time.perf_counter()
        out = llm.generate([prompt], params, use_tqdm=False)[0]
        elapsed = time.perf_counter() - start
        generated = len(out.outputs[0].token_ids)
        rows.append(
            {
                "input_tokens": length,
                "output_tokens": generated,
                "tok_per_s": generated / elapsed,
                "kv_cache_gib": per_token * (length + generated) / 2**30,
            }
        )
        print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps(rows))


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

"""The seed model card's speed/memory table on our stack: batch 1, generate 2048 tokens after an input of
1 / 6144 / 14336 / 30720 tokens (Qwen2-VL-2B GPTQ-Int4 and BF16, as in the GPTQ-Int4 model card).

  python benchmarks/seed_tables.py --ckpt DIR --label gptq-int4 --out FILE
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


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    from vllm import LLM, SamplingParams

    llm = LLM(
        args.ckpt,
        max_model_len=32768,
        gpu_memory_utilization=0.6,
        limit_mm_per_prompt={"image": 0, "video": 0},
    )
    config = llm.llm_engine.model_config.hf_text_config
    kv_bytes_per_token = (
        2
        * config.num_hidden_layers
        * config.num_key_value_heads
        * (config.hidden_size // config.num_attention_heads)
        * 2
    )
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
                "kv_cache_gib": kv_bytes_per_token * (length + generated) / 2**30,
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

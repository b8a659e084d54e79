"""The GPU scripts' shared engine options and their worker subprocesses.

A fixed KV-cache size lets several engines share one GPU: with `kv_cache_memory_bytes` vLLM skips its
profiling-based sizing, whose check fails when another process on the GPU frees memory during the profile
(e.g. a parity run's engine shutting down beside a server).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

KV_CACHE_HELP = "fixed KV cache in GiB instead of profiling (lets engines share the GPU); default: profile"


def kv_cache_bytes(gib: float | None) -> int | None:
    return int(gib * 2**30) if gib else None


def add_engine_args(parser: argparse.ArgumentParser, *, gpu_memory_utilization: float = 0.3) -> None:
    parser.add_argument("--gpu-memory-utilization", type=float, default=gpu_memory_utilization)
    parser.add_argument("--kv-cache-gib", type=float, default=None, help=KV_CACHE_HELP)
    parser.add_argument("--eager", action="store_true", help="enforce_eager (no torch.compile / CUDA graphs)")


def engine_argv(args: argparse.Namespace) -> list[str]:
    """`add_engine_args`' options as given, for a worker subprocess."""
    argv = ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    argv += ["--kv-cache-gib", str(args.kv_cache_gib)] if args.kv_cache_gib else []
    return argv + (["--eager"] if args.eager else [])


def run_json_worker(script: str, argv: list[str], out: Path, **env: str) -> Any:
    """Run `script` with `argv` in a fresh interpreter (its own GPU context) and read the JSON it writes to
    `out`; `env` is added to this process's environment."""
    cmd = [sys.executable, script, *argv, "--out", str(out)]
    subprocess.run(cmd, env=dict(os.environ, **env), check=True)
    return json.loads(out.read_text())

"""CPU checks of scripts/gpu/engine_args.py: a worker subprocess gets the engine options it was given."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "gpu"))
import engine_args  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    engine_args.add_engine_args(parser, gpu_memory_utilization=0.45)
    return parser


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--eager"],
        ["--kv-cache-gib", "8"],
        ["--gpu-memory-utilization", "0.2", "--kv-cache-gib", "1.5", "--eager"],
    ],
)
def test_engine_argv_round_trips(argv: list[str]) -> None:
    given = _parser().parse_args(argv)
    assert _parser().parse_args(engine_args.engine_argv(given)) == given


def test_kv_cache_bytes() -> None:
    assert engine_args.kv_cache_bytes(None) is None
    assert engine_args.kv_cache_bytes(1.5) == 3 * 2**29


def test_run_json_worker_passes_argv_and_env(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "json.dump({'argv': sys.argv[1:], 'flag': os.environ.get('ENGINE_ARGS_TEST')}, open(out, 'w'))\n"
    )
    got = engine_args.run_json_worker(str(script), ["--eager"], tmp_path / "o.json", ENGINE_ARGS_TEST="7")
    assert got == {"argv": ["--eager", "--out", str(tmp_path / "o.json")], "flag": "7"}

"""`qwenvl-vllm` console script: one argparse subcommand per task (others can register more)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
# name -> (help, add_arguments, run); add entries with register_command().
_COMMANDS: dict[str, tuple[str, AddArguments, Run]] = {}


def register_command(
    name: str,
    help_text: str,
    add_arguments: AddArguments,
    run: Run,
) -> None:
    _COMMANDS[name] = (help_text, add_arguments, run)


def _add_make_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    from .checkpoint import MODELS, NAME_SCHEMES, QUANTS

    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--quant", default="bf16", choices=QUANTS)
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dequantized",
        action="store_true",
        help="bf16 checkpoint with exactly the dequantized weights of the --quant variant (parity reference)",
    )
    parser.add_argument(
        "--name-scheme", default="default", choices=NAME_SCHEMES, help="Qwen2-VL weight names"
    )
    parser.add_argument("--max-shard-gb", type=float, default=4.0, help="safetensors shard size limit (GB)")
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where quantized weights are packed (same bytes either way); auto: cuda when available",
    )


def _writer_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _run_make_checkpoint(args: argparse.Namespace) -> int:
    from .checkpoint import write_checkpoint

    path = write_checkpoint(
        args.model,
        args.quant,
        args.out,
        seed=args.seed,
        dequantized=args.dequantized,
        name_scheme=args.name_scheme,
        max_shard_bytes=int(args.max_shard_gb * 10**9),
        device=_writer_device(args.device),
    )
    print(path)
    return 0


register_command(
    "make-checkpoint",
    "write a Qwen2-VL / Qwen-VL checkpoint with seeded random weights (no hub needed)",
    _add_make_checkpoint_args,
    _run_make_checkpoint,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwenvl-vllm")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in _COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(cmd)
        cmd.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except ValueError as exc:  # bad combinations (e.g. qwen-vl + awq) are user errors, not crashes
        print(f"qwenvl-vllm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

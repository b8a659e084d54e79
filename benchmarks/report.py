"""A benchmark's JSON result: printed, and written to `--out` when given (its folder made)."""

from __future__ import annotations

import json
from pathlib import Path


def print_and_save(result: dict, out: str | Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")

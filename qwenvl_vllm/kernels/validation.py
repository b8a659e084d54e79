"""Argument checks shared by the kernels: bad sizes are a caller error (ValueError, 400 in the server)."""

from __future__ import annotations


def check_sizes(height: object, width: object) -> None:
    for name, size in (("height", height), ("width", width)):
        # bool is an int subclass; True as a size is a caller bug, not 1
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")

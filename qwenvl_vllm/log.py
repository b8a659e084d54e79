"""The plugin's one logger, and a counter that logs rare events sparingly.

Named under "vllm." so that vLLM's logging configuration (level, format, handlers) shows our messages in
`vllm serve` logs; a plain `logging` logger, so that modules used outside vLLM need not import it.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("vllm.qwenvl_vllm")


class RareEvents:
    """Counts an event that should be rare and logs its 1st, 10th, 100th, ... occurrence (serve logs show
    whether a latency tail comes with it, at no cost per step)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0

    def note(self) -> None:
        self.count += 1
        if str(self.count).rstrip("0") == "1":
            logger.info("qwenvl-vllm: %s (%d times so far)", self.message, self.count)

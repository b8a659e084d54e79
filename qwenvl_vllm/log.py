"""The plugin's one logger.

Named under "vllm." so that vLLM's logging configuration (level, format, handlers) shows our messages in
`vllm serve` logs; a plain `logging` logger, so that modules used outside vLLM need not import it.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("vllm.qwenvl_vllm")

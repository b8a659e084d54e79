"""Offline checkpoint writer: released-looking Qwen2-VL / Qwen-VL directories with seeded random weights."""

from .configs import MODELS, QWEN2_VL_MODELS, QWEN_VL_MODELS
from .writer import NAME_SCHEMES, QUANTS, QWEN_VL_QUANTS, write_checkpoint

__all__ = [
    "MODELS",
    "NAME_SCHEMES",
    "QUANTS",
    "QWEN2_VL_MODELS",
    "QWEN_VL_MODELS",
    "QWEN_VL_QUANTS",
    "write_checkpoint",
]

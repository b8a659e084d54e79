"""Drop-in for qwen-vl-utils 0.0.14 (Qwen2-VL defaults) plus message -> vLLM input conversion."""

from qwenvl_vllm.geometry import ItemTokens

from .image import fetch_image
from .messages import to_vllm_inputs
from .sizing import smart_nframes, smart_resize
from .video import fetch_video
from .vision_info import extract_vision_info, process_vision_info

__all__ = [
    "ItemTokens",
    "extract_vision_info",
    "fetch_image",
    "fetch_video",
    "process_vision_info",
    "smart_nframes",
    "smart_resize",
    "to_vllm_inputs",
]

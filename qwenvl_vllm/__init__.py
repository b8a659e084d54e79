"""qwenvl-vllm: a vLLM plugin serving the Qwen-VL family (Qwen2-VL and Qwen-VL v1)."""

__version__ = "0.1.0"

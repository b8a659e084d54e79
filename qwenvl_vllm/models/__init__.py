"""Model implementations of the qwenvl_vllm plugin, built from vLLM's layers."""

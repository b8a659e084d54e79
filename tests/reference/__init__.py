"""Plain-PyTorch reference implementations used as test yardsticks (no vLLM imports)."""

"""qwenvl-vllm: a vLLM plugin serving the Qwen-VL family (Qwen2-VL and Qwen-VL v1)."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Installed, `processors/` and `model_registry/` live inside this package. From a source checkout
# (a process started in the repository root, e.g. vLLM's model-inspection subprocess) this folder
# shadows the install, so map the checkout's top-level folders in the same way.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "processors" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - __path__ is defined for packages

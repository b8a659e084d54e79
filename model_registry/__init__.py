"""vLLM plugin entry point (group `vllm.general_plugins`): registers our model classes lazily.

vLLM loads general plugins in every process it starts, so `register()` must be cheap and idempotent.
Set QWENVL_VLLM_DISABLE=1 (or leave `qwenvl_vllm` out of VLLM_PLUGINS) to get in-tree vLLM back.
"""

from __future__ import annotations

from qwenvl_vllm.log import logger
from qwenvl_vllm.settings import DISABLE_ENV, get_settings
from qwenvl_vllm.tokenizers import register_qwen_vl

# architecture name in config.json -> "module:Class", imported by vLLM only when a model needs it
ARCHITECTURES: dict[str, str] = {
    "Qwen2VLForConditionalGeneration": "qwenvl_vllm.models.qwen2_vl:Qwen2VLForConditionalGeneration",
    "QWenLMHeadModel": "qwenvl_vllm.models.qwen_vl:QwenVLForConditionalGeneration",
    "QwenVLForConditionalGeneration": "qwenvl_vllm.models.qwen_vl:QwenVLForConditionalGeneration",
}

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    if get_settings().disabled:
        logger.info("qwenvl-vllm disabled by %s; in-tree vLLM models are used", DISABLE_ENV)
        return
    from vllm import ModelRegistry

    from qwenvl_vllm.serving import register_serving

    register_qwen_vl()  # Qwen-VL v1 config + tokenizer without trust_remote_code
    register_serving()  # qwen-vl-utils video sampling and hardened media loading in `vllm serve`
    for arch, target in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
    _register_config_hooks()
    _registered = True
    logger.info("qwenvl-vllm registered %s", ", ".join(ARCHITECTURES))


def _register_config_hooks() -> None:
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from .config_hooks import Qwen2VLConfig, QwenVLConfig

    for arch, target in ARCHITECTURES.items():
        qwen_vl = target.endswith(":QwenVLForConditionalGeneration")
        MODELS_CONFIG_MAP[arch] = QwenVLConfig if qwen_vl else Qwen2VLConfig

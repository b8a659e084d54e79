"""vLLM's per-architecture config hooks for our models, run when an engine config is built (before any
worker): imported by `register()` only, so the entry point stays cheap."""

from __future__ import annotations

from vllm.model_executor.models.config import VerifyAndUpdateConfig

from qwenvl_vllm.models.qwen_ntk import QwenDynamicNTKConfig
from qwenvl_vllm.serving.default_scheduler import apply_default_scheduler
from qwenvl_vllm.serving.step_graphs import apply_full_graphs, apply_step_tokens


class Qwen2VLConfig(VerifyAndUpdateConfig):
    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        apply_default_scheduler(vllm_config)  # first: the step cap follows the scheduler it chose
        apply_step_tokens(vllm_config)
        apply_full_graphs(vllm_config)  # Qwen2-VL only: the model the slicers were measured with


class QwenVLConfig(QwenDynamicNTKConfig):
    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        QwenDynamicNTKConfig.verify_and_update_config(vllm_config)
        apply_step_tokens(vllm_config)

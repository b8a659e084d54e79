"""`vllm serve` integration: our video loader and hardened media connector, registered with vLLM.

Registration only touches vLLM's registries (no imports of model code) and is idempotent: the plugin entry
point runs it in every vLLM process.
"""

from __future__ import annotations

import os

MEDIA_CONNECTOR_ENV = "VLLM_MEDIA_CONNECTOR"


def register_serving() -> None:
    """Bind our video loader to Qwen2-VL's video processor and make our connector vLLM's default.

    The connector becomes the default only when VLLM_MEDIA_CONNECTOR is unset; `VLLM_MEDIA_CONNECTOR=http`
    keeps vLLM's own. vLLM's own video loader stays available as
    `--media-io-kwargs '{"video": {"video_backend": "qwen2_vl"}}'`.
    """
    from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY

    from qwenvl_vllm.serving.connector import MEDIA_CONNECTOR_NAME, QwenVLMediaConnector
    from qwenvl_vllm.serving.video_loader import (
        QWEN2_VL_VIDEO_PROCESSOR,
        VIDEO_LOADER_NAME,
        QwenVLUtilsVideoLoader,
    )

    VIDEO_LOADER_REGISTRY.register(VIDEO_LOADER_NAME, video_processor=QWEN2_VL_VIDEO_PROCESSOR)(
        QwenVLUtilsVideoLoader
    )
    MEDIA_CONNECTOR_REGISTRY.register(MEDIA_CONNECTOR_NAME)(QwenVLMediaConnector)
    os.environ.setdefault(MEDIA_CONNECTOR_ENV, MEDIA_CONNECTOR_NAME)

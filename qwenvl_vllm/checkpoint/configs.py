"""Released config files of Qwen2-VL-{2B,7B,72B}-Instruct and Qwen-VL(-Chat), plus tiny CPU-sized variants.

Values follow the released config.json / generation_config.json / preprocessor_config.json files; the
tiny models keep the real vocabulary, special token ids and vision geometry (patch 14, temporal 2, merge 2;
Qwen-VL: 448 px, 256 queries) but shrink widths and depths. Tiny LLM widths are multiples of 128 so that
GPTQ/AWQ with group 128 (and vLLM's Marlin tile limits: k % 128, n % 64) also apply to them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from qwenvl_vllm.constants import (
    BOS_TOKEN_ID,
    CLIP_MEAN,
    CLIP_STD,
    ENDOFTEXT_ID,
    EOS_TOKEN_ID,
    IMAGE_TOKEN_ID,
    IMG_START_ID,
    PATCH_SIZE,
    QWEN_VL_IMAGE_SIZE,
    QWEN_VL_PATCH_SIZE,
    SPATIAL_MERGE_SIZE,
    TEMPORAL_PATCH_SIZE,
    VIDEO_TOKEN_ID,
    VISION_END_TOKEN_ID,
    VISION_START_TOKEN_ID,
    VISION_TOKEN_ID,
)

QWEN2_VL_MODELS = ("qwen2-vl-2b", "qwen2-vl-7b", "qwen2-vl-72b", "tiny-qwen2-vl")
QWEN_VL_MODELS = ("qwen-vl", "qwen-vl-chat", "tiny-qwen-vl")
MODELS = QWEN2_VL_MODELS + QWEN_VL_MODELS


@dataclass(frozen=True)
class Qwen2VLSizes:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    mrope_section: tuple[int, int, int]
    vision_depth: int = 32
    vision_embed: int = 1280
    vision_heads: int = 16
    vision_mlp_ratio: int = 4


@dataclass(frozen=True)
class QwenVLSizes:
    hidden: int
    layers: int
    heads: int
    kv_channels: int
    intermediate: int  # Qwen's config value: w1/w2 each produce intermediate // 2
    vocab: int
    visual_width: int
    visual_layers: int
    visual_heads: int
    visual_mlp_ratio: float
    chat: bool


QWEN2_VL_SIZES = {
    "qwen2-vl-2b": Qwen2VLSizes(1536, 8960, 28, 12, 2, 151936, True, (16, 24, 24)),
    "qwen2-vl-7b": Qwen2VLSizes(3584, 18944, 28, 28, 4, 152064, False, (16, 24, 24)),
    "qwen2-vl-72b": Qwen2VLSizes(8192, 29568, 80, 64, 8, 152064, False, (16, 24, 24)),
    # head_dim 32 -> mrope sections sum to 16 (= head_dim / 2), same 2:3:3 split as the real [16, 24, 24].
    "tiny-qwen2-vl": Qwen2VLSizes(
        128, 256, 2, 4, 2, 151936, True, (4, 6, 6), vision_depth=2, vision_embed=32, vision_heads=2
    ),
}

QWEN_VL_SIZES = {
    "qwen-vl": QwenVLSizes(4096, 32, 32, 128, 22016, 151936, 1664, 48, 16, 4.9231, chat=False),
    "qwen-vl-chat": QwenVLSizes(4096, 32, 32, 128, 22016, 151936, 1664, 48, 16, 4.9231, chat=True),
    "tiny-qwen-vl": QwenVLSizes(128, 2, 4, 32, 512, 151936, 32, 2, 2, 4.0, chat=True),
}


# Qwen re-released its quantized 72B checkpoints with intermediate_size zero-padded from 29568 (231 groups
# of 128) to 29696 (232), so that the LLM splits into whole groups on 2, 4 and 8 ranks.
QUANTIZED_INTERMEDIATE = {"qwen2-vl-72b": 29696}


def qwen2_vl_sizes(model: str, quantized: bool = False) -> Qwen2VLSizes:
    """The released sizes of `model`; quantized=True: those of its GPTQ/AWQ releases (and their twins)."""
    s = QWEN2_VL_SIZES[model]
    if quantized and model in QUANTIZED_INTERMEDIATE:
        return dataclasses.replace(s, intermediate=QUANTIZED_INTERMEDIATE[model])
    return s


def qwen2_vl_config(model: str, torch_dtype: str, quantized: bool = False) -> dict:
    s = qwen2_vl_sizes(model, quantized)
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "vision_start_token_id": VISION_START_TOKEN_ID,
        "vision_end_token_id": VISION_END_TOKEN_ID,
        "vision_token_id": VISION_TOKEN_ID,
        "image_token_id": IMAGE_TOKEN_ID,
        "video_token_id": VIDEO_TOKEN_ID,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "initializer_range": 0.02,
        "intermediate_size": s.intermediate,
        "max_position_embeddings": 32768,
        "max_window_layers": s.layers,
        "model_type": "qwen2_vl",
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "num_key_value_heads": s.kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": s.tied,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": s.vision_depth,
            "embed_dim": s.vision_embed,
            "mlp_ratio": s.vision_mlp_ratio,
            "num_heads": s.vision_heads,
            "in_chans": 3,
            "hidden_size": s.hidden,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": SPATIAL_MERGE_SIZE,
            "spatial_patch_size": PATCH_SIZE,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": list(s.mrope_section)},
        "vocab_size": s.vocab,
    }


def qwen2_vl_generation_config() -> dict:
    return {
        "bos_token_id": BOS_TOKEN_ID,
        "pad_token_id": BOS_TOKEN_ID,
        "do_sample": True,
        "eos_token_id": [EOS_TOKEN_ID, BOS_TOKEN_ID],
        "repetition_penalty": 1.0,
        "temperature": 0.01,
        "top_p": 0.001,
        "top_k": 1,
        "transformers_version": "4.37.0",
    }


def qwen2_vl_preprocessor_config() -> dict:
    return {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": SPATIAL_MERGE_SIZE,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    }


def qwen_vl_visual(model: str) -> dict:
    s = QWEN_VL_SIZES[model]
    return {
        "heads": s.visual_heads,
        "image_size": QWEN_VL_IMAGE_SIZE,
        "image_start_id": IMG_START_ID,
        "layers": s.visual_layers,
        "mlp_ratio": s.visual_mlp_ratio,
        "output_dim": s.hidden,
        "patch_size": QWEN_VL_PATCH_SIZE,
        "width": s.visual_width,
    }


def qwen_vl_config(model: str, torch_dtype: str) -> dict:
    s = QWEN_VL_SIZES[model]
    return {
        "architectures": ["QWenLMHeadModel"],
        "attn_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
        },
        "bf16": False,
        "emb_dropout_prob": 0.0,
        "fp16": False,
        "fp32": False,
        "hidden_size": s.hidden,
        "initializer_range": 0.02,
        "intermediate_size": s.intermediate,
        "kv_channels": s.kv_channels,
        "layer_norm_epsilon": 1e-06,
        "max_position_embeddings": 8192,
        "model_type": "qwen",
        "no_bias": True,
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "onnx_safe": None,
        "rotary_emb_base": 10000,
        "rotary_pct": 1.0,
        "scale_attn_weights": True,
        "seq_length": 2048,
        "tie_word_embeddings": False,
        "tokenizer_type": "QWenTokenizer",
        "torch_dtype": torch_dtype,
        "transformers_version": "4.31.0",
        "use_cache": True,
        "use_dynamic_ntk": True,
        "use_flash_attn": False,
        "use_logn_attn": True,
        "visual": qwen_vl_visual(model),
        "vocab_size": s.vocab,
    }


def qwen_vl_generation_config(model: str) -> dict:
    if QWEN_VL_SIZES[model].chat:
        return {
            "chat_format": "chatml",
            "do_sample": True,
            "eos_token_id": ENDOFTEXT_ID,
            "max_new_tokens": 512,
            "max_window_size": 6144,
            "pad_token_id": ENDOFTEXT_ID,
            "top_k": 0,
            "top_p": 0.3,
            "transformers_version": "4.31.0",
        }
    # The base (pretrained) model generates raw continuations.
    return {
        "chat_format": "raw",
        "do_sample": True,
        "eos_token_id": ENDOFTEXT_ID,
        "max_new_tokens": 512,
        "pad_token_id": ENDOFTEXT_ID,
        "stop_words_ids": [[ENDOFTEXT_ID]],
        "top_k": 0,
        "top_p": 0.8,
        "transformers_version": "4.31.0",
    }

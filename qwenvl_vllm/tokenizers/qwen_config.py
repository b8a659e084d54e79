"""`QWenConfig`: an in-package config class for model_type "qwen" (Qwen-7B / Qwen-VL v1 checkpoints).

Released Qwen-VL checkpoints point `auto_map` at remote code (configuration_qwen.QWenConfig). transformers
only takes a checkpoint's remote code with `trust_remote_code=True`, unless a class is registered locally
for its model_type; registering this one (see `registration.py`) lets vLLM and `AutoConfig` load such a
directory with trust_remote_code off. Field names and defaults follow the released config.json files.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class QWenConfig(PretrainedConfig):
    model_type = "qwen"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        emb_dropout_prob: float = 0.0,
        attn_dropout_prob: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 8192,
        seq_length: int = 2048,
        scale_attn_weights: bool = True,
        use_cache: bool = True,
        bf16: bool = False,
        fp16: bool = False,
        fp32: bool = False,
        kv_channels: int = 128,
        rotary_pct: float = 1.0,
        rotary_emb_base: float = 10000,
        use_dynamic_ntk: bool = True,
        use_logn_attn: bool = True,
        use_flash_attn: str | bool = "auto",
        intermediate_size: int = 22016,
        no_bias: bool = True,
        visual: dict[str, Any] | None = None,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.emb_dropout_prob = emb_dropout_prob
        self.attn_dropout_prob = attn_dropout_prob
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        # training context; dynamic NTK / logn attention only act beyond it
        self.seq_length = seq_length
        self.scale_attn_weights = scale_attn_weights
        self.use_cache = use_cache
        self.bf16 = bf16
        self.fp16 = fp16
        self.fp32 = fp32
        self.kv_channels = kv_channels
        self.rotary_pct = rotary_pct
        self.rotary_emb_base = rotary_emb_base
        self.use_dynamic_ntk = use_dynamic_ntk
        self.use_logn_attn = use_logn_attn
        self.use_flash_attn = use_flash_attn
        self.no_bias = no_bias
        # Qwen-VL only: the ViT / resampler settings (a plain dict, as in the released config.json)
        self.visual = dict(visual) if visual is not None else None
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

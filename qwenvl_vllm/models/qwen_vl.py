"""Qwen-VL v1 (and text-only Qwen-7B) for vLLM 0.26, natively (no trust_remote_code).

Serves config.json architectures `QWenLMHeadModel` / `QwenVLForConditionalGeneration` (model_type `qwen`).
With a `visual` config section the ViT-bigG + resampler tower is built; without one (Qwen-7B, Qwen-7B-Chat)
the same class is a plain causal LM and vLLM runs it text-only.

LLM = Qwen-7B: RMSNorm pre-norm blocks, fused c_attn (q|k|v, with bias), c_proj (no bias), rotary (neox
style, base `rotary_emb_base`), MLP c_proj(w1(x) * silu(w2(x))), untied lm_head.
Past `seq_length` (2048) the release scales queries by log_{seq_length}(position + 1) ("logn attention")
and, for prompts longer than seq_length, raises the rotary base once per request from the prompt length
("dynamic NTK"). Both are applied here, per request inside vLLM's batches (qwen_ntk.py says how).
"""

import math
from collections.abc import Iterable
from functools import partial
from itertools import islice
from typing import Annotated, Any, Literal

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import CacheConfig, VllmConfig, get_current_vllm_config
from vllm.distributed import get_pp_group, get_tensor_model_parallel_world_size
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsLoRA,
    SupportsMRoPE,
    SupportsMultiModal,
    SupportsPP,
    SupportsQuant,
)
from vllm.model_executor.models.module_mapping import MultiModelKeys
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    PPMissingLayer,
    WeightsMapper,
    make_empty_intermediate_tensors_factory,
    make_layers,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFeatureSpec
from vllm.sequence import IntermediateTensors
from vllm.utils.tensor_schema import TensorSchema, TensorShape

from qwenvl_vllm.constants import QWEN_VL_IMAGE_SIZE, UINT8_PIXEL_KEYS
from qwenvl_vllm.models.encoder_stream import SideStreamEmbedding
from qwenvl_vllm.models.qwen_ntk import (
    NTKLayout,
    get_ntk_rope,
    input_positions,
    ntk_layout,
    ntk_model_state_cls,
    qwen_head_dim,
    qwen_rotary_dim,
    true_positions,
)
from qwenvl_vllm.models.qwen_vl_processing import (
    QwenVLDummyInputsBuilder,
    QwenVLMultiModalProcessor,
    QwenVLProcessingInfo,
)
from qwenvl_vllm.models.qwen_vl_visual import QwenVLVisionTransformer, vision_n_queries
from qwenvl_vllm.models.tower_warmup import TowerWarmup, encoding_tower, warm_qwen_vl, warmup_of
from qwenvl_vllm.processors.qwen_vl_pixels import qwen_vl_pixel_values_on_device
from qwenvl_vllm.settings import get_settings

# Checkpoint names that differ from module names: the tower lives at top level (`visual`) so that
# vLLM can mark it as the tower; w2 (gate) and w1 (up) are stacked into one gate_up_proj.
HF_TO_VLLM_MAPPER = WeightsMapper(
    orig_to_new_prefix={"transformer.visual.": "visual."},
    orig_to_new_stacked={
        ".mlp.w2.": (".mlp.gate_up_proj.", 0),
        ".mlp.w1.": (".mlp.gate_up_proj.", 1),
    },
)


class QwenVLImagePixelInputs(TensorSchema):
    """
    Dimensions:
        - bn: Batch size * number of images
        - c: Number of channels (3)
        - h: Height (visual.image_size, 448)
        - w: Width (visual.image_size, 448)
    """

    type: Literal["pixel_values"] = "pixel_values"
    data: Annotated[torch.Tensor, TensorShape("bn", 3, "h", "w")]


class QwenVLImageEmbeddingInputs(TensorSchema):
    """
    Dimensions:
        - bn: Batch size * number of images
        - ifs: Image feature size (visual n_queries, 256)
        - hs: Hidden size (the LLM's hidden_size = visual.output_dim)
    """

    type: Literal["image_embeds"] = "image_embeds"
    data: Annotated[torch.Tensor, TensorShape("bn", "ifs", "hs")]


QwenVLImageInputs = QwenVLImagePixelInputs | QwenVLImageEmbeddingInputs


def logn_length(config: Any, max_model_len: int) -> int | None:
    """seq_length when logn query scaling can act (a context past it), else None."""
    seq_length = getattr(config, "seq_length", None)
    if not seq_length or max_model_len <= seq_length or not getattr(config, "use_logn_attn", True):
        return None
    return int(seq_length)


def logn_scale(positions: torch.Tensor, seq_length: int) -> torch.Tensor:
    """[T] -> [T, 1]: log(p + 1) / log(seq_length) where p + 1 > seq_length, else 1 (release's logn_list)."""
    n = (positions + 1).to(torch.float32)
    scale = torch.where(n > seq_length, torch.log(n) / math.log(seq_length), torch.ones_like(n))
    return scale[:, None]


def _rope_theta(config: Any) -> float:
    """Qwen's config name is rotary_emb_base; vLLM copies it to rope_theta on load."""
    names = ("rope_theta", "rotary_emb_base")
    return float(next((v for n in names if (v := getattr(config, n, None)) is not None), 10000.0))


def _rotary(config: Any, ntk: NTKLayout | None) -> nn.Module:
    """Plain rotary, or one cos/sin table per dynamic-NTK alpha when long prompts are possible."""
    head_dim, rot_dim = qwen_head_dim(config), qwen_rotary_dim(config)
    if ntk is not None:
        return get_ntk_rope(head_dim, rot_dim, _rope_theta(config), ntk, torch.get_default_dtype())
    rope_parameters = {
        "rope_type": "default",
        "rope_theta": _rope_theta(config),
        "partial_rotary_factor": rot_dim / head_dim,
    }
    return get_rope(
        head_dim,
        max_position=max(
            int(getattr(config, "max_position_embeddings", None) or config.seq_length),
            get_current_vllm_config().model_config.max_model_len,  # a context past it (long generation)
        ),
        is_neox_style=True,  # the release rotates halves (rotate_half), not interleaved pairs
        rope_parameters=rope_parameters,
    )


class QWenMLP(nn.Module):
    """c_proj(w1(x) * silu(w2(x))): w2 is the gate, w1 the up projection (shards 0 and 1 of gate_up)."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(
            hidden_size,
            [intermediate_size] * 2,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.gate_up_proj",
        )
        self.c_proj = RowParallelLinear(
            intermediate_size, hidden_size, bias=False, quant_config=quant_config, prefix=f"{prefix}.c_proj"
        )
        self.act_fn = SiluAndMul()  # silu(first half) * second half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        x, _ = self.c_proj(self.act_fn(gate_up))
        return x


class QWenAttention(nn.Module):
    def __init__(
        self,
        config: Any,
        cache_config: CacheConfig | None = None,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
        logn_seq_length: int | None = None,
        ntk: NTKLayout | None = None,
    ) -> None:
        super().__init__()
        self.logn_seq_length = logn_seq_length
        self.ntk = ntk
        total_heads = config.num_attention_heads
        self.head_dim = qwen_head_dim(config)
        tp_size = get_tensor_model_parallel_world_size()
        if total_heads % tp_size:
            raise ValueError(
                f"num_attention_heads {total_heads} is not divisible by tensor parallel {tp_size}"
            )
        self.num_heads = total_heads // tp_size
        self.q_size = self.num_heads * self.head_dim
        self.c_attn = QKVParallelLinear(
            config.hidden_size,
            self.head_dim,
            total_heads,
            total_heads,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.c_attn",
        )
        self.c_proj = RowParallelLinear(
            total_heads * self.head_dim,
            config.hidden_size,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.c_proj",
        )
        self.rotary_emb = _rotary(config, ntk)
        self.attn = Attention(
            self.num_heads,
            self.head_dim,
            self.head_dim**-0.5,
            num_kv_heads=self.num_heads,
            cache_config=cache_config,
            quant_config=quant_config,
            prefix=f"{prefix}.attn",
        )

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.c_attn(hidden_states)  # [T, 3 * heads_local * head_dim]
        q, k, v = qkv.split([self.q_size] * 3, dim=-1)
        q, k = self.rotary_emb(positions, q, k)  # positions carry the request's NTK table (qwen_ntk)
        if self.logn_seq_length:
            q = q * logn_scale(true_positions(positions, self.ntk), self.logn_seq_length).to(q.dtype)
        out, _ = self.c_proj(self.attn(q, k, v))
        return out


class QWenBlock(nn.Module):
    def __init__(
        self,
        config: Any,
        cache_config: CacheConfig | None = None,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
        logn_seq_length: int | None = None,
        ntk: NTKLayout | None = None,
    ) -> None:
        super().__init__()
        eps = float(getattr(config, "layer_norm_epsilon", 1e-6))
        self.ln_1 = RMSNorm(config.hidden_size, eps=eps)
        self.attn = QWenAttention(config, cache_config, quant_config, f"{prefix}.attn", logn_seq_length, ntk)
        self.ln_2 = RMSNorm(config.hidden_size, eps=eps)
        self.mlp = QWenMLP(
            config.hidden_size, config.intermediate_size // 2, quant_config, prefix=f"{prefix}.mlp"
        )

    def forward(
        self,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden_states
            hidden_states = self.ln_1(hidden_states)
        else:
            hidden_states, residual = self.ln_1(hidden_states, residual)
        hidden_states = self.attn(positions, hidden_states)
        hidden_states, residual = self.ln_2(hidden_states, residual)
        return self.mlp(hidden_states), residual


@support_torch_compile(
    dynamic_arg_dims={"input_ids": 0, "positions": -1, "intermediate_tensors": 0, "inputs_embeds": 0}
)
class QWenModel(nn.Module):
    """The LLM trunk: `transformer.{wte, h.N, ln_f}` in the checkpoint."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        cache_config = vllm_config.cache_config
        quant_config = vllm_config.quant_config
        self.config = config
        logn = logn_length(config, vllm_config.model_config.max_model_len)
        ntk = model_ntk_layout(vllm_config)
        if get_pp_group().is_first_rank:
            self.wte = VocabParallelEmbedding(
                config.vocab_size, config.hidden_size, quant_config=quant_config, prefix=f"{prefix}.wte"
            )
        else:
            self.wte = PPMissingLayer()
        self.start_layer, self.end_layer, self.h = make_layers(
            config.num_hidden_layers,
            lambda prefix: QWenBlock(config, cache_config, quant_config, prefix, logn, ntk),
            prefix=f"{prefix}.h",
        )
        if get_pp_group().is_last_rank:
            self.ln_f = RMSNorm(config.hidden_size, eps=float(getattr(config, "layer_norm_epsilon", 1e-6)))
        else:
            self.ln_f = PPMissingLayer()
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], config.hidden_size
        )

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.wte(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        if get_pp_group().is_first_rank:
            hidden_states = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
            residual = None
        else:
            assert intermediate_tensors is not None
            hidden_states = intermediate_tensors["hidden_states"]
            residual = intermediate_tensors["residual"]
        if positions.ndim == 2:  # vLLM's M-RoPE path (dynamic NTK on): three equal rows
            positions = positions[0]
        for layer in islice(self.h, self.start_layer, self.end_layer):
            hidden_states, residual = layer(positions, hidden_states, residual)
        if not get_pp_group().is_last_rank:
            return IntermediateTensors({"hidden_states": hidden_states, "residual": residual})
        hidden_states, _ = self.ln_f(hidden_states, residual)
        return hidden_states


@MULTIMODAL_REGISTRY.register_processor(
    QwenVLMultiModalProcessor,
    info=QwenVLProcessingInfo,
    dummy_inputs=QwenVLDummyInputsBuilder,
)
class QwenVLForConditionalGeneration(
    SideStreamEmbedding, nn.Module, SupportsMultiModal, SupportsPP, SupportsLoRA, SupportsQuant, SupportsMRoPE
):
    hf_to_vllm_mapper = HF_TO_VLLM_MAPPER
    packed_modules_mapping = {"c_attn": ["c_attn"], "gate_up_proj": ["w2", "w1"]}

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return f"Picture {i}: <img></img>"
        raise ValueError("Qwen-VL supports only the image modality")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.ntk = model_ntk_layout(vllm_config)
        self.visual_config: dict[str, Any] | None = getattr(config, "visual", None) or None

        self.visual: QwenVLVisionTransformer | None = None
        if self.visual_config is not None:
            if int(self.visual_config["output_dim"]) != config.hidden_size:
                raise ValueError(
                    f"visual.output_dim {self.visual_config['output_dim']} must equal hidden_size "
                    f"{config.hidden_size}: image features replace token embeddings"
                )
            with self._mark_tower_model(vllm_config, "image"):
                self.visual = QwenVLVisionTransformer(
                    **self.visual_config, prefix=maybe_prefix(prefix, "visual")
                )

        with self._mark_language_model(vllm_config):
            self.transformer = QWenModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "transformer"))
            if get_pp_group().is_last_rank:
                self.lm_head = ParallelLMHead(
                    config.vocab_size,
                    config.hidden_size,
                    quant_config=vllm_config.quant_config,
                    prefix=maybe_prefix(prefix, "lm_head"),
                )
            else:
                self.lm_head = PPMissingLayer()
        self.logits_processor = LogitsProcessor(config.vocab_size)
        self.make_empty_intermediate_tensors = self.transformer.make_empty_intermediate_tensors
        self._init_encoder_stream(vllm_config)
        self.tower_warmup = TowerWarmup(get_settings().warm_tower)

    # --- multimodal -------------------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        """The side every image is resized to (the tower's input)."""
        return int((self.visual_config or {}).get("image_size", QWEN_VL_IMAGE_SIZE))

    def get_language_model(self) -> nn.Module:
        return self.transformer

    def get_mm_mapping(self) -> MultiModelKeys:
        return MultiModelKeys.from_string_field(
            language_model="transformer", connector="visual.attn_pool", tower_model="visual.transformer"
        )

    def _parse_and_validate_image_input(self, **kwargs: object) -> QwenVLImageInputs | None:
        pixel_values = kwargs.pop("pixel_values", None)
        image_embeds = kwargs.pop("image_embeds", None)
        uint8 = kwargs.pop(UINT8_PIXEL_KEYS["image"], None)
        if pixel_values is None and image_embeds is None and uint8 is None:
            return None
        if self.visual_config is None:
            raise ValueError("this Qwen checkpoint has no vision tower; it cannot take images")
        size = self.image_size
        if uint8 is not None:  # decoded images (QWENVL_VLLM_DEVICE_PIXELS): the release's transform here
            device = next(self.visual.parameters()).device
            pixel_values = qwen_vl_pixel_values_on_device(list(uint8), size, device)
        if pixel_values is not None:
            return QwenVLImagePixelInputs(
                type="pixel_values", data=_as_batch(pixel_values), resolve_bindings={"h": size, "w": size}
            )
        return QwenVLImageEmbeddingInputs(
            type="image_embeds",
            data=_as_batch(image_embeds),
            resolve_bindings={"ifs": vision_n_queries(self.visual_config), "hs": self.config.hidden_size},
        )

    def _embed(self, kwargs: dict[str, object]) -> MultiModalEmbeddings:
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        if image_input["type"] == "image_embeds":
            return image_input["data"]
        assert self.visual is not None
        return self.visual(image_input["data"])  # [num_images, n_queries, hidden]

    # --- LLM ----------------------------------------------------------------------------------------------

    def get_mrope_input_positions(
        self, input_tokens: list[int], mm_features: list[MultiModalFeatureSpec]
    ) -> tuple[torch.Tensor, int]:
        """Positions of a whole prompt, offset into its dynamic-NTK table (qwen_ntk); images are plain
        tokens for positions in Qwen-VL."""
        return input_positions(self.ntk, len(input_tokens))

    @staticmethod
    def get_model_state_cls() -> type:
        """vLLM's V2 runner: keeps a preempted request's alpha (qwen_ntk.ntk_model_state_cls)."""
        return ntk_model_state_cls()

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        self.tower_warmup.at_forward(self._tower_warmup)
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.transformer(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        self.tower_warmup.at_logits(self._tower_warmup)
        return self.logits_processor(self.lm_head, hidden_states)

    def _tower_warmup(self) -> partial | None:
        return warmup_of(self._tower_to_warm(), warm_qwen_vl, self.image_size)

    def _tower_to_warm(self) -> QwenVLVisionTransformer | None:
        return encoding_tower(self.visual, QwenVLVisionTransformer)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loader = AutoWeightsLoader(self)
        loaded = loader.load_weights(weights, mapper=self.hf_to_vllm_mapper)
        # The resampler's 2-D sin-cos table is a fixed function of its size, built at init; a checkpoint
        # that omits it loses nothing.
        if isinstance(self.visual, QwenVLVisionTransformer):
            loaded.add("visual.attn_pool.pos_embed")
        return loaded


def _as_batch(data: object) -> torch.Tensor:
    """Image inputs arrive stacked ([N, ...]) or as a list of per-image tensors."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, torch.Tensor) for t in data):
        return torch.stack(list(data))
    raise ValueError(
        f"expected a tensor or a list of tensors for Qwen-VL image input, got {type(data).__name__}"
    )


def model_ntk_layout(vllm_config: VllmConfig) -> NTKLayout | None:
    """The dynamic-NTK layout, checked against vLLM's position path (set by our config hook)."""
    model_config = vllm_config.model_config
    layout = ntk_layout(model_config.hf_config, model_config.max_model_len)
    if layout is not None and not model_config.uses_mrope:
        raise ValueError(
            "Qwen(-VL) dynamic NTK needs per-request positions; qwenvl_vllm's config hook did not run "
            "(register the plugin before building the engine config)"
        )
    return layout

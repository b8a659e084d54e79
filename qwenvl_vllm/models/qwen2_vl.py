"""Qwen2-VL for vLLM 0.26: our vision tower, processor and M-RoPE; vLLM's Qwen2 language model.

Replaces vLLM's in-tree `Qwen2VLForConditionalGeneration` when the qwenvl_vllm plugin is active. Weights load
from both checkpoint namings (transformers >= 4.52: `model.visual.*` / `model.language_model.*` / `lm_head`;
older: `visual.*` / `model.*` / `lm_head`). Quantization (GPTQ 4/8-bit, AWQ 4-bit, FP8, compressed-tensors)
applies to the language model's linears only; the vision tower always runs unquantized, as the released
GPTQ/AWQ checkpoints store it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.layers.quantization import QuantizationConfig
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
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.model_executor.models.vision import run_dp_sharded_mrope_vision_model
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFeatureSpec
from vllm.sequence import IntermediateTensors
from vllm.utils.tensor_schema import TensorSchema, TensorShape

from qwenvl_vllm.constants import UINT8_PIXEL_KEYS
from qwenvl_vllm.geometry import VisionGeometry, grid_tokens
from qwenvl_vllm.mrope import mrope_positions_from_features
from qwenvl_vllm.settings import get_settings

from ..log import logger
from .encoder_stream import SideStreamEmbedding
from .host_scopes import scope
from .logits_warmup import LogitsWarmup
from .quant_shards import check_quant_shards
from .qwen2_vl_device_pixels import uint8_rows
from .qwen2_vl_processing import (
    IMAGE_PLACEHOLDER,
    VIDEO_PLACEHOLDER,
    Qwen2VLDummyInputsBuilder,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
)
from .qwen2_vl_vision import Qwen2VisionTower
from .tower_warmup import TowerWarmup, encoding_tower, warm_qwen2, warmup_of

logger.info(
    "qwenvl-vllm: Qwen2VLForConditionalGeneration served by qwenvl_vllm.models.qwen2_vl (not in-tree)"
)

# quantization method name (vLLM's get_name()) -> allowed weight bits (None: any the method accepts)
SUPPORTED_QUANT: dict[str, tuple[int, ...] | None] = {
    "auto_gptq": (4, 8),
    "gptq": (4, 8),
    "gptq_marlin": (4, 8),
    "auto_awq": (4,),
    "awq": (4,),
    "awq_marlin": (4,),
    "fp8": None,
    "online": None,
    "compressed-tensors": None,
}


def check_quant_config(quant_config: QuantizationConfig | None) -> None:
    """ValueError unless the quantization is one this model supports (LLM linears only)."""
    if quant_config is None:
        return
    name = quant_config.get_name()
    if name not in SUPPORTED_QUANT:
        raise ValueError(
            f"Qwen2-VL (qwenvl_vllm) does not support quantization {name!r}; "
            f"supported: {', '.join(SUPPORTED_QUANT)}"
        )
    bits = SUPPORTED_QUANT[name]
    weight_bits = getattr(quant_config, "weight_bits", None)
    if bits is not None and weight_bits not in bits:
        raise ValueError(
            f"Qwen2-VL (qwenvl_vllm): {name} with {weight_bits}-bit weights is not supported; use {bits}"
        )


# ---------------------------------------------------------------------------------------------------------
# Input schemas
# ---------------------------------------------------------------------------------------------------------


class Qwen2VLImagePixelInputs(TensorSchema):
    """
    Dimensions:
        - np: Number of patches over all images of the batch
        - cps: Number of channels * temporal_patch_size * patch_size * patch_size
        - ni: Number of images
    """

    type: Literal["pixel_values"]
    pixel_values: Annotated[torch.Tensor, TensorShape("np", "cps")]
    image_grid_thw: Annotated[torch.Tensor, TensorShape("ni", 3)]


class Qwen2VLImageEmbeddingInputs(TensorSchema):
    """
    Dimensions:
        - nf: Number of image features (LLM tokens) over all images of the batch
        - hs: Hidden size of the language model
        - ni: Number of images
    """

    type: Literal["image_embeds"]
    image_embeds: Annotated[torch.Tensor, TensorShape("nf", "hs")]
    image_grid_thw: Annotated[torch.Tensor, TensorShape("ni", 3)]


class Qwen2VLVideoPixelInputs(TensorSchema):
    """
    Dimensions:
        - np: Number of patches over all videos of the batch
        - ctps: Number of channels * temporal_patch_size * patch_size * patch_size
        - nv: Number of videos
    """

    type: Literal["pixel_values_videos"]
    pixel_values_videos: Annotated[torch.Tensor, TensorShape("np", "ctps")]
    video_grid_thw: Annotated[torch.Tensor, TensorShape("nv", 3)]


class Qwen2VLVideoEmbeddingInputs(TensorSchema):
    """
    Dimensions:
        - nf: Number of video features (LLM tokens) over all videos of the batch
        - hs: Hidden size of the language model
        - nv: Number of videos
    """

    type: Literal["video_embeds"]
    video_embeds: Annotated[torch.Tensor, TensorShape("nf", "hs")]
    video_grid_thw: Annotated[torch.Tensor, TensorShape("nv", 3)]


class Qwen2VLImageUint8Inputs(TensorSchema):
    """Decoded images, resized and patchified on the tower's device (QWENVL_VLLM_DEVICE_PIXELS).

    Dimensions:
        - ni: Number of images
        - h: Decoded height of each image
        - w: Decoded width of each image
        - c: 3 (RGB) or 4 (Pillow's RGB storage, the last channel its pad byte: shipped uncopied)
    """

    type: Literal["image_pixels_u8"]
    image_pixels_u8: Annotated[
        torch.Tensor | list[torch.Tensor], TensorShape("ni", "h", "w", "c", dynamic_dims={"h", "w", "c"})
    ]
    image_grid_thw: Annotated[torch.Tensor, TensorShape("ni", 3)]


class Qwen2VLVideoUint8Inputs(TensorSchema):
    """Sampled video frames, resized and patchified on the tower's device (QWENVL_VLLM_DEVICE_PIXELS), in
    vLLM's decoded layout (channels last: the API server ships them uncopied).

    Dimensions:
        - nv: Number of videos
        - nt: Number of frames of each video
        - h: Decoded frame height of each video
        - w: Decoded frame width of each video
    """

    type: Literal["video_pixels_u8"]
    video_pixels_u8: Annotated[
        torch.Tensor | list[torch.Tensor], TensorShape("nv", "nt", "h", "w", 3, dynamic_dims={"nt", "h", "w"})
    ]
    video_grid_thw: Annotated[torch.Tensor, TensorShape("nv", 3)]


Qwen2VLInputs = (
    Qwen2VLImagePixelInputs
    | Qwen2VLImageEmbeddingInputs
    | Qwen2VLImageUint8Inputs
    | Qwen2VLVideoPixelInputs
    | Qwen2VLVideoEmbeddingInputs
    | Qwen2VLVideoUint8Inputs
)
_UINT8_SCHEMAS = {"image": Qwen2VLImageUint8Inputs, "video": Qwen2VLVideoUint8Inputs}

# modality -> (pixel key, embedding key, grid key, pixel schema, embedding schema)
_MODALITY_KEYS = {
    "image": (
        "pixel_values",
        "image_embeds",
        "image_grid_thw",
        Qwen2VLImagePixelInputs,
        Qwen2VLImageEmbeddingInputs,
    ),
    "video": (
        "pixel_values_videos",
        "video_embeds",
        "video_grid_thw",
        Qwen2VLVideoPixelInputs,
        Qwen2VLVideoEmbeddingInputs,
    ),
}


def _split_items(pixel_values: torch.Tensor, grid: list[list[int]]) -> list[torch.Tensor]:
    return list(pixel_values.split([t * h * w for t, h, w in grid]))  # [patches of item i, C*T*P*P]


def _grid_list(grid_thw: torch.Tensor) -> list[list[int]]:
    return [[int(v) for v in row] for row in grid_thw.tolist()]


@dataclass
class _DataParallelTower:
    """What vLLM's run_dp_sharded_mrope_vision_model expects of a vision model (names differ in ours)."""

    tower: Qwen2VisionTower

    @property
    def spatial_merge_size(self) -> int:
        return self.tower.merge_size

    @property
    def out_hidden_size(self) -> int:
        return self.tower.out_hidden_size

    def __call__(self, pixel_values: torch.Tensor, grid_thw: list[list[int]]) -> torch.Tensor:
        return self.tower(pixel_values, grid_thw)


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


@MULTIMODAL_REGISTRY.register_processor(
    Qwen2VLMultiModalProcessor,
    info=Qwen2VLProcessingInfo,
    dummy_inputs=Qwen2VLDummyInputsBuilder,
)
class Qwen2VLForConditionalGeneration(
    SideStreamEmbedding, nn.Module, SupportsMultiModal, SupportsMRoPE, SupportsPP, SupportsLoRA, SupportsQuant
):
    # Sequential prefix rules (each applies to the result of the previous ones), ordered so none chains.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.visual.": "visual.",
            "model.language_model.": "language_model.model.",
            "lm_head.": "language_model.lm_head.",
            "model.": "language_model.model.",
        }
    )
    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    supports_encoder_tp_data = True
    supports_tower_slices = True

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_PLACEHOLDER
        if modality.startswith("video"):
            return VIDEO_PLACEHOLDER
        raise ValueError(f"Qwen2-VL supports image and video inputs, not {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        check_quant_config(vllm_config.quant_config)
        check_quant_shards(
            config.get_text_config(),
            getattr(vllm_config.quant_config, "group_size", None),
            vllm_config.parallel_config.tensor_parallel_size,
        )
        self.config = config
        self.merge_size = config.vision_config.spatial_merge_size
        vision = config.vision_config
        self.geometry = VisionGeometry(
            vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size
        )
        with self._mark_tower_model(vllm_config, {"image", "video"}):
            # quant_config=None: the released quantized checkpoints keep the vision tower in fp16/bf16.
            self.visual = Qwen2VisionTower(
                config.vision_config,
                norm_eps=getattr(config, "rms_norm_eps", 1e-6),
                # enforce_eager asks for no CUDA graphs anywhere (debugging, profiling): the tower too.
                graph_max_patches=0 if vllm_config.model_config.enforce_eager else None,
                quant_config=None,
                prefix=maybe_prefix(prefix, "visual"),
            )
        with self._mark_language_model(vllm_config):
            # Through vLLM's registry (not Qwen2ForCausalLM(...) directly): with_hf_config copies
            # tie_word_embeddings onto the text config, where transformers 5 no longer puts it.
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=["Qwen2ForCausalLM"],
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors
        self._init_encoder_stream(vllm_config)
        self.logits_warmup = LogitsWarmup(
            vllm_config.scheduler_config.max_num_seqs, get_settings().warm_logits
        )
        self.tower_warmup = TowerWarmup(get_settings().warm_tower)
        quant = vllm_config.quant_config.get_name() if vllm_config.quant_config is not None else "none"
        logger.info("qwenvl-vllm: built Qwen2-VL (our vision tower + M-RoPE; LLM quantization: %s)", quant)

    # -- multimodal inputs ---------------------------------------------------------------------------------

    def _parse_modality(self, modality: str, kwargs: dict[str, object]) -> Qwen2VLInputs | None:
        pixel_key, embed_key, grid_key, pixel_schema, embed_schema = _MODALITY_KEYS[modality]
        uint8_key = UINT8_PIXEL_KEYS[modality]
        pixels, embeds, grid = kwargs.get(pixel_key), kwargs.get(embed_key), kwargs.get(grid_key)
        uint8 = kwargs.get(uint8_key)
        if pixels is None and embeds is None and uint8 is None:
            return None
        if grid is None:
            raise ValueError(f"{modality} inputs need {grid_key}")
        if uint8 is not None:
            return _UINT8_SCHEMAS[modality](type=uint8_key, **{uint8_key: uint8, grid_key: grid})
        if pixels is not None:
            return pixel_schema(type=pixel_key, **{pixel_key: pixels, grid_key: grid})
        return embed_schema(type=embed_key, **{embed_key: embeds, grid_key: grid})

    def _parse_inputs(self, kwargs: dict[str, object]) -> list[tuple[str, Qwen2VLInputs]]:
        """(modality, inputs) in the order the modalities appear in kwargs (the order vLLM expects back)."""
        order: list[str] = []
        for key in kwargs:
            for modality, keys in _MODALITY_KEYS.items():
                if key in (*keys[:2], UINT8_PIXEL_KEYS[modality]) and modality not in order:
                    order.append(modality)
        parsed = [(m, self._parse_modality(m, kwargs)) for m in order]
        return [(m, inputs) for m, inputs in parsed if inputs is not None]

    def _run_tower(self, pixel_values: torch.Tensor, grid: list[list[int]]) -> list[torch.Tensor]:
        """Embeddings per item of one concatenated tower input."""
        if self.visual.use_data_parallel:
            embeds = run_dp_sharded_mrope_vision_model(
                _DataParallelTower(self.visual), pixel_values, grid, rope_type="rope_3d"
            )
            return list(embeds)
        if self._tower_slicer is not None:
            # each queued item keeps its own rows (a view would keep the whole batch until its last item ran)
            return [
                self._queue_item(item.clone(), g)
                for item, g in zip(_split_items(pixel_values, grid), grid, strict=True)
            ]
        if self._encoder_stream is not None:
            # Beside the LM's steps, one item per tower call: the tower's kernels hold the SMs until they end
            # (decode kernels wait for them), and one item's kernels are a batch's divided by its size.
            return [
                self.visual(item, [g]) for item, g in zip(_split_items(pixel_values, grid), grid, strict=True)
            ]
        sizes = [grid_tokens(g, self.merge_size) for g in grid]
        return list(self.visual(pixel_values, grid).split(sizes))

    def _queue_item(self, rows: torch.Tensor, grid: list[int]) -> torch.Tensor:
        """One item's encode queued in slices; its output tensor, written by the last slice."""
        slicer = self._tower_slicer
        with slicer.stream.launching():
            slices, cost = self.visual.forward_slices(rows, [grid], slicer.budget)
            out = torch.empty(
                grid_tokens(grid, self.merge_size),
                self.visual.out_hidden_size,
                dtype=self.visual.dtype,
                device=self.visual.device,
            )
        return slicer.submit(slices, out, cost, rows=rows)

    def _rows(self, item: Qwen2VLInputs, modality: str, grid: list[list[int]]) -> torch.Tensor:
        """Patch rows, on the tower's device, of items shipped as decoded uint8 pixels."""
        device, dtype = self.visual.device, self.visual.dtype
        pixels = item[UINT8_PIXEL_KEYS[modality]]
        with scope("device_pixels"):
            return torch.cat(
                [uint8_rows(p, g, self.geometry, device, dtype) for p, g in zip(pixels, grid, strict=True)]
            )

    def _embed(self, kwargs: dict[str, object]) -> MultiModalEmbeddings:
        inputs = self._parse_inputs(kwargs)
        pixel_parts: list[torch.Tensor] = []
        pixel_grid: list[list[int]] = []
        # Per item, in order: an int (index into the tower's outputs) or a ready embedding tensor.
        slots: list[int | torch.Tensor] = []
        for modality, item in inputs:
            pixel_key, embed_key, grid_key = _MODALITY_KEYS[modality][:3]
            grid = _grid_list(item[grid_key])
            if item["type"] == embed_key:
                sizes = [grid_tokens(g, self.merge_size) for g in grid]
                slots.extend(item[embed_key].split(sizes))
                continue
            slots.extend(range(len(pixel_grid), len(pixel_grid) + len(grid)))
            pixel_parts.append(
                self._rows(item, modality, grid)
                if item["type"] == UINT8_PIXEL_KEYS[modality]
                else item[pixel_key]
            )
            pixel_grid.extend(grid)
        if not slots:
            return []
        # One tower pass over every image and video of the batch (same row layout for both).
        outputs = self._run_tower(torch.cat(pixel_parts), pixel_grid) if pixel_parts else []
        return tuple(outputs[s] if isinstance(s, int) else s for s in slots)

    # -- M-RoPE --------------------------------------------------------------------------------------------

    def get_mrope_input_positions(
        self, input_tokens: list[int], mm_features: list[MultiModalFeatureSpec]
    ) -> tuple[torch.Tensor, int]:
        return mrope_positions_from_features(input_tokens, mm_features, self.merge_size)

    # -- language model ------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        # positions: [3, num_tokens] (M-RoPE rows t, h, w)
        self.tower_warmup.at_forward(self._tower_warmup)
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids=input_ids,
            positions=positions,
            intermediate_tensors=intermediate_tensors,
            inputs_embeds=inputs_embeds,
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        self.logits_warmup.before(self.language_model.compute_logits, hidden_states)
        self.tower_warmup.at_logits(self._tower_warmup)
        return self.language_model.compute_logits(hidden_states)

    def _tower_warmup(self) -> partial | None:
        return warmup_of(self._tower_to_warm(), warm_qwen2, self.geometry)

    def _tower_to_warm(self) -> Qwen2VisionTower | None:
        return encoding_tower(getattr(self, "visual", None), Qwen2VisionTower)

    # -- weights, LoRA -------------------------------------------------------------------------------------

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)

    def get_mm_mapping(self) -> MultiModelKeys:
        return MultiModelKeys.from_string_field(
            language_model="language_model", connector="visual.merger.", tower_model="visual."
        )

    def get_num_mm_encoder_tokens(self, num_image_tokens: int) -> int:
        return num_image_tokens * self.merge_size**2

    def get_num_mm_connector_tokens(self, num_vision_tokens: int) -> int:
        return num_vision_tokens // self.merge_size**2

"""vLLM multimodal processor for Qwen2-VL with qwen-vl-utils 0.0.14 sizing and our patchify.

Images are sized as qwen-vl-utils `fetch_image` does (smart_resize, factor 28, PIL bicubic), videos as its
`fetch_video` does for frame lists (frames kept as given, padded to an even count; per-frame pixel budget from
VIDEO_MIN/MAX_TOKEN_NUM and total_pixels; torchvision bicubic with antialias). Inputs already resized by
qwen-vl-utils come out unchanged, so pixel values equal transformers' processors run with do_resize=False.

Size options (`mm_processor_kwargs`, engine-level and per request, request wins) act like keys of a
qwen-vl-utils content item: min_pixels, max_pixels, resized_height + resized_width, total_pixels (videos).
Defaults for images come from the checkpoint's preprocessor_config.json (min_pixels / max_pixels), for videos
from qwen-vl-utils (128..768 tokens per frame, MODEL_SEQ_LEN). Given min/max_pixels apply to videos too (as in
a qwen-vl-utils video item); a max_pixels below the video minimum lowers that minimum instead of failing.
Extension: do_resize=False uses every item at its given size (sides must be multiples of 28).
Per-item size keys: mm_processor_kwargs["items"] = {modality: {index: keys}} (see serving/item_options.py).
fps / nframes / min_frames / max_frames / sample_fps / do_sample_frames are accepted and ignored: vLLM hands
us frames that are already sampled (in `vllm serve` by qwenvl_vllm.serving.video_loader, from the request's
media_io_kwargs["video"]), and qwen-vl-utils ignores them for frame lists too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property, partial
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from vllm.config.multimodal import BaseDummyOptions, VideoDummyOptions
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.media.base import MediaWithBytes
from vllm.multimodal.parse import (
    DictEmbeddingItems,
    ImageProcessorItems,
    ImageSize,
    ModalityDataItems,
    MultiModalDataItems,
    MultiModalDataParser,
)
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptReplacement,
    PromptUpdate,
    TimingContext,
)
from vllm.multimodal.processing.processor import MultiModalProcessingInfo

from qwenvl_vllm.constants import (
    IMAGE_PAD,
    UINT8_PIXEL_KEYS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)
from qwenvl_vllm.geometry import VisionGeometry, grids_tokens
from qwenvl_vllm.models.qwen2_vl_device_pixels import rows_match_cpu_path
from qwenvl_vllm.models.qwen2_vl_size_options import (
    PixelDefaults,
    SizeOptions,
    pixel_defaults,
    squarest_grid,
)
from qwenvl_vllm.models.token_matches import CJoinedTokenMatches
from qwenvl_vllm.processors.image import pixels_to_ship, target_size, to_rgb
from qwenvl_vllm.processors.patchify import patchify
from qwenvl_vllm.processors.sizing import (
    FPS_MAX_FRAMES,
    FRAME_FACTOR,
    VIDEO_MIN_TOKEN_NUM,
    ceil_by_factor,
    frame_pixel_limit,
)
from qwenvl_vllm.processors.video import resize_frames, video_size
from qwenvl_vllm.serving.item_options import (
    check_item_counts,
    item_keyed_inputs,
)
from qwenvl_vllm.settings import get_settings

IMAGE_PLACEHOLDER = VISION_START + IMAGE_PAD + VISION_END
VIDEO_PLACEHOLDER = VISION_START + VIDEO_PAD + VISION_END

# ---------------------------------------------------------------------------------------------------------
# Media -> tensors
# ---------------------------------------------------------------------------------------------------------


def _image_array(image: Any) -> Image.Image | np.ndarray:
    """An RGB PIL image or a uint8 HWC array, from whatever vLLM hands us for one image."""
    if isinstance(image, MediaWithBytes):
        image = image.media
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else to_rgb(image)
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"an image array must be uint8 RGB (HWC or CHW), got shape {array.shape} dtype {array.dtype}; "
            "pass a PIL image otherwise"
        )
    return array


def _video_tchw(video: Any) -> torch.Tensor:
    """[T, C, H, W] frames (no copy) from a [T, H, W, C] (vLLM) or [T, C, H, W] (qwen-vl-utils) video."""
    frames = torch.from_numpy(np.asarray(video)) if not isinstance(video, torch.Tensor) else video
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"a video must be a non-empty 4-D array of frames, got shape {tuple(frames.shape)}")
    if frames.shape[-1] in (1, 3, 4):  # vLLM's layout, checked first as vLLM does
        frames = frames.permute(0, 3, 1, 2)
    if frames.shape[1] != 3:
        raise ValueError(f"video frames must have 3 (RGB) channels, got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise ValueError(f"video frames must be uint8 or float (0..255), got {frames.dtype}")
    return frames


def _check_given_size(height: int, width: int, factor: int) -> tuple[int, int]:
    if height % factor or width % factor:
        raise ValueError(f"do_resize=False needs sides that are multiples of {factor}, got {height}x{width}")
    return height, width


# ---------------------------------------------------------------------------------------------------------
# vLLM classes
# ---------------------------------------------------------------------------------------------------------


def qwen2vl_field_config(
    merge_size: int, pixels_on_cpu: bool = False
) -> Callable[[Mapping[str, torch.Tensor]], Mapping[str, Any]]:
    """Field layout: flat patch/embedding rows sliced per item by grid size, grids batched (kept on CPU),
    decoded uint8 pixels batched (`pixels_on_cpu`: kept on the CPU by vLLM's batching, for the model to
    copy). Only the keys present get a config (the sizes cost torch ops on the API server's every request)."""

    def flat(modality: str, grids: torch.Tensor, per_patch: bool) -> MultiModalFieldConfig:
        sizes = grids.prod(-1) if per_patch else grids_tokens(grids, merge_size)
        return MultiModalFieldConfig.flat_from_sizes(modality, sizes)

    def fields(hf_inputs: Mapping[str, torch.Tensor]) -> Mapping[str, MultiModalFieldConfig]:
        out: dict[str, MultiModalFieldConfig] = {}
        for modality, rows_key in (("image", "pixel_values"), ("video", "pixel_values_videos")):
            grids = hf_inputs.get(f"{modality}_grid_thw")
            if grids is None:
                continue
            out[f"{modality}_grid_thw"] = MultiModalFieldConfig.batched(modality, keep_on_cpu=True)
            if rows_key in hf_inputs:
                out[rows_key] = flat(modality, grids, per_patch=True)
            if f"{modality}_embeds" in hf_inputs:
                out[f"{modality}_embeds"] = flat(modality, grids, per_patch=False)
            if UINT8_PIXEL_KEYS[modality] in hf_inputs:
                uint8 = MultiModalFieldConfig.batched(modality, keep_on_cpu=pixels_on_cpu)
                out[UINT8_PIXEL_KEYS[modality]] = uint8
        return out

    return fields


class Qwen2VLDataParser(MultiModalDataParser):
    """Adds precomputed embeddings ({image_embeds, image_grid_thw} dicts) and keeps images as given.

    vLLM's parser applies EXIF rotation and its own alpha handling to PIL images; qwen-vl-utils does
    neither (RGBA is composited on white, other modes go through convert), so images are passed through
    here and converted by the processor.
    """

    def __init__(self, merge_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fields = qwen2vl_field_config(merge_size)

    def _embedding_dict(self, data: Mapping[str, torch.Tensor], modality: str) -> DictEmbeddingItems:
        required = {f"{modality}_embeds", f"{modality}_grid_thw"}
        return DictEmbeddingItems(
            data, modality=modality, required_fields=required, fields_factory=self._fields
        )

    def _parse_image_data(self, data: Any) -> ModalityDataItems[Any, Any] | None:
        if isinstance(data, dict):
            return self._embedding_dict(data, "image")
        if data is None or self.is_embeddings(data):
            return super()._parse_image_data(data)
        single = isinstance(data, (Image.Image, MediaWithBytes))
        single = single or (isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim == 3)
        return ImageProcessorItems([data] if single else list(data))

    def _parse_video_data(self, data: Any) -> ModalityDataItems[Any, Any] | None:
        if isinstance(data, dict):
            return self._embedding_dict(data, "video")
        return super()._parse_video_data(data)


class Qwen2VLProcessingInfo(BaseProcessingInfo):
    """Sizes, token counts and profiling maxima, all from our smart_resize rules."""

    @cached_property
    def geometry(self) -> VisionGeometry:
        vision = self.get_hf_config().vision_config
        return VisionGeometry(
            patch_size=int(vision.patch_size),
            temporal_patch_size=int(vision.temporal_patch_size),
            merge_size=int(vision.spatial_merge_size),
        )

    @cached_property
    def defaults(self) -> PixelDefaults:
        return pixel_defaults(self.ctx.get_hf_image_processor_config() or {}, self.geometry.factor)

    @cached_property
    def pad_token_ids(self) -> dict[str, int]:
        config = self.get_hf_config()
        vocab = None
        ids = {}
        for modality, attr, token in (
            ("image", "image_token_id", IMAGE_PAD),
            ("video", "video_token_id", VIDEO_PAD),
        ):
            value = getattr(config, attr, None)
            if value is None:
                vocab = vocab if vocab is not None else self.get_tokenizer().get_vocab()
                value = vocab[token]
            ids[modality] = int(value)
        return ids

    def get_data_parser(self) -> MultiModalDataParser:
        return Qwen2VLDataParser(
            self.geometry.merge_size, expected_hidden_size=self._get_expected_hidden_size()
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": None}

    def options(self, request_kwargs: Mapping[str, object] | None = None) -> SizeOptions:
        """Engine-level mm_processor_kwargs merged with the request's (the request wins)."""
        return SizeOptions.parse(self.ctx.get_merged_mm_kwargs(request_kwargs or {}))

    # -- sizes ---------------------------------------------------------------------------------------------

    def image_size(self, height: int, width: int, options: SizeOptions) -> tuple[int, int]:
        """(height, width) the image is resized to, as qwen-vl-utils fetch_image computes it."""
        factor = self.geometry.factor
        if not options.do_resize:
            return _check_given_size(height, width, factor)
        ele = {"min_pixels": self.defaults.min_pixels, "max_pixels": self.defaults.max_pixels}
        ele.update({k: v for k, v in options.given.items() if k != "total_pixels"})
        return target_size(ele, height, width, factor)

    def _video_ele(self, options: SizeOptions) -> dict[str, float]:
        ele = dict(options.given)
        if "max_pixels" in ele and "min_pixels" not in ele:
            # A max_pixels meant for images (e.g. engine-level) may be below the video frame minimum; keep
            # the pair consistent instead of failing every video.
            ele["min_pixels"] = min(VIDEO_MIN_TOKEN_NUM * self.geometry.factor**2, ele["max_pixels"])
        return ele

    def video_size(self, num_frames: int, height: int, width: int, options: SizeOptions) -> tuple[int, int]:
        """(height, width) of the frames, as qwen-vl-utils fetch_video computes it for a frame list."""
        factor = self.geometry.factor
        if not options.do_resize:
            return _check_given_size(height, width, factor)
        nframes = ceil_by_factor(num_frames, FRAME_FACTOR)
        return video_size(self._video_ele(options), nframes, height, width, factor)

    def get_num_image_tokens(self, *, image_width: int, image_height: int, options: SizeOptions) -> int:
        return self.geometry.image_tokens(*self.image_size(image_height, image_width, options))

    def get_num_video_tokens(
        self, *, image_width: int, image_height: int, num_frames: int, options: SizeOptions
    ) -> int:
        height, width = self.video_size(num_frames, image_height, image_width, options)
        return self.geometry.video_tokens(num_frames, height, width)

    # -- profiling maxima ----------------------------------------------------------------------------------

    def _fixed_size(self, options: SizeOptions) -> tuple[int, int] | None:
        given = options.given
        if "resized_height" not in given:
            return None
        return target_size(given, 1, 1, self.geometry.factor)  # the image's own size is then ignored

    def max_image_size(self, seq_len: int, count: int = 1) -> ImageSize:
        """The profiling image: the most tokens the configured max_pixels allows, at most seq_len / count."""
        options = self.options()
        factor = self.geometry.factor
        if (fixed := self._fixed_size(options)) is not None:
            return ImageSize(width=fixed[1], height=fixed[0])
        max_pixels = options.given.get("max_pixels", self.defaults.max_pixels)
        budget = max(seq_len // max(count, 1), 1)
        rows, cols = squarest_grid(min(int(max_pixels) // factor**2, budget))
        return ImageSize(width=cols * factor, height=rows * factor)

    def _video_frame_cap(self, num_frames: int, options: SizeOptions) -> tuple[int, int]:
        """(min, max) tokens of one frame for a video of num_frames frames (fetch_video's pixel limits)."""
        factor = self.geometry.factor
        min_pixels, max_pixels = frame_pixel_limit(self._video_ele(options), num_frames, factor)
        return math.ceil(min_pixels / factor**2), int(max_pixels // factor**2)

    def max_video_shape(self, seq_len: int, count: int = 1) -> tuple[int, ImageSize]:
        """(frames, frame size) of the profiling video: the most tokens within seq_len / count."""
        options = self.options()
        factor, temporal = self.geometry.factor, self.geometry.temporal_patch_size
        budget = max(seq_len // max(count, 1), 1)
        if (fixed := self._fixed_size(options)) is not None:
            per_group = (fixed[0] // factor) * (fixed[1] // factor)
            groups = min(max(budget // per_group, 1), FPS_MAX_FRAMES // temporal)
            return groups * temporal, ImageSize(width=fixed[1], height=fixed[0])
        best: tuple[int, int, int, int] | None = None  # (tokens, frames, rows, cols)
        for frames in range(temporal, FPS_MAX_FRAMES + 1, temporal):
            groups = frames // temporal
            low, high = self._video_frame_cap(frames, options)
            per_group = min(high, budget // groups)
            if per_group < max(low, 1):
                break  # more frames would need frames below the minimum size
            rows, cols = squarest_grid(per_group)
            if best is None or groups * rows * cols > best[0]:
                best = (groups * rows * cols, frames, rows, cols)
        if best is None:  # even two minimum frames exceed the budget: profile the smallest real video
            rows, cols = squarest_grid(max(self._video_frame_cap(temporal, options)[0], 1))
            best = (rows * cols, temporal, rows, cols)
        _, frames, rows, cols = best
        return frames, ImageSize(width=cols * factor, height=rows * factor)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        image = self.max_image_size(seq_len, mm_counts.get("image", 1))
        frames, frame = self.max_video_shape(seq_len, mm_counts.get("video", 1))
        return {
            "image": self.geometry.image_tokens(image.height, image.width),
            "video": self.geometry.video_tokens(frames, frame.height, frame.width),
        }


class Qwen2VLDummyInputsBuilder(BaseDummyInputsBuilder[Qwen2VLProcessingInfo]):
    """Profiling inputs sized from the configured max_pixels (see Qwen2VLProcessingInfo.max_*)."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_PLACEHOLDER * mm_counts.get("image", 0) + VIDEO_PLACEHOLDER * mm_counts.get("video", 0)

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Mapping[str, BaseDummyOptions]
    ) -> dict[str, Any]:
        num_images, num_videos = mm_counts.get("image", 0), mm_counts.get("video", 0)
        data: dict[str, Any] = {}
        if num_images:
            size = self.info.max_image_size(seq_len, num_images)
            data["image"] = self._get_dummy_images(
                width=size.width, height=size.height, num_images=num_images, overrides=mm_options.get("image")
            )
        if num_videos:
            frames, size = self.info.max_video_shape(seq_len, num_videos)
            data["video"] = _dummy_videos(frames, size, num_videos, mm_options.get("video"))
        return data


def _dummy_videos(frames: int, size: ImageSize, count: int, overrides: Any) -> list[np.ndarray]:
    """White [T, H, W, 3] uint8 videos; overrides may only shrink (as vLLM's own dummy helpers)."""
    height, width = size.height, size.width
    if isinstance(overrides, VideoDummyOptions):
        frames = min(frames, overrides.num_frames or frames)
        height = min(height, overrides.height or height)
        width = min(width, overrides.width or width)
    return [np.full((frames, height, width, 3), 255, dtype=np.uint8)] * count


class Qwen2VLMultiModalProcessor(CJoinedTokenMatches, BaseMultiModalProcessor[Qwen2VLProcessingInfo]):
    """Tokenizes without expanding; vLLM then replaces each pad token by the item's token count."""

    # -- media ---------------------------------------------------------------------------------------------

    @cached_property
    def _ships_uint8(self) -> bool:
        """Decoded uint8 pixels go to the model, which resizes and patchifies them on its device."""
        d = self.info.defaults
        return get_settings().device_pixels and rows_match_cpu_path(d.mean, d.std, d.rescale)

    def _image_rows(self, image: Any, options: SizeOptions) -> tuple[torch.Tensor, tuple[int, int, int]]:
        pixels = _image_array(image)
        height, width = (pixels.height, pixels.width) if isinstance(pixels, Image.Image) else pixels.shape[:2]
        target = self.info.image_size(height, width, options)
        if self._ships_uint8:
            return pixels_to_ship(pixels), self.info.geometry.grid(1, *target)
        if target != (height, width):
            if not isinstance(pixels, Image.Image):
                pixels = Image.fromarray(pixels)
            pixels = pixels.resize((target[1], target[0]), Image.Resampling.BICUBIC)
        return self._patchify(pixels)

    def _video_rows(self, video: Any, options: SizeOptions) -> tuple[torch.Tensor, tuple[int, int, int]]:
        frames = _video_tchw(video)
        num_frames, _, height, width = frames.shape
        target = self.info.video_size(num_frames, height, width, options)
        if self._ships_uint8 and frames.dtype == torch.uint8:
            # [T, H, W, 3], vLLM's decoded layout: no copy of a decoded clip (a [T, 3, H, W] copy cost ~7 ms a
            # 16-frame 640x360 clip on the API server); the model permutes on its device
            return frames.permute(0, 2, 3, 1).contiguous(), self.info.geometry.grid(num_frames, *target)
        if target != (height, width):
            frames = resize_frames(frames, target)
        return self._patchify(frames)

    def _patchify(self, pixels: Any) -> tuple[torch.Tensor, tuple[int, int, int]]:
        geometry, defaults = self.info.geometry, self.info.defaults
        return patchify(
            pixels,
            patch_size=geometry.patch_size,
            temporal_patch_size=geometry.temporal_patch_size,
            merge_size=geometry.merge_size,
            mean=defaults.mean,
            std=defaults.std,
            rescale=defaults.rescale,
            dtype=self.info.ctx.model_config.dtype,  # as transformers' BatchFeature.to(dtype) in-tree
        )

    def _process_media(
        self, mm_data: Mapping[str, object], mm_kwargs: Mapping[str, object]
    ) -> dict[str, Any]:
        options = self.info.options(mm_kwargs)
        check_item_counts(
            options.items,
            {"image": len(mm_data.get("images") or []), "video": len(mm_data.get("videos") or [])},
        )
        out: dict[str, Any] = {}
        for key, modality, rows_of, values, grids in (
            ("images", "image", self._image_rows, "pixel_values", "image_grid_thw"),
            ("videos", "video", self._video_rows, "pixel_values_videos", "video_grid_thw"),
        ):
            items = mm_data.get(key) or []
            if not items:
                continue
            results = [rows_of(item, options.for_item(modality, i)) for i, item in enumerate(items)]
            rows = [rows for rows, _ in results]  # already in the model's dtype
            out[grids] = torch.tensor([grid for _, grid in results], dtype=torch.long)
            if rows[0].dtype == torch.uint8:  # decoded pixels, one tensor per item (_ships_uint8)
                out[UINT8_PIXEL_KEYS[modality]] = rows
                continue
            out[values] = rows[0] if len(rows) == 1 else torch.cat(rows)
        return out

    # -- BaseMultiModalProcessor hooks ---------------------------------------------------------------------

    def _cached_apply_hf_processor(
        self, inputs: ProcessorInputs, timing_ctx: TimingContext
    ) -> tuple[list[int], MultiModalProcessingInfo, bool]:
        items = self.info.options(inputs.hf_processor_mm_kwargs).items
        if not items:
            return super()._cached_apply_hf_processor(inputs, timing_ctx)
        # Per-item options are positional: process every item (not only cache misses) and key each
        # item's hash on its own options.
        return self._apply_hf_processor(item_keyed_inputs(inputs, items), timing_ctx)

    def _call_hf_processor(
        self,
        prompt: str,
        mm_data: Mapping[str, object],
        mm_kwargs: Mapping[str, object],
        tok_kwargs: Mapping[str, object],
    ) -> BatchFeature:
        add_special = bool(tok_kwargs.get("add_special_tokens", True))
        input_ids = self.info.get_tokenizer().encode(prompt, add_special_tokens=add_special)
        return BatchFeature({"input_ids": [input_ids], **self._process_media(mm_data, mm_kwargs)})

    def _apply_hf_processor_mm_only(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        tokenization_kwargs: Mapping[str, object],
    ) -> BatchFeature:
        # No dummy prompt needed: our media processing does not look at the text.
        valid = mm_items.select({k for k, c in mm_items.get_all_counts().items() if c > 0})
        processor_data, passthrough_data = self._get_hf_mm_data(valid)
        out = self._process_media(processor_data, hf_processor_mm_kwargs)
        out.update(passthrough_data)
        return BatchFeature(out)

    def _hf_processor_applies_updates(self, *args: Any, **kwargs: Any) -> bool:
        return False  # we never expand pad tokens ourselves

    @cached_property
    def _fields(self) -> Callable[[Mapping[str, torch.Tensor]], Mapping[str, Any]]:
        return qwen2vl_field_config(self.info.geometry.merge_size, get_settings().model_copies_pixels)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return self._fields(hf_inputs)

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        pad_ids, geometry = self.info.pad_token_ids, self.info.geometry

        def replacement(item_idx: int, modality: str) -> list[int]:
            grid = out_mm_kwargs[modality][item_idx][f"{modality}_grid_thw"].data
            return [pad_ids[modality]] * geometry.tokens(grid.tolist())

        return [
            PromptReplacement(
                modality=modality,
                target=[pad_ids[modality]],
                replacement=partial(replacement, modality=modality),
            )
            for modality in ("image", "video")
        ]

"""Facts of the released Qwen2-VL and Qwen-VL (v1) checkpoints, in one place.

Token ids, vision geometry and pixel statistics that the tokenizers, processors, model classes and the
checkpoint writer all rely on. Kept free of imports so that any module can use it.
Both families share the 151643 byte-level BPE ranks of qwen.tiktoken; their special tokens follow from id
151643 in the order listed here (the order is what fixes the ids).
"""

from __future__ import annotations

NUM_BPE_TOKENS = 151643  # ranks in qwen.tiktoken; special tokens start at this id
# The ChatML specials both families start with (ids 151643, 151644, 151645).
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT_ID = NUM_BPE_TOKENS

# OpenAI CLIP's per-channel statistics: both families normalise pixels with them.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# uint8 pixels are scaled to [0, 1] before the CLIP normalisation.
PIXEL_RESCALE = 1 / 255

# ---- Qwen2-VL -------------------------------------------------------------------------------------------

PATCH_SIZE = 14  # pixels per ViT patch side
TEMPORAL_PATCH_SIZE = 2  # frames per patch (an image fills both slots)
SPATIAL_MERGE_SIZE = 2  # patches per LLM token side (merger)

OBJECT_REF_START, OBJECT_REF_END = "<|object_ref_start|>", "<|object_ref_end|>"
QWEN2_BOX_START, QWEN2_BOX_END = "<|box_start|>", "<|box_end|>"
QWEN2_QUAD_START, QWEN2_QUAD_END = "<|quad_start|>", "<|quad_end|>"
VISION_START, VISION_END, VISION_PAD = "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
QWEN2_SPECIAL_TOKENS = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    OBJECT_REF_START,
    OBJECT_REF_END,
    QWEN2_BOX_START,
    QWEN2_BOX_END,
    QWEN2_QUAD_START,
    QWEN2_QUAD_END,
    VISION_START,
    VISION_END,
    VISION_PAD,
    IMAGE_PAD,
    VIDEO_PAD,
)
QWEN2_TOKEN_IDS: dict[str, int] = {tok: NUM_BPE_TOKENS + i for i, tok in enumerate(QWEN2_SPECIAL_TOKENS)}
# Names as in Qwen2-VL's config.json.
BOS_TOKEN_ID = ENDOFTEXT_ID  # 151643, also the pad token
EOS_TOKEN_ID = QWEN2_TOKEN_IDS[IM_END]  # 151645
VISION_START_TOKEN_ID = QWEN2_TOKEN_IDS[VISION_START]  # 151652
VISION_END_TOKEN_ID = QWEN2_TOKEN_IDS[VISION_END]  # 151653
VISION_TOKEN_ID = QWEN2_TOKEN_IDS[VISION_PAD]  # 151654
IMAGE_TOKEN_ID = QWEN2_TOKEN_IDS[IMAGE_PAD]  # 151655
VIDEO_TOKEN_ID = QWEN2_TOKEN_IDS[VIDEO_PAD]  # 151656

# ---- Qwen-VL (v1) ---------------------------------------------------------------------------------------

# Ids follow the released tokenization_qwen.py: the 208 chat specials, then the 9 vision-language tags.
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(205))
CHAT_SPECIALS = (ENDOFTEXT, IM_START, IM_END, *EXTRAS)

REF_START, REF_END = "<ref>", "</ref>"
BOX_START, BOX_END = "<box>", "</box>"
QUAD_START, QUAD_END = "<quad>", "</quad>"
IMG_START, IMG_END, IMG_PAD = "<img>", "</img>", "<imgpad>"
# Order fixes the ids (151851..151859); the released tokenizer calls these IMAGE_ST.
VL_TAGS = (REF_START, REF_END, BOX_START, BOX_END, QUAD_START, QUAD_END, IMG_START, IMG_END, IMG_PAD)

SPECIAL_TOKEN_IDS: dict[str, int] = {tok: NUM_BPE_TOKENS + i for i, tok in enumerate(CHAT_SPECIALS + VL_TAGS)}
IM_START_ID = SPECIAL_TOKEN_IDS[IM_START]  # 151644
IM_END_ID = SPECIAL_TOKEN_IDS[IM_END]  # 151645
IMG_START_ID = SPECIAL_TOKEN_IDS[IMG_START]  # 151857, config.json's visual.image_start_id
IMG_END_ID = SPECIAL_TOKEN_IDS[IMG_END]  # 151858
IMG_PAD_ID = SPECIAL_TOKEN_IDS[IMG_PAD]  # 151859

# qwen-vl-utils' per-image / per-video size keys (Qwen2-VL); Qwen-VL v1 refuses them (fixed size).
SIZE_KEYS = ("min_pixels", "max_pixels", "resized_height", "resized_width", "total_pixels")

QWEN_VL_IMAGE_SIZE = 448  # every image is resized to 448 x 448
QWEN_VL_PATCH_SIZE = 14
# The resampler's learned queries: each image becomes <img> + 256 positions + </img>, and the model
# overwrites the 256 with the resampler's outputs. The released visual code hardcodes 256 (a 16 x 16 grid).
QWEN_VL_QUERIES = 256
IMG_TOKEN_SPAN = QWEN_VL_QUERIES
# Rows of the ViT's stored positional embedding (a 16 x 16 grid, interpolated to the patch grid).
QWEN_VL_POS_EMBED_ROWS = 256

# Processor output keys of decoded uint8 pixels (QWENVL_VLLM_DEVICE_PIXELS), one tensor per item; the
# model resizes / normalises them on its device.
UINT8_PIXEL_KEYS = {"image": "image_pixels_u8", "video": "video_pixels_u8"}

"""`extract_vision_info` / `process_vision_info` over qwen-vl-utils message lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .image import fetch_image
from .video import fetch_video

VISION_TYPES = ("image", "image_url", "video")
CONTENT_TYPES = ("text", *VISION_TYPES)

Conversation = Sequence[Mapping[str, Any]]


def as_conversations(conversations: Conversation | Sequence[Conversation]) -> list[Conversation]:
    """A batch of conversations from either one conversation or a list of them."""
    if not isinstance(conversations, Sequence) or isinstance(conversations, str) or len(conversations) == 0:
        raise ValueError(
            "messages must be a non-empty list of {'role', 'content'} dicts, or a batch of such lists"
        )
    if isinstance(conversations[0], Mapping):
        return [conversations]  # type: ignore[list-item]
    for conversation in conversations:
        if not isinstance(conversation, Sequence) or len(conversation) == 0:
            raise ValueError("each conversation must be a non-empty list of messages")
    return list(conversations)  # type: ignore[arg-type]


def content_kind(ele: Mapping[str, Any]) -> str:
    """'text', 'image' or 'video' for a content item; ValueError for anything else."""
    if not isinstance(ele, Mapping):
        raise ValueError(f"content items must be dicts, got {type(ele).__name__}")
    kind = ele.get("type")
    if kind is not None and kind not in CONTENT_TYPES:
        raise ValueError(f"unknown content type {kind!r}; expected one of {CONTENT_TYPES}")
    # the media field decides before `type` (qwen-vl-utils reads {"type": "image", "video": ...} as a video)
    if "image" in ele or "image_url" in ele:
        return "image"
    if "video" in ele:
        return "video"
    if kind in ("image", "image_url", "video"):
        return "video" if kind == "video" else "image"
    if "text" in ele:
        return "text"
    raise ValueError(f"content item has no text, image or video: keys {sorted(ele)}")


def extract_vision_info(conversations: Conversation | Sequence[Conversation]) -> list[Mapping[str, Any]]:
    infos = []
    for conversation in as_conversations(conversations):
        for message in conversation:
            if not isinstance(message, Mapping) or "content" not in message:
                raise ValueError("each message must be a dict with 'role' and 'content'")
            content = message["content"]
            if isinstance(content, list):
                infos += [ele for ele in content if content_kind(ele) != "text"]
    return infos


def process_vision_info(
    conversations: Conversation | Sequence[Conversation],
    return_video_kwargs: bool = False,
    return_video_metadata: bool = False,
    image_patch_size: int = 14,
):
    """(images or None, videos or None[, video_kwargs]) exactly as qwen-vl-utils 0.0.14 returns."""
    images, videos, sample_fps = [], [], []
    for info in extract_vision_info(conversations):
        if content_kind(info) == "image":
            images.append(fetch_image(info, image_patch_size=image_patch_size))
            continue
        if "video" not in info:
            raise ValueError("video item needs a 'video' field")
        video, fps = fetch_video(
            info,
            image_patch_size=image_patch_size,
            return_video_sample_fps=True,
            return_video_metadata=return_video_metadata,
        )
        videos.append(video)
        sample_fps.append(fps)
    video_kwargs: dict[str, Any] = {"do_sample_frames": False}
    if not return_video_metadata:
        video_kwargs["fps"] = sample_fps
    result = (images or None, videos or None)
    return (*result, video_kwargs) if return_video_kwargs else result

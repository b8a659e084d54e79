"""M-RoPE position ids vs three references (CPU, integer outputs: exact equality everywhere).

(a) a per-token loop written here from the original Qwen2-VL description,
(b) vLLM 0.26 in-tree ``Qwen2VLForConditionalGeneration.get_mrope_input_positions``, called on an instance
    made with ``object.__new__`` (no weights, no __init__) with only ``config`` set: the method reads
    nothing else (``iter_mm_grid_thw`` uses ``config.vision_config``),
(c) transformers 5.17 ``Qwen2VLModel.get_rope_index`` on a real, tiny Qwen2VLModel (1 layer, width 16);
    it agrees on images and on videos with t <= max(h, w) / merge and differs otherwise (see mrope.py).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from qwenvl_vllm.mrope import (
    IMAGE_TOKEN_ID,
    VIDEO_TOKEN_ID,
    VISION_START_TOKEN_ID,
    get_rope_index,
    mrope_input_positions,
    mrope_positions_from_features,
)

VISION_END_TOKEN_ID = 151653
PAD_TOKEN_ID = 151643
MERGE = 2


# ---------------------------------------------------------------- prompt generation


def _grid(rng: random.Random, video: bool, long_video: bool) -> tuple[int, int, int]:
    h, w = rng.randint(1, 4) * MERGE, rng.randint(1, 4) * MERGE
    if not video:
        return 1, h, w
    spatial = max(h, w) // MERGE
    t = rng.randint(spatial + 1, spatial + 6) if long_video else rng.randint(1, spatial)
    return t, h, w


def _make_prompt(rng: random.Random, n_items: int, long_videos: bool, video_share: float = 0.5):
    """Text and vision items in random order; returns tokens, image grids, video grids, items."""
    tokens: list[int] = []
    images, videos, items = [], [], []  # items: (modality, offset, grid)
    for _ in range(n_items):
        tokens += [rng.randrange(0, 151000) for _ in range(rng.randint(0, 6))]
        video = rng.random() < video_share
        grid = _grid(rng, video, long_videos)
        n_pad = grid[0] * grid[1] * grid[2] // MERGE**2
        tokens.append(VISION_START_TOKEN_ID)
        items.append(("video" if video else "image", len(tokens), grid))
        tokens += [VIDEO_TOKEN_ID if video else IMAGE_TOKEN_ID] * n_pad + [VISION_END_TOKEN_ID]
        (videos if video else images).append(grid)
    tokens += [rng.randrange(0, 151000) for _ in range(rng.randint(0, 6))]
    return tokens, images, videos, items


def _as_grid_tensor(grids: list[tuple[int, int, int]]) -> torch.Tensor | None:
    return torch.tensor(grids, dtype=torch.long).reshape(-1, 3) if grids else None


def _left_padded_batch(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), PAD_TOKEN_ID, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, length - len(p) :] = torch.tensor(p)
        mask[b, length - len(p) :] = 1
    return ids, mask


# ---------------------------------------------------------------- (a) straightforward reference


def _reference_row(tokens: list[int], images: list, videos: list) -> list[list[int]]:
    """Per token: text continues at (max of every position so far) + 1; a vision item is its t/h/w
    index grid offset by that same start value."""
    rows: list[list[int]] = [[], [], []]
    images, videos = list(images), list(videos)
    i = 0
    while i < len(tokens):
        start = max(rows[0] + rows[1] + rows[2], default=-1) + 1
        is_item = (
            tokens[i] in (IMAGE_TOKEN_ID, VIDEO_TOKEN_ID) and i > 0 and tokens[i - 1] == VISION_START_TOKEN_ID
        )
        if not is_item:
            for r in rows:
                r.append(start)
            i += 1
            continue
        t, h, w = (images if tokens[i] == IMAGE_TOKEN_ID else videos).pop(0)
        for ti in range(t):
            for hi in range(h // MERGE):
                for wi in range(w // MERGE):
                    rows[0].append(start + ti)
                    rows[1].append(start + hi)
                    rows[2].append(start + wi)
                    i += 1
    return rows


def _reference_batch(prompts, images_per_row, videos_per_row, length):
    positions = torch.ones((3, len(prompts), length), dtype=torch.long)
    deltas = torch.zeros((len(prompts), 1), dtype=torch.long)
    for b, (p, imgs, vids) in enumerate(zip(prompts, images_per_row, videos_per_row, strict=True)):
        rows = torch.tensor(_reference_row(p, imgs, vids), dtype=torch.long).reshape(3, -1)
        positions[:, b, length - len(p) :] = rows
        deltas[b, 0] = rows.max() + 1 - length
    return positions, deltas


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("long_videos", [False, True])
def test_batch_with_left_padding_matches_reference(seed, long_videos):
    rng = random.Random(seed * 7 + long_videos)
    batch = [_make_prompt(rng, rng.randint(0, 4), long_videos) for _ in range(3)]
    prompts = [b[0] for b in batch]
    ids, mask = _left_padded_batch(prompts)
    all_images = [g for b in batch for g in b[1]]
    all_videos = [g for b in batch for g in b[2]]
    pos, deltas = get_rope_index(ids, _as_grid_tensor(all_images), _as_grid_tensor(all_videos), mask)
    ref_pos, ref_deltas = _reference_batch(
        prompts, [b[1] for b in batch], [b[2] for b in batch], ids.shape[1]
    )
    assert pos.dtype == torch.long and deltas.dtype == torch.long
    assert pos.shape == (3, 3, ids.shape[1]) and deltas.shape == (3, 1)
    torch.testing.assert_close(pos, ref_pos, rtol=0, atol=0)
    torch.testing.assert_close(deltas, ref_deltas, rtol=0, atol=0)


def test_text_only_batch():
    ids, mask = _left_padded_batch([[5, 6, 7, 8], [9], [1, 2]])
    pos, deltas = get_rope_index(ids, attention_mask=mask)
    # cumsum(mask) - 1 on attended tokens, 1 on padding; delta = max + 1 - L per row.
    assert pos[0].tolist() == [[0, 1, 2, 3], [1, 1, 1, 0], [1, 1, 0, 1]]
    assert torch.equal(pos[0], pos[1]) and torch.equal(pos[0], pos[2])
    assert deltas.tolist() == [[0], [-2], [-2]]
    pos, deltas = get_rope_index(ids)
    assert pos[1, 2].tolist() == [0, 1, 2, 3] and deltas.tolist() == [[0]] * 3


def test_video_advances_by_max_of_all_rows():
    # 3 text tokens, a video of merged grid (5, 1, 2), 2 text tokens: text resumes at 3 + max(5, 1, 2).
    tokens = [1, 2, VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * 10 + [VISION_END_TOKEN_ID, 3]
    pos, delta = mrope_input_positions(tokens, [], [(5, 2, 4)])
    assert pos[:, :3].tolist() == [[0, 1, 2]] * 3
    assert pos[0, 3:13].tolist() == [3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert pos[1, 3:13].tolist() == [3] * 10
    assert pos[2, 3:13].tolist() == [3, 4] * 5
    assert pos[:, 13:].tolist() == [[8, 9]] * 3
    assert delta == 10 - len(tokens)


# ---------------------------------------------------------------- vLLM hook variants


@pytest.mark.parametrize("seed", range(8))
def test_request_functions_equal_get_rope_index(seed):
    rng = random.Random(100 + seed)
    tokens, images, videos, items = _make_prompt(rng, rng.randint(0, 5), long_videos=seed % 2 == 1)
    pos, deltas = get_rope_index(torch.tensor([tokens]), _as_grid_tensor(images), _as_grid_tensor(videos))
    scanned, delta = mrope_input_positions(tokens, images, videos)
    from_features, delta_f = mrope_positions_from_features(tokens, _features(items), MERGE)
    assert scanned.shape == (3, len(tokens)) and scanned.dtype == torch.int64
    assert torch.equal(scanned, pos[:, 0]) and delta == deltas.item()
    assert torch.equal(from_features, pos[:, 0]) and delta_f == deltas.item()


def _features(items, shuffle_seed: int | None = None):
    from vllm.multimodal.inputs import (
        MultiModalBatchedField,
        MultiModalFeatureSpec,
        MultiModalFieldElem,
        MultiModalKwargsItem,
        PlaceholderRange,
    )

    specs = []
    for k, (modality, offset, grid) in enumerate(items):
        field = MultiModalFieldElem(data=torch.tensor(grid), field=MultiModalBatchedField(keep_on_cpu=True))
        specs.append(
            MultiModalFeatureSpec(
                data=MultiModalKwargsItem({f"{modality}_grid_thw": field}),
                modality=modality,
                identifier=f"{modality}-{k}",
                mm_position=PlaceholderRange(offset=offset, length=grid[0] * grid[1] * grid[2] // MERGE**2),
            )
        )
    if shuffle_seed is not None:  # vLLM sorts by offset; order in the list must not matter
        random.Random(shuffle_seed).shuffle(specs)
    return specs


@pytest.fixture(scope="module")
def tiny_hf_model():
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    config = Qwen2VLConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2, mlp_ratio=1),
    )
    assert config.vision_config.spatial_merge_size == MERGE
    assert (config.image_token_id, config.video_token_id) == (IMAGE_TOKEN_ID, VIDEO_TOKEN_ID)
    return Qwen2VLModel(config).eval()


@pytest.fixture(scope="module")
def vllm_qwen2vl(tiny_hf_model):
    from vllm.model_executor.models.qwen2_vl import Qwen2VLForConditionalGeneration

    model = object.__new__(Qwen2VLForConditionalGeneration)  # skips __init__: no layers, no weights
    model.config = tiny_hf_model.config
    return model


# ---------------------------------------------------------------- (b) vLLM 0.26 in-tree


@pytest.mark.parametrize("seed", range(8))
def test_matches_vllm_in_tree(vllm_qwen2vl, seed):
    rng = random.Random(200 + seed)
    # At least one item: vLLM's version cannot handle an empty prompt (nothing to concatenate).
    tokens, images, videos, items = _make_prompt(rng, rng.randint(1, 5), long_videos=seed % 2 == 1)
    features = _features(items, shuffle_seed=seed)
    expected, expected_delta = vllm_qwen2vl.get_mrope_input_positions(tokens, features)
    got, delta = mrope_positions_from_features(tokens, features, MERGE)
    assert torch.equal(got, expected.to(torch.int64)) and delta == expected_delta
    scanned, scanned_delta = mrope_input_positions(tokens, images, videos)
    assert torch.equal(scanned, got) and scanned_delta == delta


# ---------------------------------------------------------------- (c) transformers 5.17


def _mm_token_types(ids: torch.Tensor) -> torch.Tensor:
    return (ids == IMAGE_TOKEN_ID).int() + 2 * (ids == VIDEO_TOKEN_ID).int()


@pytest.mark.parametrize("seed", range(6))
def test_matches_transformers_where_they_agree(tiny_hf_model, seed):
    rng = random.Random(300 + seed)
    batch = [_make_prompt(rng, rng.randint(1, 4), long_videos=False) for _ in range(3)]
    ids, mask = _left_padded_batch([b[0] for b in batch])
    images = _as_grid_tensor([g for b in batch for g in b[1]])
    videos = _as_grid_tensor([g for b in batch for g in b[2]])
    ours, _ = get_rope_index(ids, images, videos, mask)
    theirs, _ = tiny_hf_model.get_rope_index(ids, _mm_token_types(ids), images, videos, attention_mask=mask)
    attended = mask.bool()
    assert torch.equal(ours[:, attended], theirs[:, attended])
    # Documented difference: padding gets 1 in the original, 0 in transformers 5.x.
    assert (ours[:, ~attended] == 1).all() and (theirs[:, ~attended] == 0).all()

    # Unpadded rows: deltas agree too.
    for b, (tokens, imgs, vids, _) in enumerate(batch):
        one = torch.tensor([tokens])
        pos, delta = get_rope_index(one, _as_grid_tensor(imgs), _as_grid_tensor(vids))
        hf_pos, hf_delta = tiny_hf_model.get_rope_index(
            one, _mm_token_types(one), _as_grid_tensor(imgs), _as_grid_tensor(vids)
        )
        assert torch.equal(pos, hf_pos) and torch.equal(delta, hf_delta.reshape(1, 1)), b


def test_differs_from_transformers_on_long_video(tiny_hf_model, vllm_qwen2vl):
    # Video grid (8, 4, 4): merged (8, 2, 2), t = 8 > max(h, w) / merge = 2.
    tokens = [10, 11, VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * 32 + [VISION_END_TOKEN_ID, 12, 13]
    ids, grid = torch.tensor([tokens]), torch.tensor([[8, 4, 4]])
    ours, delta = get_rope_index(ids, video_grid_thw=grid)
    theirs, hf_delta = tiny_hf_model.get_rope_index(ids, _mm_token_types(ids), video_grid_thw=grid)
    # Identical up to and including the video.
    assert torch.equal(ours[:, :, :35], theirs[:, :, :35])
    # Original: <|vision_end|> at 3 + max(8, 2, 2) = 11; transformers: 3 + max(2, 2) = 5.
    assert ours[:, 0, 35].tolist() == [11, 11, 11]
    assert theirs[:, 0, 35].tolist() == [5, 5, 5]
    # Max position: original 13 (last text token); transformers 10 (the video's last t index, 3 + 7).
    assert delta.item() == 13 + 1 - len(tokens) and hf_delta.item() == 10 + 1 - len(tokens)
    # vLLM 0.26 in-tree sides with the original.
    vllm_pos, vllm_delta = vllm_qwen2vl.get_mrope_input_positions(
        tokens, _features([("video", 3, (8, 4, 4))])
    )
    assert torch.equal(vllm_pos.to(torch.int64), ours[:, 0]) and vllm_delta == delta.item()


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_value_error():
    one_image = [1, VISION_START_TOKEN_ID] + [IMAGE_TOKEN_ID] * 4 + [VISION_END_TOKEN_ID]
    with pytest.raises(ValueError, match="more items"):
        mrope_input_positions(one_image, [], [])
    with pytest.raises(ValueError, match="does not fit"):
        mrope_input_positions(one_image, [(1, 8, 8)], [])
    with pytest.raises(ValueError, match="divisible"):
        mrope_input_positions(one_image, [(1, 3, 4)], [])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        get_rope_index(torch.tensor([one_image]), torch.tensor([1, 4, 4]))
    with pytest.raises(ValueError, match="attention_mask"):
        get_rope_index(torch.tensor([one_image]), torch.tensor([[1, 4, 4]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="input_ids"):
        get_rope_index(torch.tensor(one_image), torch.tensor([[1, 4, 4]]))


def test_bad_features_raise_value_error():
    tokens = [1, VISION_START_TOKEN_ID] + [IMAGE_TOKEN_ID] * 4 + [VISION_END_TOKEN_ID]
    (feature,) = _features([("image", 2, (1, 4, 4))])
    # Positions 0, 1, image at 2..3 (merged grid 1x2x2), <|vision_end|> at 2 + 2 = 4: delta 4 + 1 - 7.
    assert mrope_positions_from_features(tokens, [feature], MERGE)[1] == -2
    with pytest.raises(ValueError, match="placeholder length"):
        (wrong,) = _features([("image", 1, (1, 4, 4))])
        wrong.mm_position = SimpleNamespace(offset=1, length=6)
        mrope_positions_from_features(tokens, [wrong], MERGE)
    feature.data = None
    with pytest.raises(ValueError, match="carries no"):
        mrope_positions_from_features(tokens, [feature], MERGE)
    feature.modality = "audio"
    with pytest.raises(ValueError, match="modality"):
        mrope_positions_from_features(tokens, [feature], MERGE)

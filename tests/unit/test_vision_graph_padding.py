"""Host-side bookkeeping of the vision tower's CUDA graphs (the replays themselves are GPU-tested)."""

from __future__ import annotations

import numpy as np
import pytest

from qwenvl_vllm.models.qwen2_vl_vision_graphs import BUCKET, MAX_SEQS, bucket_size, fits, padded_cu_seqlens


@pytest.mark.parametrize("n,size", [(1, BUCKET), (BUCKET, BUCKET), (BUCKET + 4, 2 * BUCKET), (3996, 4096)])
def test_bucket_size_rounds_up_to_whole_buckets(n, size):
    assert bucket_size(n) == size


def test_padded_cu_seqlens_has_a_sequence_per_frame_then_the_pad_then_empty_ones():
    grid = [(1, 4, 6), (2, 2, 2)]
    cu = padded_cu_seqlens(grid, 1024)
    assert cu.dtype == np.int32 and cu.shape == (MAX_SEQS + 2,)
    assert cu[:5].tolist() == [0, 24, 28, 32, 1024]
    assert (cu[4:] == 1024).all()  # after the pad sequence: empty sequences
    assert (np.diff(cu) >= 0).all()


def test_padded_cu_seqlens_without_pad_rows():
    cu = padded_cu_seqlens([(1, 32, 32)], 1024)
    assert cu[:2].tolist() == [0, 1024] and (cu[1:] == 1024).all()


def test_fits_limits_patches_and_frames():
    assert fits([(1, 54, 74)], 3996, 16384)
    assert not fits([(1, 54, 74)], 3996, 2048)
    assert not fits([(MAX_SEQS + 1, 2, 2)], 4 * (MAX_SEQS + 1), 16384)


def test_cpu_towers_run_eagerly(vllm_cpu):
    import torch
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    from qwenvl_vllm.models.qwen2_vl_vision import Qwen2VisionTower

    cfg = Qwen2VLVisionConfig(depth=1, embed_dim=32, hidden_size=16, num_heads=2, mlp_ratio=2)
    tower = Qwen2VisionTower(cfg, graph_max_patches=4096, prefix="visual")
    assert tower.graphs is not None
    assert tower.graphs.run(torch.zeros(4, 1176), [(1, 2, 2)]) is None
    assert tower.graphs.graphs == {}

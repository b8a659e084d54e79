"""Qwen-VL dynamic NTK per request, on CPU: our vLLM model in mixed batches vs the plain-PyTorch reference.

The tiny-qwen-vl checkpoint with seq_length 32 (max_model_len 192), prompts of 20, 40, 70 and 150 tokens:
alphas 1, 3, 7 and 15 (all four tables), logn attention from position 32 on. A small runner simulation
feeds them as vLLM does: one flat batch per step under a token budget (so long prompts are prefilled in
chunks next to other requests' chunks and decode steps), prompt positions from the model's
`get_mrope_input_positions` on the whole prompt, decode positions from vLLM's own M-RoPE continuation
(`MRotaryEmbedding.get_next_input_positions_tensor` with the request's delta). vLLM's paged Attention
needs a GPU backend, so a stand-in keeps a KV cache per request (the paged kernel, CUDA graphs and
torch.compile are left to tests/gpu/test_qwen_vl_ntk_gpu.py).

fp32 on both sides: differences are float32 rounding (~1e-6); rtol/atol 1e-4 leaves margin, while a
wrong alpha moves logits by ~1e-2 on this random tiny model, ~100x the tolerance (checked below, so the
comparison can fail).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from reference.qwen_vl_ref import QwenVLReference, read_checkpoint
from reference.qwen_vl_ref import ntk_alpha as ref_ntk_alpha

TOL = dict(rtol=1e-4, atol=1e-4)
SEQ_LENGTH = 32
MAX_MODEL_LEN = 192
PROMPT_LENS = (20, 40, 70, 150)
SHARED_PREFIX = 16  # every prompt starts with the same tokens, like a system prompt
DECODE_STEPS = 6
TOKEN_BUDGET = 64  # tokens per step, as max_num_batched_tokens: forces chunked prefill


# ---- checkpoint, model, reference ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qwenvl_vllm.checkpoint.writer import write_checkpoint

    out = write_checkpoint("tiny-qwen-vl", "bf16", tmp_path_factory.mktemp("ntk") / "tiny", seed=7)
    config = json.loads((out / "config.json").read_text())
    assert config["use_dynamic_ntk"] and config["use_logn_attn"]  # as released
    (out / "config.json").write_text(json.dumps(config | {"seq_length": SEQ_LENGTH}))
    return out


def _vllm_config(base, model_dir: Path, max_model_len: int, **cache_kwargs):
    from vllm.config import CacheConfig, ModelConfig, VllmConfig

    from qwenvl_vllm.model_registry import register

    register()  # what the plugin hook does in every vLLM process (config hooks included)
    model_config = ModelConfig(model=str(model_dir), dtype="float32", max_model_len=max_model_len)
    return VllmConfig(
        model_config=model_config,
        cache_config=CacheConfig(**cache_kwargs),
        device_config=base.device_config,
        compilation_config=base.compilation_config,
    )


class KVCacheAttention(torch.nn.Module):
    """Stand-in for vLLM's paged Attention: a KV cache per request; each request's new queries attend
    causally to its cache. `plan` ((request id, new tokens) in batch order) is set before each forward."""

    plan: list[tuple[int, int]] = []

    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int | None = None, **_):
        super().__init__()
        self.num_heads, self.head_size, self.scale = num_heads, head_size, scale
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs, start = [], 0
        for rid, n in self.plan:
            new = slice(start, start + n)
            start += n
            k_old, v_old = self.cache.get(rid, (k[:0], v[:0]))
            k_all, v_all = torch.cat([k_old, k[new]]), torch.cat([v_old, v[new]])
            self.cache[rid] = (k_all, v_all)
            heads = (
                t.reshape(t.shape[0], self.num_heads, self.head_size).transpose(0, 1)
                for t in (q[new], k_all, v_all)
            )
            qh, kh, vh = heads
            mask = torch.ones(n, k_all.shape[0], dtype=torch.bool).tril(k_all.shape[0] - n)
            out = torch.nn.functional.scaled_dot_product_attention(
                qh, kh, vh, attn_mask=mask, scale=self.scale
            )
            outs.append(out.transpose(0, 1).reshape(n, -1))
        return torch.cat(outs)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [T, heads * d] -> [heads, T, d]
        return x.reshape(x.shape[0], self.num_heads, self.head_size).transpose(0, 1)


@pytest.fixture(scope="module")
def model(vllm_cpu, ckpt: Path):
    from vllm.config import set_current_vllm_config

    import qwenvl_vllm.models.qwen_vl as qwen_vl

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # vLLM derives max_model_len = seq_length
        mp.setattr(qwen_vl, "Attention", KVCacheAttention)
        cfg = _vllm_config(vllm_cpu, ckpt, MAX_MODEL_LEN)
        with set_current_vllm_config(cfg), torch.device("cpu"):
            ours = qwen_vl.QwenVLForConditionalGeneration(vllm_config=cfg).eval()
    _, state = read_checkpoint(ckpt)
    ours.load_weights((name, t.float()) for name, t in state.items())
    return ours


@pytest.fixture(scope="module")
def reference(ckpt: Path) -> QwenVLReference:
    config, state = read_checkpoint(ckpt)
    ref = QwenVLReference(config)
    ref.load_checkpoint_state({k: v.float() for k, v in state.items()})
    return ref.float().eval()


# ---- a runner simulation -------------------------------------------------------------------------------


@dataclass
class Request:
    rid: int
    prompt: list[int]
    positions: torch.Tensor  # [3, prompt_len] from the model's M-RoPE hook
    delta: int
    generated: list[int] = field(default_factory=list)
    computed: int = 0
    logits: list[torch.Tensor] = field(default_factory=list)

    def next_chunk(self, budget: int) -> int:
        if self.computed < len(self.prompt):
            return min(len(self.prompt) - self.computed, budget)
        return 1 if len(self.generated) < DECODE_STEPS else 0

    def fed(self) -> list[int]:
        """Tokens that went through the model (the last sampled one never does)."""
        return self.prompt + self.generated[:-1]


def _positions(req: Request, n: int) -> np.ndarray:
    """What vLLM's runner writes into its (3, N) position buffer for this request's next n tokens."""
    from vllm.model_executor.layers.rotary_embedding.mrope import MRotaryEmbedding

    if req.computed < len(req.prompt):
        return req.positions[:, req.computed : req.computed + n].numpy()
    out = np.zeros((3, n), dtype=np.int64)
    MRotaryEmbedding.get_next_input_positions_tensor(
        out=out, out_offset=0, mrope_position_delta=req.delta, context_len=req.computed, num_new_tokens=n
    )
    return out


def _step(model, reqs: list[Request]) -> bool:
    plan, ids, pos, budget = [], [], [], TOKEN_BUDGET
    for req in reqs:
        n = req.next_chunk(budget)
        if n:
            plan.append((req, n))
            ids += (req.prompt + req.generated)[req.computed : req.computed + n]
            pos.append(_positions(req, n))
            budget -= n
    if not plan:
        return False
    KVCacheAttention.plan = [(req.rid, n) for req, n in plan]
    with torch.inference_mode():
        hidden = model(torch.tensor(ids), torch.from_numpy(np.concatenate(pos, axis=1)))
        logits = model.compute_logits(hidden)
    start = 0
    for req, n in plan:
        req.logits.append(logits[start : start + n])
        start += n
        req.computed += n
        if req.computed >= len(req.prompt):  # the prompt is done: sample (greedy) the next token
            req.generated.append(int(logits[start - 1].argmax()))
    return True


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(11)
    shared = torch.randint(100, 150000, (SHARED_PREFIX,), generator=g).tolist()
    return [
        shared + torch.randint(100, 150000, (n - SHARED_PREFIX,), generator=g).tolist() for n in PROMPT_LENS
    ]


@pytest.fixture(scope="module")
def served(model) -> list[Request]:
    """All four prompts in one engine: mixed batches of prefill chunks and decode steps."""
    for layer in model.transformer.h:
        layer.attn.attn.cache.clear()
    reqs = []
    for rid, prompt in enumerate(_prompts()):
        positions, delta = model.get_mrope_input_positions(prompt, [])
        reqs.append(Request(rid, prompt, positions, delta))
    steps = 0
    while _step(model, reqs):
        steps += 1
    assert steps > DECODE_STEPS  # long prompts took several chunked steps
    return reqs


# ---- tests ---------------------------------------------------------------------------------------------


def test_alpha_rule_matches_reference() -> None:
    from qwenvl_vllm.models.qwen_ntk import ntk_alpha, ntk_table

    for seq_length, lengths in ((SEQ_LENGTH, range(1, 1200)), (2048, range(1, 40000, 7))):
        for n in [*lengths, 2 * seq_length, 4 * seq_length, 4 * seq_length + 1]:
            alpha = ntk_alpha(n, seq_length)
            assert alpha == ref_ntk_alpha(n, seq_length), (n, seq_length)
            assert alpha == 2 ** (ntk_table(n, seq_length) + 1) - 1
    assert [ntk_alpha(n, SEQ_LENGTH) for n in PROMPT_LENS] == [1, 3, 7, 15]  # one per table
    with pytest.raises(ValueError):
        ntk_alpha(0, SEQ_LENGTH)


@pytest.mark.parametrize(
    ("max_model_len", "use_dynamic_ntk", "ntk_on"),
    [(MAX_MODEL_LEN, True, True), (SEQ_LENGTH, True, False), (MAX_MODEL_LEN, False, False)],
)
def test_config_hook(
    vllm_cpu,
    ckpt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_model_len: int,
    use_dynamic_ntk: bool,
    ntk_on: bool,
) -> None:
    """With a context past seq_length: vLLM's per-request position path on, prefix caching off (the same
    tokens hold different keys under different alphas, and block hashes see only tokens)."""
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    model_dir = tmp_path / "ckpt"
    shutil.copytree(ckpt, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | {"use_dynamic_ntk": use_dynamic_ntk}))
    cfg = _vllm_config(vllm_cpu, model_dir, max_model_len, enable_prefix_caching=True)
    assert cfg.model_config.uses_mrope is ntk_on
    assert cfg.cache_config.enable_prefix_caching is not ntk_on


def test_prompt_positions_carry_the_table(model) -> None:
    positions, delta = model.get_mrope_input_positions(list(range(70)), [])
    assert positions.shape == (3, 70) and delta == 2 * MAX_MODEL_LEN  # alpha 7: third table
    torch.testing.assert_close(positions, (torch.arange(70) + delta).repeat(3, 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="max_model_len"):
        model.get_mrope_input_positions(list(range(MAX_MODEL_LEN + 1)), [])


def test_mixed_batch_matches_reference(served: list[Request], reference: QwenVLReference) -> None:
    """Every prompt and decode position of every request, against the reference run per request with the
    release's alpha from its prompt length."""
    for req in served:
        assert len(req.generated) == DECODE_STEPS
        got = torch.cat(req.logits)
        with torch.inference_mode():
            want = reference(torch.tensor(req.fed()), prompt_len=len(req.prompt))
        torch.testing.assert_close(got, want, **TOL, msg=f"prompt of {len(req.prompt)} tokens")


def test_alpha_changes_outputs(served: list[Request], reference: QwenVLReference) -> None:
    """The test can fail: with alpha 1 for all, the reference moves for every prompt past seq_length."""
    with torch.inference_mode():
        for req in served:
            got = torch.cat(req.logits)
            ids = torch.tensor(req.fed())
            plain = reference(ids, prompt_len=1)  # a 1-token prompt: alpha 1
            gap = (got - plain).abs().max().item()
            # far outside the tolerance above when alpha > 1, inside it when alpha is 1 anyway
            moved = gap > 50 * TOL["atol"] if len(req.prompt) > SEQ_LENGTH else gap < TOL["atol"]
            assert moved, (len(req.prompt), gap)


def test_shared_prefix_keys_differ_across_alphas(model, served: list[Request]) -> None:
    """Why prefix caching is off: the same first tokens of a 20- (alpha 1) and a 40-token (alpha 3) prompt
    hold different keys past position 0 (rotation by 0 is the identity)."""
    cache = model.transformer.h[0].attn.attn.cache
    keys_20, keys_40 = (cache[req.rid][0][:SHARED_PREFIX] for req in served[:2])
    torch.testing.assert_close(keys_20[0], keys_40[0], **TOL)
    assert (keys_20[1:] - keys_40[1:]).abs().max() > 1e-2


def test_recomputed_request_keeps_its_prompt_alpha(model) -> None:
    """vLLM's V2 runner re-adds a preempted request with prompt + generated tokens as its prefill; our model
    state asks for positions with the prompt's alpha (here 1: a 30-token prompt that generated 10 more,
    where 40 tokens alone would get alpha 3), equal to the prompt's positions followed by the decode
    continuation the request had before preemption."""
    from types import SimpleNamespace

    from vllm.model_executor.layers.rotary_embedding.mrope import MRotaryEmbedding

    class RopeStateStandIn:  # vLLM's RopeState.init_prefill_positions needs CUDA (UVA buffers)
        def init_prefill_positions(
            self, req_idx: int, source, prefill_token_ids: list[int], mm_features
        ) -> None:
            self.positions, self.delta = source.get_mrope_input_positions(prefill_token_ids, mm_features)

    state = object.__new__(model.get_model_state_cls())
    state.model, state.rope_state = model, RopeStateStandIn()
    prompt, generated = list(range(100, 130)), list(range(200, 210))
    request = SimpleNamespace(prompt_token_ids=prompt, prefill_token_ids=prompt + generated, mm_features=[])
    state.add_request(0, request)

    prompt_positions, delta = model.get_mrope_input_positions(prompt, [])
    decode = np.zeros((3, len(generated)), dtype=np.int64)
    MRotaryEmbedding.get_next_input_positions_tensor(decode, 0, delta, len(prompt), len(generated))
    want = torch.cat([prompt_positions, torch.from_numpy(decode)], dim=1)
    assert state.rope_state.delta == delta == 0
    torch.testing.assert_close(state.rope_state.positions, want, rtol=0, atol=0)
    assert model.get_mrope_input_positions(prompt + generated, [])[1] == MAX_MODEL_LEN  # alpha 3 if recounted

"""Plain-PyTorch reference for Qwen-VL v1 / Qwen-7B, written from the architecture description.

No vLLM imports: it is the yardstick our vLLM model is compared against (CPU tests and the GPU parity
script). Module names equal the checkpoint names, so `load_state_dict(strict=True)` also checks names.
Everything is done with explicit tensor math (no nn.MultiheadAttention, no vLLM helpers).

Architecture (REFERENCE.md, Qwen-VL release):
- ViT: conv1 (patch, no bias) -> + learned positions (stored 16x16 = 256 rows, resized bicubic to the
  patch grid) -> ln_pre -> resblocks [x + attn(ln_1 x); x + mlp(ln_2 x)], attn in_proj laid out per head
  as [q|k|v], mlp c_fc -> exact GELU -> c_proj -> resampler -> ln_post -> @ proj. LayerNorm eps 1e-6.
- Resampler: kv = ln_kv(kv_proj(x)); q = ln_q(query); one multi-head attention with nn.MultiheadAttention's
  parameter layout (in_proj_weight = [Wq; Wk; Wv]); queries get the fixed 2-D sin-cos table, keys get it
  resized (bicubic) to the patch grid, values get nothing. Heads = max(1, output_dim // 128).
- LLM: wte -> blocks [x + attn(rms ln_1 x); x + mlp(rms ln_2 x)] -> rms ln_f -> lm_head. Attention: fused
  c_attn (q, k, v blocks, bias), rotary on halves (rotate_half), causal softmax, c_proj (no bias).
  MLP: c_proj(w1(x) * silu(w2(x))). Past seq_length: queries times log_{seq_length}(p + 1) (logn), and
  for prompts longer than seq_length a rotary base raised by the dynamic-NTK factor of the prompt length.
  Image features overwrite the hidden states strictly between each <img> (image_start_id) and the
  following </img> (image_start_id + 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6


# ----------------------------------------------------------------------------------------------------------
# helpers


def resize_pos_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """[n*n, C] -> [grid*grid, C], bicubic in fp32 (align_corners=False), back to the table's dtype."""
    side = math.isqrt(table.shape[0])
    if side == grid:
        return table
    img = table.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)  # [1, C, n, n]
    img = F.interpolate(img, size=(grid, grid), mode="bicubic", align_corners=False)
    return img.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(table.dtype)


def sincos_2d(dim: int, side: int) -> torch.Tensor:
    """MAE 2-D sin-cos table [side*side, dim]: first half encodes the column (x), second half the row (y).

    Each half is [sin(p * w_k), cos(p * w_k)] with w_k = 10000^(-k / (dim / 4)).
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1).double() * omega  # [side*side, quarter]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_d(cols), one_d(rows)], dim=1).float()


def layer_norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, LN_EPS)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """q [..., Lq, d], k/v [..., Lk, d]; softmax in fp32."""
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        lq, lk = scores.shape[-2:]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)


# ----------------------------------------------------------------------------------------------------------
# vision


class RefVisualAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, W]
        b, s, w = x.shape
        hd = w // self.heads
        qkv = self.in_proj(x).reshape(b, s, self.heads, 3 * hd).transpose(1, 2)  # [B, H, S, 3hd]
        q, k, v = qkv.split(hd, dim=-1)
        out = softmax_attention(q, k, v, causal=False).transpose(1, 2).reshape(b, s, w)
        return self.out_proj(out)


class RefVisualMLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class RefVisualBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = RefVisualAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = RefVisualMLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(layer_norm(x, self.ln_1))
        return x + self.mlp(layer_norm(x, self.ln_2))


class RefVisualStack(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(RefVisualBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class RefMHAParams(nn.Module):
    """Holds nn.MultiheadAttention-named parameters; the math is done by RefResampler."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)


class RefResampler(nn.Module):
    def __init__(self, n_queries: int, dim: int, kv_dim: int) -> None:
        super().__init__()
        self.heads = max(1, dim // 128)
        self.query = nn.Parameter(torch.empty(n_queries, dim))
        self.pos_embed = nn.Parameter(sincos_2d(dim, math.isqrt(n_queries)), requires_grad=False)
        self.kv_proj = nn.Linear(kv_dim, dim, bias=False)
        self.attn = RefMHAParams(dim)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, kv_dim] -> [B, Q, dim]
        b, s, _ = x.shape
        kv = layer_norm(self.kv_proj(x), self.ln_kv)  # [B, S, D]
        q = layer_norm(self.query, self.ln_q)  # [Q, D]
        pos_q = self.pos_embed.to(q.dtype)
        pos_k = resize_pos_table(self.pos_embed, math.isqrt(s)).to(kv.dtype)
        wq, wk, wv = self.attn.in_proj_weight.chunk(3, dim=0)
        bq, bk, bv = self.attn.in_proj_bias.chunk(3, dim=0)
        qp = F.linear(q + pos_q, wq, bq).expand(b, -1, -1)  # [B, Q, D]
        kp = F.linear(kv + pos_k, wk, bk)  # [B, S, D]
        vp = F.linear(kv, wv, bv)
        d = qp.shape[-1]
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, H, L, hd]
            return t.reshape(b, t.shape[1], self.heads, hd).transpose(1, 2)

        out = softmax_attention(split(qp), split(kp), split(vp), causal=False)
        return self.attn.out_proj(out.transpose(1, 2).reshape(b, -1, d))


class RefVisionTransformer(nn.Module):
    def __init__(self, visual: Mapping[str, Any]) -> None:
        super().__init__()
        width, patch = int(visual["width"]), int(visual["patch_size"])
        out_dim = int(visual["output_dim"])
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.positional_embedding = nn.Parameter(torch.empty(256, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = RefVisualStack(
            width, int(visual["layers"]), int(visual["heads"]), visual["mlp_ratio"]
        )
        self.attn_pool = RefResampler(int(visual.get("n_queries", 256)), out_dim, width)
        self.ln_post = nn.LayerNorm(out_dim)
        self.proj = nn.Parameter(torch.empty(out_dim, out_dim))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [B, 3, S, S] -> [B, Q, out_dim]
        x = self.conv1(pixel_values.to(self.proj.dtype))  # [B, W, g, g]
        grid = x.shape[-1]
        x = x.flatten(2).transpose(1, 2)  # [B, g*g, W]
        x = x + resize_pos_table(self.positional_embedding, grid)
        x = self.transformer(layer_norm(x, self.ln_pre))
        x = layer_norm(self.attn_pool(x), self.ln_post)
        return x @ self.proj


# ----------------------------------------------------------------------------------------------------------
# LLM


class RefRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float, rot_dim: int) -> torch.Tensor:
    """x [T, H, d]; rotates the first rot_dim dims of each head by position (halves layout)."""
    inv_freq = 1.0 / base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32, device=x.device) / rot_dim)
    freqs = positions.float()[:, None] * inv_freq  # [T, rot/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]  # [T, 1, rot]
    xr, xp = x[..., :rot_dim].float(), x[..., rot_dim:]
    xr = xr * emb.cos() + rotate_half(xr) * emb.sin()
    return torch.cat([xr.to(x.dtype), xp], dim=-1)


def ntk_alpha(prompt_len: int, seq_length: int) -> float:
    """The release's dynamic NTK factor, fixed per request from its prompt length (1 up to seq_length)."""
    context_value = math.log(prompt_len / seq_length, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


def logn(positions: torch.Tensor, seq_length: int) -> torch.Tensor:
    """The release's logn_list indexed by position: log_{seq_length}(p + 1) past seq_length, else 1."""
    return torch.tensor(
        [math.log(p + 1, seq_length) if p + 1 > seq_length else 1.0 for p in positions.tolist()]
    )


class RefAttention(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.heads = int(cfg["num_attention_heads"])
        self.head_dim = int(cfg.get("kv_channels") or cfg["hidden_size"] // self.heads)
        self.base = float(cfg.get("rotary_emb_base", 10000))
        self.rot_dim = int(self.head_dim * float(cfg.get("rotary_pct", 1.0)))
        self.seq_length = int(cfg.get("seq_length", 2048))
        self.use_ntk = bool(cfg.get("use_dynamic_ntk", False))
        self.use_logn = bool(cfg.get("use_logn_attn", False))
        proj = self.heads * self.head_dim
        self.c_attn = nn.Linear(cfg["hidden_size"], 3 * proj, bias=True)
        self.c_proj = nn.Linear(proj, cfg["hidden_size"], bias=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, prompt_len: int) -> torch.Tensor:
        t = x.shape[0]
        q, k, v = (z.reshape(t, self.heads, self.head_dim) for z in self.c_attn(x).chunk(3, dim=-1))
        alpha = ntk_alpha(prompt_len, self.seq_length) if self.use_ntk else 1.0
        base = self.base * alpha ** (self.rot_dim / (self.rot_dim - 2))
        q = apply_rotary(q, positions, base, self.rot_dim)
        k = apply_rotary(k, positions, base, self.rot_dim)
        if self.use_logn:
            q = q * logn(positions, self.seq_length).to(q)[:, None, None]
        out = softmax_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), causal=True)
        return self.c_proj(out.transpose(0, 1).reshape(t, -1))


class RefMLP(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, inter, bias=False)
        self.w2 = nn.Linear(hidden, inter, bias=False)
        self.c_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class RefBlock(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        eps = float(cfg.get("layer_norm_epsilon", 1e-6))
        self.ln_1 = RefRMSNorm(cfg["hidden_size"], eps)
        self.attn = RefAttention(cfg)
        self.ln_2 = RefRMSNorm(cfg["hidden_size"], eps)
        self.mlp = RefMLP(cfg["hidden_size"], cfg["intermediate_size"] // 2)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, prompt_len: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), positions, prompt_len)
        return x + self.mlp(self.ln_2(x))


class RefTransformer(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.h = nn.ModuleList(RefBlock(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.ln_f = RefRMSNorm(cfg["hidden_size"], float(cfg.get("layer_norm_epsilon", 1e-6)))
        if cfg.get("visual"):
            self.visual = RefVisionTransformer(cfg["visual"])


class QwenVLReference(nn.Module):
    """Qwen-VL / Qwen-7B on explicit math. `config` is the config.json dict."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.transformer = RefTransformer(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)

    def image_spans(self, input_ids: torch.Tensor) -> list[tuple[int, int]]:
        """(first, end) index pairs of the positions strictly between each <img> and its </img>."""
        start = int(self.config["visual"].get("image_start_id", 151857))
        ids = input_ids.tolist()
        spans, i = [], 0
        while i < len(ids):
            if ids[i] == start and start + 1 in ids[i + 1 :]:
                close = ids.index(start + 1, i + 1)
                spans.append((i + 1, close))
                i = close
            i += 1
        return spans

    def hidden_states(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, prompt_len: int | None = None
    ) -> torch.Tensor:  # input_ids [T] -> final normed hidden [T, hidden]
        """prompt_len: where the prompt ends in input_ids (the rest was generated); sets dynamic NTK."""
        x = self.transformer.wte(input_ids)
        if pixel_values is not None and len(pixel_values):
            feats = self.transformer.visual(pixel_values).to(x.dtype)  # [N, Q, hidden]
            spans = self.image_spans(input_ids)
            if len(spans) != feats.shape[0]:
                raise ValueError(f"{len(spans)} <img></img> spans for {feats.shape[0]} images")
            x = x.clone()
            for (a, b), f in zip(spans, feats, strict=True):
                if b - a != f.shape[0]:
                    raise ValueError(f"image span of {b - a} tokens for {f.shape[0]} features")
                x[a:b] = f
        positions = torch.arange(input_ids.shape[0], device=input_ids.device)
        for block in self.transformer.h:
            x = block(x, positions, prompt_len or input_ids.shape[0])
        return self.transformer.ln_f(x)

    def forward(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, prompt_len: int | None = None
    ) -> torch.Tensor:
        """Logits [T, vocab] (fp32) for every position."""
        return self.lm_head(self.hidden_states(input_ids, pixel_values, prompt_len)).float()

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Strict load of checkpoint-named tensors (the resampler's fixed sin-cos table may be absent)."""
        state = dict(state)
        vis = getattr(self.transformer, "visual", None)
        if vis is not None:
            pos_key = "transformer.visual.positional_embedding"
            if pos_key in state and state[pos_key].shape != vis.positional_embedding.shape:
                vis.positional_embedding = nn.Parameter(torch.empty_like(state[pos_key]))
            state.setdefault(
                "transformer.visual.attn_pool.pos_embed", vis.attn_pool.pos_embed.detach().clone()
            )
        self.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------------------
# checkpoints (safetensors dir) and AutoGPTQ dequantisation


def dequantize_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None,
    bits: int = 4,
) -> torch.Tensor:
    """AutoGPTQ (v1 format) -> float weight [out, in].

    qweight int32 [in*bits/32, out] (values along the input dim, lowest bits first), qzeros int32
    [groups, out*bits/32] storing zero - 1, scales [groups, out], g_idx [in] (group of each input row).
    w[r, c] = scales[g(r), c] * (q[r, c] - (z[g(r), c] + 1)).
    """
    per = 32 // bits
    mask = (1 << bits) - 1
    shifts = torch.arange(0, 32, bits, device=qweight.device, dtype=torch.int32)  # [per]
    q = (qweight.unsqueeze(1) >> shifts.view(1, per, 1)) & mask  # [in/per, per, out]
    q = q.reshape(-1, qweight.shape[1])  # [in, out]
    z = (qzeros.unsqueeze(2) >> shifts.view(1, 1, per)) & mask  # [groups, out/per, per]
    z = z.reshape(qzeros.shape[0], -1) + 1  # [groups, out]
    n_in = q.shape[0]
    if g_idx is None:
        group = n_in // scales.shape[0]
        g_idx = torch.arange(n_in, device=q.device) // group
    g = g_idx.long()
    w = scales[g].float() * (q.float() - z[g].float())  # [in, out]
    return w.t().contiguous()


def _dequantize_state(state: dict[str, torch.Tensor], bits: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith((".qzeros", ".scales", ".g_idx")):
            continue
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            out[base + ".weight"] = dequantize_gptq(
                tensor, state[base + ".qzeros"], state[base + ".scales"], state.get(base + ".g_idx"), bits
            )
        else:
            out[name] = tensor
    return out


def read_checkpoint(
    ckpt_dir: str | Path, device: str = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, state dict with checkpoint names); GPTQ linears come back dequantized to `.weight`."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt_dir)
    config = json.loads((ckpt / "config.json").read_text())
    files = sorted(ckpt.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no *.safetensors files in {ckpt}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f), device=device))
    quant = config.get("quantization_config")
    qfile = ckpt / "quantize_config.json"
    if quant is None and qfile.exists():
        quant = json.loads(qfile.read_text())
    if any(k.endswith(".qweight") for k in state):
        state = _dequantize_state(state, int((quant or {}).get("bits", 4)))
    return config, state


def build_reference(
    ckpt_dir: str | Path, dtype: torch.dtype = torch.bfloat16, device: str = "cpu"
) -> QwenVLReference:
    """The reference on `device` in `dtype`, built there directly (a 7B model never sits in fp32 on CPU)."""
    config, state = read_checkpoint(ckpt_dir, device=device)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = QwenVLReference(config)
    finally:
        torch.set_default_dtype(previous)
    model.load_checkpoint_state(state)
    return model.to(device=device, dtype=dtype).eval()

"""float64 references (PyTorch) for the attention kernels, written from the definitions in
DESIGN.md, independent of the kernels' code paths."""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Press et al.'s slopes; for non-powers of two, the odd slopes of the next power of two."""
    n = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    slopes += [2.0 ** (-4.0 * (2 * j + 1) / n) for j in range(num_heads - n)]
    return torch.tensor(slopes, dtype=torch.float64)


def rope(x: torch.Tensor, positions: torch.Tensor, rope_scale: float, rope_theta: float) -> torch.Tensor:
    """LLaMA (rotate-half) RoPE of x [..., n, heads, d] at positions [n]. The angle is formed in
    fp32 (position * frequency), as the kernels and FlashInfer do; the rotation is in fp64."""
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64, device=x.device)
    freq = (1.0 / rope_scale) * rope_theta ** (-2.0 * i / d)
    angle = (positions.to(torch.float32)[:, None] * freq.to(torch.float32)[None, :]).double()
    cos = torch.cat([angle.cos(), angle.cos()], dim=-1)[:, None, :]
    sin = torch.cat([angle.sin(), angle.sin()], dim=-1)[:, None, :]
    rotated = torch.cat([-x[..., d // 2:], x[..., : d // 2]], dim=-1)
    return x * cos + rotated * sin


def decode_reference(q, k, v, kv_layout="NHD", pos_encoding_mode="NONE", window_left=-1,
                     logits_soft_cap=0.0, sm_scale=None, rope_scale=1.0, rope_theta=1e4,
                     q_scale=1.0, k_scale=1.0, v_scale=1.0):
    """Single-request decode. q [H, D]; k, v [N, Hkv, D] (NHD) or [Hkv, N, D] (HND), any dtype.
    Returns (out [H, D], lse [H] base 2) in float64; rows with no visible key give 0 and -inf."""
    q = q.double()
    k, v = k.double(), v.double()
    if kv_layout == "HND":
        k, v = k.transpose(0, 1), v.transpose(0, 1)
    num_heads, d = q.shape
    n, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else sm_scale
    positions = torch.arange(n, device=q.device)
    if pos_encoding_mode == "ROPE_LLAMA":
        q = rope(q[None], torch.tensor([n - 1], device=q.device), rope_scale, rope_theta)[0]
        k = rope(k, positions, rope_scale, rope_theta)
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    logits = torch.einsum("hd,nhd->hn", q, k) * (sm_scale * q_scale * k_scale)
    if pos_encoding_mode == "ALIBI":
        logits = logits + alibi_slopes(num_heads).to(q.device)[:, None] * (positions - (n - 1)).double()[None, :]
    if logits_soft_cap > 0:
        logits = logits_soft_cap * torch.tanh(logits / logits_soft_cap)
    if window_left >= 0:
        logits = logits.masked_fill((positions < n - 1 - window_left)[None, :], float("-inf"))
    lse = torch.logsumexp(logits, dim=1)
    probs = torch.exp(logits - lse[:, None]).nan_to_num(0.0)
    out = torch.einsum("hn,nhd->hd", probs, v) * v_scale
    return out, lse / LN2

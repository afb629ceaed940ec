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


# ---------------------------------------------------------------------------------------------
# Per-token operators (norms, gated activations, RoPE), float64.

def rmsnorm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float, gemma: bool = False) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension; Gemma scales by (1 + weight)."""
    x = x.double()
    w = weight.double() + (1.0 if gemma else 0.0)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def act_and_mul_reference(x: torch.Tensor, activation: str) -> torch.Tensor:
    """act(x[..., :d]) * x[..., d:] for x [..., 2d]; activation "silu", "gelu" (erf) or "gelu_tanh"."""
    x = x.double()
    d = x.shape[-1] // 2
    gate, up = x[..., :d], x[..., d:]
    if activation == "silu":
        act = gate * torch.sigmoid(gate)
    elif activation == "gelu":
        act = 0.5 * gate * (1.0 + torch.erf(gate / math.sqrt(2.0)))
    else:
        act = 0.5 * gate * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (gate + 0.044715 * gate ** 3)))
    return act * up


def rope_frequencies(rotary_dim: int, rope_scale: float = 1.0, rope_theta: float = 1e4,
                     llama31=None, device="cuda") -> torch.Tensor:
    """float32 frequencies of the rotary_dim / 2 pairs: theta^(-2i/rotary_dim) / rope_scale, or with
    llama31 = (low_freq_factor, high_freq_factor, old_context_len) Llama 3.1's blend of the scaled
    and unscaled frequency by wavelength. Computed in float64, rounded once."""
    i = torch.arange(rotary_dim // 2, dtype=torch.float64, device=device)
    f = float(rope_theta) ** (-2.0 * i / rotary_dim)
    smooth = torch.zeros_like(f)  # weight of the unscaled frequency
    if llama31 is not None:
        low, high, old_context_len = (float(v) for v in llama31)
        smooth = ((old_context_len * f / (2 * math.pi) - low) / (high - low)).clamp(0.0, 1.0)
    return ((1.0 - smooth) * f / rope_scale + smooth * f).to(torch.float32)


def rope_reference(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, interleave: bool,
                   freq: torch.Tensor = None, cos_sin_cache: torch.Tensor = None) -> torch.Tensor:
    """RoPE of x [nnz, heads, head_dim] at positions [nnz]: the first rotary_dim dims rotate as
    NeoX halves (i, i + rotary_dim/2) or interleaved pairs (2i, 2i + 1), the rest pass through.
    Angles: position * freq formed in float32 (as the kernels and FlashInfer do), or rows of a
    cos/sin cache [max_position, rotary_dim] (cos | sin). Rotation in float64."""
    x = x.double()
    half = rotary_dim // 2
    if cos_sin_cache is not None:
        rows = cos_sin_cache[positions.long()].double()
        cos, sin = rows[:, :half], rows[:, half:]
    else:
        angle = (positions.to(torch.float32)[:, None] * freq[None, :]).double()
        cos, sin = angle.cos(), angle.sin()
    cos, sin = cos[:, None, :], sin[:, None, :]
    out = x.clone()
    if interleave:
        a, b = x[..., 0:rotary_dim:2], x[..., 1:rotary_dim:2]
        out[..., 0:rotary_dim:2] = a * cos - b * sin
        out[..., 1:rotary_dim:2] = b * cos + a * sin
    else:
        a, b = x[..., :half], x[..., half:rotary_dim]
        out[..., :half] = a * cos - b * sin
        out[..., half:rotary_dim] = b * cos + a * sin
    return out


def positions_from_indptr(indptr, offsets, nnz: int) -> torch.Tensor:
    """Token positions of a ragged batch: request b's tokens indptr[b] .. indptr[b+1]-1 sit at
    offsets[b], offsets[b] + 1, ..."""
    positions = torch.empty(nnz, dtype=torch.int64)
    indptr, offsets = indptr.tolist(), offsets.tolist()
    for b in range(len(offsets)):
        positions[indptr[b]:indptr[b + 1]] = torch.arange(indptr[b + 1] - indptr[b]) + offsets[b]
    return positions

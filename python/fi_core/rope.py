"""Rotary position embedding (FlashInfer's `flashinfer.rope` API).

q: [nnz, num_q_heads, head_dim], k: [nnz, num_k_heads, head_dim] (float16, bfloat16 or float32;
any token and head strides, e.g. views into a packed QKV buffer). The first rotary_dim dims of
every head rotate (default: all), the rest pass through. Pairs are NeoX / LLaMA halves
(i, i + rotary_dim / 2), or GPT-J adjacent dims (2i, 2i + 1) with interleave=True. Pair i at
position m turns by m * rope_theta^(-2i / rotary_dim) / rope_scale (the angle formed in float32),
with Llama 3.1's scaling in the llama31 variants, or by the angle of a cos/sin cache.

Positions come from `pos_ids` [nnz], or from `indptr` [batch_size + 1] and `offsets` [batch_size]:
request b holds tokens indptr[b] .. indptr[b + 1] - 1 at positions offsets[b], offsets[b] + 1, ...
(int32 or int64). Positions are read on the GPU: a token that no request holds, or whose position
lies outside the cos/sin cache, gets NaN in its rotated dims instead of an out-of-bounds read.

The plain variants return new (q_rope, k_rope) in q's framework; the *_inplace variants rotate q and
k in place and return None. Every function also takes `stream=` (default: the framework's current
stream).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import _C
from ._frameworks import framework_of, plain_input, stream_handle
from ._options import integer, optional_flag, scalar

FLOAT_DTYPES = "float16, bfloat16 or float32"
INDEX_DTYPES = "int32 or int64"


def _rope(q, k, inplace, stream, *, pos_ids=None, indptr=None, offsets=None, cos_sin_cache=None,
          head_size=0, rotary_dim=None, interleave=False, rope_scale=1.0, rope_theta=1e4,
          llama31=None):
    framework = framework_of(q, "q")
    q_in = plain_input(q, "q", FLOAT_DTYPES)
    k_in = plain_input(k, "k", FLOAT_DTYPES)
    if rotary_dim is not None and integer(rotary_dim, "rotary_dim") <= 0:
        raise ValueError(
            f"rotary_dim: expected a positive even number (at most head_dim), got {rotary_dim}")
    if inplace:
        q_rope, k_rope, q_out, k_out = q, k, q_in, k_in
    else:
        q_rope = framework.empty(q.shape, None, "q_rope")
        k_rope = framework_of(k, "k").empty(k.shape, None, "k_rope")
        q_out, k_out = q_rope, k_rope
    low, high, old_context_len = llama31 if llama31 is not None else (1.0, 4.0, 8192.0)

    def index(x, name):
        return None if x is None else plain_input(x, name, INDEX_DTYPES)

    _C.apply_rope(
        q_in, k_in, q_out, k_out, index(pos_ids, "pos_ids"), index(indptr, "indptr"),
        index(offsets, "offsets"),
        None if cos_sin_cache is None else plain_input(cos_sin_cache, "cos_sin_cache", "float32"),
        head_size=head_size,
        rotary_dim=0 if rotary_dim is None else rotary_dim,
        interleave=optional_flag(interleave, "interleave"),
        rope_scale=scalar(rope_scale, 1.0, "rope_scale"),
        rope_theta=scalar(rope_theta, 1e4, "rope_theta"),
        llama31=llama31 is not None,
        low_freq_factor=scalar(low, 1.0, "low_freq_factor"),
        high_freq_factor=scalar(high, 4.0, "high_freq_factor"),
        old_context_len=scalar(old_context_len, 8192.0, "old_context_len"),
        stream=stream_handle(stream, framework),
        synchronize=framework.synchronize,
    )
    return None if inplace else (q_rope, k_rope)


def apply_rope(q: Any, k: Any, indptr: Any, offsets: Any, rotary_dim: Optional[int] = None,
               interleave: bool = False, rope_scale: float = 1, rope_theta: float = 1e4, *,
               stream: Any = None) -> Tuple[Any, Any]:
    """RoPE of ragged q, k with positions offsets[b] + i for token i of request b; returns
    (q_rope, k_rope)."""
    return _rope(q, k, False, stream, indptr=indptr, offsets=offsets, rotary_dim=rotary_dim,
                 interleave=interleave, rope_scale=rope_scale, rope_theta=rope_theta)


def apply_rope_inplace(q: Any, k: Any, indptr: Any, offsets: Any, rotary_dim: Optional[int] = None,
                       interleave: bool = False, rope_scale: float = 1, rope_theta: float = 1e4, *,
                       stream: Any = None) -> None:
    """apply_rope, writing q and k in place."""
    _rope(q, k, True, stream, indptr=indptr, offsets=offsets, rotary_dim=rotary_dim,
          interleave=interleave, rope_scale=rope_scale, rope_theta=rope_theta)


def apply_rope_pos_ids(q: Any, k: Any, pos_ids: Any, rotary_dim: Optional[int] = None,
                       interleave: bool = False, rope_scale: float = 1, rope_theta: float = 1e4, *,
                       stream: Any = None) -> Tuple[Any, Any]:
    """RoPE of q, k with token positions pos_ids [nnz]; returns (q_rope, k_rope)."""
    return _rope(q, k, False, stream, pos_ids=pos_ids, rotary_dim=rotary_dim,
                 interleave=interleave, rope_scale=rope_scale, rope_theta=rope_theta)


def apply_rope_pos_ids_inplace(q: Any, k: Any, pos_ids: Any, rotary_dim: Optional[int] = None,
                               interleave: bool = False, rope_scale: float = 1,
                               rope_theta: float = 1e4, *, stream: Any = None) -> None:
    """apply_rope_pos_ids, writing q and k in place."""
    _rope(q, k, True, stream, pos_ids=pos_ids, rotary_dim=rotary_dim, interleave=interleave,
          rope_scale=rope_scale, rope_theta=rope_theta)


def apply_llama31_rope(q: Any, k: Any, indptr: Any, offsets: Any, rotary_dim: Optional[int] = None,
                       interleave: bool = False, rope_scale: float = 8, rope_theta: float = 5e5,
                       low_freq_factor: float = 1, high_freq_factor: float = 4,
                       old_context_len: int = 8192, *, stream: Any = None) -> Tuple[Any, Any]:
    """apply_rope with Llama 3.1 frequencies: wavelengths below old_context_len /
    high_freq_factor keep their frequency, those above old_context_len / low_freq_factor are
    divided by rope_scale, and those between blend the two."""
    return _rope(q, k, False, stream, indptr=indptr, offsets=offsets, rotary_dim=rotary_dim,
                 interleave=interleave, rope_scale=rope_scale, rope_theta=rope_theta,
                 llama31=(low_freq_factor, high_freq_factor, old_context_len))


def apply_llama31_rope_inplace(q: Any, k: Any, indptr: Any, offsets: Any,
                               rotary_dim: Optional[int] = None, interleave: bool = False,
                               rope_scale: float = 8, rope_theta: float = 5e5,
                               low_freq_factor: float = 1, high_freq_factor: float = 4,
                               old_context_len: int = 8192, *, stream: Any = None) -> None:
    """apply_llama31_rope, writing q and k in place."""
    _rope(q, k, True, stream, indptr=indptr, offsets=offsets, rotary_dim=rotary_dim,
          interleave=interleave, rope_scale=rope_scale, rope_theta=rope_theta,
          llama31=(low_freq_factor, high_freq_factor, old_context_len))


def apply_llama31_rope_pos_ids(q: Any, k: Any, pos_ids: Any, rotary_dim: Optional[int] = None,
                               interleave: bool = False, rope_scale: float = 8,
                               rope_theta: float = 5e5, low_freq_factor: float = 1,
                               high_freq_factor: float = 4, old_context_len: int = 8192, *,
                               stream: Any = None) -> Tuple[Any, Any]:
    """apply_rope_pos_ids with Llama 3.1 frequencies (see apply_llama31_rope)."""
    return _rope(q, k, False, stream, pos_ids=pos_ids, rotary_dim=rotary_dim,
                 interleave=interleave, rope_scale=rope_scale, rope_theta=rope_theta,
                 llama31=(low_freq_factor, high_freq_factor, old_context_len))


def apply_llama31_rope_pos_ids_inplace(q: Any, k: Any, pos_ids: Any,
                                       rotary_dim: Optional[int] = None, interleave: bool = False,
                                       rope_scale: float = 8, rope_theta: float = 5e5,
                                       low_freq_factor: float = 1, high_freq_factor: float = 4,
                                       old_context_len: int = 8192, *, stream: Any = None) -> None:
    """apply_llama31_rope_pos_ids, writing q and k in place."""
    _rope(q, k, True, stream, pos_ids=pos_ids, rotary_dim=rotary_dim, interleave=interleave,
          rope_scale=rope_scale, rope_theta=rope_theta,
          llama31=(low_freq_factor, high_freq_factor, old_context_len))


# The cos/sin cache API names its arguments as vLLM does; errors name them that way too.
_CACHE_API_NAMES = {"q": "query", "k": "key", "pos_ids": "positions", "q_rope": "query_out",
                    "k_rope": "key_out"}


def _cos_sin_cache_rope(positions, query, key, head_size, cos_sin_cache, is_neox, inplace, stream):
    if integer(head_size, "head_size") <= 0:
        raise ValueError(f"head_size: expected a positive number, got {head_size}")
    try:
        return _rope(query, key, inplace, stream, pos_ids=positions, cos_sin_cache=cos_sin_cache,
                     head_size=head_size, interleave=not optional_flag(is_neox, "is_neox"))
    except (TypeError, ValueError) as e:
        name, sep, rest = str(e).partition(": ")
        if sep and name in _CACHE_API_NAMES:
            raise type(e)(f"{_CACHE_API_NAMES[name]}: {rest}") from None
        raise


def apply_rope_with_cos_sin_cache(positions: Any, query: Any, key: Any, head_size: int,
                                  cos_sin_cache: Any, is_neox: bool = True, *,
                                  stream: Any = None) -> Tuple[Any, Any]:
    """RoPE with precomputed angles, as in vLLM / SGLang: query [nnz, num_q_heads * head_size]
    and key [nnz, num_k_heads * head_size] (or 3-D [nnz, heads, head_size]); cos_sin_cache
    float32 [max_position, rotary_dim], cos of the rotary_dim / 2 pairs then their sin;
    positions [nnz] int32/int64. is_neox=False selects interleaved (GPT-J) pairs. Returns
    (query_out, key_out)."""
    return _cos_sin_cache_rope(positions, query, key, head_size, cos_sin_cache, is_neox, False, stream)


def apply_rope_with_cos_sin_cache_inplace(positions: Any, query: Any, key: Any, head_size: int,
                                          cos_sin_cache: Any, is_neox: bool = True, *,
                                          stream: Any = None) -> None:
    """apply_rope_with_cos_sin_cache, writing query and key in place."""
    _cos_sin_cache_rope(positions, query, key, head_size, cos_sin_cache, is_neox, True, stream)

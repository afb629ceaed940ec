"""Merging attention states (FlashInfer's `flashinfer.cascade` operators).

An attention state is a partial output v, normalized over its own keys, with s, the base-2
log-sum-exp of their logits (float32; what fi_core's attention returns as lse). Merging the states
of disjoint key sets gives the state of their union: s = log2(sum_i 2^s_i) and
v = sum_i 2^(s_i - s) v_i, computed relative to the largest s_i in float32. A state with s = -inf
(no visible key) adds nothing; if every state has s = -inf, v = 0 and s = -inf. v is float16,
bfloat16 or float32 with a contiguous head_dim; other dimensions may have any strides.
"""

from __future__ import annotations

from typing import Any, Tuple

from . import _C
from ._frameworks import framework_of, plain_input, stream_handle

V_DTYPES = "float16, bfloat16 or float32"
S_DTYPE = "float32"
MASK_DTYPES = "bool or uint8"


def merge_state(v_a: Any, s_a: Any, v_b: Any, s_b: Any, *, out: Any = None, lse: Any = None,
                stream: Any = None) -> Tuple[Any, Any]:
    """Merges two states row by row. v_a, v_b: [seq_len, num_heads, head_dim]; s_a, s_b: float32
    [seq_len, num_heads]. Returns (v_merged, s_merged) in v_a's dtype and framework (or `out=`,
    `lse=`, which may be v_a and s_a themselves)."""
    framework = framework_of(v_a, "v_a")
    inputs = (plain_input(v_a, "v_a", V_DTYPES), plain_input(s_a, "s_a", S_DTYPE),
              plain_input(v_b, "v_b", V_DTYPES), plain_input(s_b, "s_b", S_DTYPE))
    if out is None:
        out = framework.empty(v_a.shape, None, "out")
    if lse is None:
        lse = framework.empty(s_a.shape, S_DTYPE, "lse")
    _C.merge_state(*inputs, plain_input(out, "out", V_DTYPES), plain_input(lse, "lse", S_DTYPE),
                   stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out, lse


def merge_state_in_place(v: Any, s: Any, v_other: Any, s_other: Any, mask: Any = None, *,
                         stream: Any = None) -> None:
    """Merges (v_other, s_other) into (v, s) in place. v, v_other: [seq_len, num_heads,
    head_dim]; s, s_other: float32 [seq_len, num_heads]. mask: optional bool or uint8 [seq_len];
    rows whose entry is False keep their v and s (a fixed-shape call for CUDA graphs)."""
    framework = framework_of(v, "v")
    _C.merge_state_in_place(plain_input(v, "v", V_DTYPES), plain_input(s, "s", S_DTYPE),
                            plain_input(v_other, "v_other", V_DTYPES), plain_input(s_other, "s_other", S_DTYPE),
                            None if mask is None else plain_input(mask, "mask", MASK_DTYPES),
                            stream=stream_handle(stream, framework), synchronize=framework.synchronize)


def merge_states(v: Any, s: Any, *, out: Any = None, lse: Any = None, stream: Any = None) -> Tuple[Any, Any]:
    """Merges all states of each row. v: [seq_len, num_states, num_heads, head_dim] with head_dim
    8 x a power of two up to 1024 and 16-byte aligned rows; s: float32 [seq_len, num_states,
    num_heads]. Returns (v_merged [seq_len, num_heads, head_dim] in v's dtype, s_merged float32
    [seq_len, num_heads]) in v's framework (or `out=`, `lse=`). The kernel is the one that merges
    the split-KV partial results of fi_core's decode."""
    framework = framework_of(v, "v")
    shape = tuple(v.shape)
    merged = (shape[0], shape[2], shape[3]) if len(shape) == 4 else shape  # else rejected below
    if out is None:
        out = framework.empty(merged, None, "out")
    if lse is None:
        lse = framework.empty(merged[:2], S_DTYPE, "lse")
    _C.merge_states(plain_input(v, "v", V_DTYPES), plain_input(s, "s", S_DTYPE),
                    plain_input(out, "out", V_DTYPES), plain_input(lse, "lse", S_DTYPE),
                    stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out, lse

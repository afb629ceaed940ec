"""Prefill / append attention (FlashInfer's `flashinfer.prefill` API)."""

from __future__ import annotations

import functools
from typing import Any, Optional, Tuple, Union

from . import _C
from ._frameworks import attention_inputs, attention_outputs, stream_handle
from ._options import integer, kv_layout_code, optional_flag, pos_encoding_code, scalar


def single_prefill_with_kv_cache(
    q: Any,
    k: Any,
    v: Any,
    custom_mask: Any = None,
    packed_custom_mask: Any = None,
    causal: bool = False,
    kv_layout: str = "NHD",
    pos_encoding_mode: str = "NONE",
    use_fp16_qk_reduction: bool = False,
    sm_scale: Optional[float] = None,
    window_left: int = -1,
    logits_soft_cap: Optional[float] = None,
    rope_scale: Optional[float] = None,
    rope_theta: Optional[float] = None,
    return_lse: bool = False,
    out: Any = None,
    lse: Any = None,
    stream: Any = None,
) -> Union[Any, Tuple[Any, Any]]:
    """Attention of a request's qo_len query tokens over its kv_len >= qo_len keys (prefill, or
    append when qo_len < kv_len: query row i sits at position i + kv_len - qo_len).

    q: [qo_len, num_qo_heads, head_dim] fp16/bf16. k, v: [kv_len, num_kv_heads, head_dim] ("NHD")
    or [num_kv_heads, kv_len, head_dim] ("HND"), q's dtype. num_qo_heads must be a multiple of
    num_kv_heads (GQA).

    causal: row i sees keys j <= i + kv_len - qo_len (bottom-right aligned). window_left >= 0
    also hides keys before position - window_left. pos_encoding_mode: "NONE" or "ALIBI".
    logits_soft_cap > 0 applies cap * tanh(logits / cap). sm_scale defaults to 1/sqrt(head_dim).
    use_fp16_qk_reduction is accepted for compatibility; q.k always accumulates in float32.
    Not supported yet (ValueError): custom masks, "ROPE_LLAMA" (RoPE on the fly), fp8 KV.

    Returns out [qo_len, num_qo_heads, head_dim] in q's dtype and framework, and with return_lse
    (or an `lse=` buffer) the float32 base-2 log-sum-exp [qo_len, num_qo_heads]. `out=`/`lse=`
    are written in place. Runs on `stream` or the framework's current stream.
    """
    if custom_mask is not None or packed_custom_mask is not None:
        arg = "custom_mask" if custom_mask is not None else "packed_custom_mask"
        raise ValueError(f"{arg}: custom masks are not supported yet by fi_core prefill; expected None")
    causal = optional_flag(causal, "causal")
    optional_flag(use_fp16_qk_reduction, "use_fp16_qk_reduction")
    layout = kv_layout_code(kv_layout)
    mode = pos_encoding_code(pos_encoding_mode)
    window_left = integer(window_left, "window_left")
    framework, q_in, k_in, v_in, k_fp8 = attention_inputs(q, k, v)
    out, lse, return_lse = attention_outputs(framework, q, out, lse, return_lse)

    _C.single_prefill(
        q_in, k_in, v_in, out, lse,
        kv_fp8_dtype=k_fp8,
        causal=causal,
        kv_layout=layout,
        pos_encoding_mode=mode,
        window_left=window_left,
        logits_soft_cap=scalar(logits_soft_cap, 0.0, "logits_soft_cap"),
        sm_scale=scalar(sm_scale, 0.0, "sm_scale"),
        rope_scale=scalar(rope_scale, 1.0, "rope_scale"),
        rope_theta=scalar(rope_theta, 1e4, "rope_theta"),
        stream=stream_handle(stream, framework),
        synchronize=framework.synchronize,
    )
    return (out, lse) if return_lse else out


# FlashInfer defines it the same way, so positional and keyword calls behave alike.
single_prefill_with_kv_cache_return_lse = functools.partial(single_prefill_with_kv_cache, return_lse=True)

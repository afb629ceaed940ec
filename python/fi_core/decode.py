"""Decode attention (FlashInfer's `flashinfer.decode` API)."""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from . import _C
from ._frameworks import framework_of, kernel_input, stream_handle
from ._options import integer, kv_layout_code, optional_flag, pos_encoding_code, scalar


def single_decode_with_kv_cache(
    q: Any,
    k: Any,
    v: Any,
    kv_layout: str = "NHD",
    pos_encoding_mode: str = "NONE",
    use_tensor_cores: bool = False,
    q_scale: Optional[float] = None,
    k_scale: Optional[float] = None,
    v_scale: Optional[float] = None,
    window_left: int = -1,
    logits_soft_cap: Optional[float] = None,
    sm_scale: Optional[float] = None,
    rope_scale: Optional[float] = None,
    rope_theta: Optional[float] = None,
    return_lse: bool = False,
    out: Any = None,
    lse: Any = None,
    stream: Any = None,
) -> Union[Any, Tuple[Any, Any]]:
    """Attention of one query token per head over a request's whole KV cache.

    q: [num_qo_heads, head_dim] fp16/bf16. k, v: [kv_len, num_kv_heads, head_dim] ("NHD") or
    [num_kv_heads, kv_len, head_dim] ("HND"), fp16/bf16/fp8 (e4m3, e5m2; scaled by k_scale and
    v_scale). num_qo_heads must be a multiple of num_kv_heads (GQA).

    pos_encoding_mode: "NONE", "ROPE_LLAMA" (rotary embedding applied to q at position kv_len-1
    and to each key at its index, with rope_scale/rope_theta) or "ALIBI". window_left >= 0 keeps
    the last window_left + 1 keys. logits_soft_cap > 0 applies cap * tanh(logits / cap).
    sm_scale defaults to 1/sqrt(head_dim); q_scale and k_scale multiply it.

    Returns out [num_qo_heads, head_dim] in q's dtype and framework, and with return_lse (or an
    `lse=` buffer) the float32 base-2 log-sum-exp [num_qo_heads]. `out=`/`lse=` are written in
    place. Runs on `stream` or the framework's current stream. use_tensor_cores is accepted for
    FlashInfer compatibility: single decode always uses the CUDA-core kernel, which streams the
    KV cache at memory bandwidth for every group size.
    """
    layout = kv_layout_code(kv_layout)
    mode = pos_encoding_code(pos_encoding_mode)
    optional_flag(use_tensor_cores, "use_tensor_cores")
    window_left = integer(window_left, "window_left")
    framework = framework_of(q, "q")
    q_in, q_fp8 = framework.kernel_input(q)
    if q_fp8:
        raise TypeError(f"q: expected dtype float16 or bfloat16, got {q_fp8}")
    k_in, k_fp8 = kernel_input(k, "k")
    v_in, v_fp8 = kernel_input(v, "v")
    if k_fp8 != v_fp8:
        raise TypeError(f"v: expected the dtype of k ({k_fp8 or 'not fp8'}), got {v_fp8 or 'not fp8'}")
    return_lse = optional_flag(return_lse, "return_lse") or lse is not None

    if out is None:
        out = framework.empty(q.shape, None, "out")
    else:
        framework_of(out, "out")
    if return_lse and lse is None:
        lse = framework.empty((q.shape[0],), "float32", "lse")
    elif lse is not None:
        framework_of(lse, "lse")

    options = dict(
        kv_fp8_dtype=k_fp8,
        kv_layout=layout,
        pos_encoding_mode=mode,
        window_left=window_left,
        logits_soft_cap=scalar(logits_soft_cap, 0.0, "logits_soft_cap"),
        sm_scale=scalar(sm_scale, 0.0, "sm_scale"),
        rope_scale=scalar(rope_scale, 1.0, "rope_scale"),
        rope_theta=scalar(rope_theta, 1e4, "rope_theta"),
        q_scale=scalar(q_scale, 1.0, "q_scale"),
        k_scale=scalar(k_scale, 1.0, "k_scale"),
        v_scale=scalar(v_scale, 1.0, "v_scale"),
    )
    _, _, workspace_bytes = _C.plan_single_decode(q_in, k_in, v_in, out, lse, None, **options)
    workspace = framework.empty((workspace_bytes,), "uint8", "workspace") if workspace_bytes else None
    _C.single_decode(q_in, k_in, v_in, out, lse, workspace, **options,
                     stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return (out, lse) if return_lse else out

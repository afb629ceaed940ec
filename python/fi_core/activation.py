"""Gated activations (FlashInfer's `flashinfer.activation` API): input [..., 2 * d] -> output
[..., d], ``act(input[..., :d]) * input[..., d:]`` computed in float32."""

from __future__ import annotations

from typing import Any, Optional

from . import _C
from ._frameworks import framework_of, plain_input, stream_handle
from ._options import optional_flag

FLOAT_DTYPES = "float16, bfloat16 or float32"
ACTIVATIONS = {"silu": 0, "gelu": 1, "gelu_tanh": 2}


def _act_and_mul(input, out, enable_pdl, stream, activation):
    optional_flag(enable_pdl, "enable_pdl")
    framework = framework_of(input, "input")
    input_in = plain_input(input, "input", FLOAT_DTYPES)
    shape = tuple(input.shape)
    if not shape:
        raise ValueError("input: expected at least 1 dimension [..., 2 * d], got 0")
    if out is None:
        out = framework.empty(shape[:-1] + (shape[-1] // 2,), None, "out")
    _C.act_and_mul(input_in, plain_input(out, "out", FLOAT_DTYPES), activation=ACTIVATIONS[activation],
                   stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out


def silu_and_mul(input: Any, out: Any = None, enable_pdl: Optional[bool] = None, *,
                 stream: Any = None) -> Any:
    """``silu(input[..., :d]) * input[..., d:]`` with silu(x) = x / (1 + exp(-x)).

    input: [..., 2 * d] float16/bfloat16/float32, any even last dimension, leading dimensions with
    any strides (that merge into at most two levels). Returns `out` [..., d] (allocated in input's
    framework unless given). Runs on `stream` or the framework's current stream. enable_pdl is
    accepted for FlashInfer compatibility and ignored.
    """
    return _act_and_mul(input, out, enable_pdl, stream, "silu")


def gelu_tanh_and_mul(input: Any, out: Any = None, enable_pdl: Optional[bool] = None, *,
                      stream: Any = None) -> Any:
    """``gelu_tanh(input[..., :d]) * input[..., d:]``, GELU's tanh approximation
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))); otherwise as silu_and_mul."""
    return _act_and_mul(input, out, enable_pdl, stream, "gelu_tanh")


def gelu_and_mul(input: Any, out: Any = None, enable_pdl: Optional[bool] = None, *,
                 stream: Any = None) -> Any:
    """``gelu(input[..., :d]) * input[..., d:]``, exact GELU 0.5 x (1 + erf(x / sqrt(2)));
    otherwise as silu_and_mul."""
    return _act_and_mul(input, out, enable_pdl, stream, "gelu")

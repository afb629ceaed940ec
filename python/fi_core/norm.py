"""RMSNorm, plain and fused with the residual add (FlashInfer's `flashinfer.norm` API)."""

from __future__ import annotations

from typing import Any, Optional

from . import _C
from ._frameworks import framework_of, plain_input, stream_handle
from ._options import optional_flag, scalar

FLOAT_DTYPES = "float16, bfloat16 or float32"


def _rmsnorm(input, weight, eps, out, enable_pdl, stream, gemma):
    optional_flag(enable_pdl, "enable_pdl")
    framework = framework_of(input, "input")
    input_in = plain_input(input, "input", FLOAT_DTYPES)
    weight_in = plain_input(weight, "weight", FLOAT_DTYPES)
    if out is None:
        out = framework.empty(input.shape, None, "out")
    _C.rmsnorm(input_in, weight_in, plain_input(out, "out", FLOAT_DTYPES),
               eps=scalar(eps, 1e-6, "eps"), gemma=gemma, stream=stream_handle(stream, framework),
               synchronize=framework.synchronize)
    return out


def _fused_add_rmsnorm(input, residual, weight, eps, enable_pdl, stream, gemma):
    optional_flag(enable_pdl, "enable_pdl")
    framework = framework_of(input, "input")
    _C.fused_add_rmsnorm(plain_input(input, "input", FLOAT_DTYPES),
                         plain_input(residual, "residual", FLOAT_DTYPES),
                         plain_input(weight, "weight", FLOAT_DTYPES),
                         eps=scalar(eps, 1e-6, "eps"), gemma=gemma,
                         stream=stream_handle(stream, framework), synchronize=framework.synchronize)


def rmsnorm(input: Any, weight: Any, eps: float = 1e-6, out: Any = None,
            enable_pdl: Optional[bool] = None, *, stream: Any = None) -> Any:
    """Root mean square normalization: ``out = input / sqrt(mean(input**2) + eps) * weight``.

    input: [batch_size, hidden_size] or [batch_size, num_heads, hidden_size] (e.g. per-head
    q/k norm on a view into a packed QKV buffer), float16/bfloat16/float32; any hidden size and
    any leading strides. weight: [hidden_size], input's dtype. Computed in float32. Returns `out`
    (allocated in input's framework unless given; may be `input` itself). Runs on `stream` or the
    framework's current stream. enable_pdl is accepted for FlashInfer compatibility; fi_core
    launches without programmatic dependent launch.
    """
    return _rmsnorm(input, weight, eps, out, enable_pdl, stream, gemma=False)


def fused_add_rmsnorm(input: Any, residual: Any, weight: Any, eps: float = 1e-6,
                      enable_pdl: Optional[bool] = None, *, stream: Any = None) -> None:
    """Fused residual add and RMSNorm, in place: ``residual += input``, then
    ``input = residual / sqrt(mean(residual**2) + eps) * weight`` (the norm of the float32 sum).

    input, residual: [batch_size, hidden_size] (or 3-D as for rmsnorm), same dtype; weight:
    [hidden_size].
    """
    _fused_add_rmsnorm(input, residual, weight, eps, enable_pdl, stream, gemma=False)


def gemma_rmsnorm(input: Any, weight: Any, eps: float = 1e-6, out: Any = None,
                  enable_pdl: Optional[bool] = None, *, stream: Any = None) -> Any:
    """Gemma-style RMSNorm: ``out = input / sqrt(mean(input**2) + eps) * (1 + weight)``; otherwise
    as rmsnorm."""
    return _rmsnorm(input, weight, eps, out, enable_pdl, stream, gemma=True)


def gemma_fused_add_rmsnorm(input: Any, residual: Any, weight: Any, eps: float = 1e-6,
                            enable_pdl: Optional[bool] = None, *, stream: Any = None) -> None:
    """Gemma-style fused residual add and RMSNorm, in place: ``residual += input``, then
    ``input = residual / sqrt(mean(residual**2) + eps) * (1 + weight)``."""
    _fused_add_rmsnorm(input, residual, weight, eps, enable_pdl, stream, gemma=True)

"""Bit packing (FlashInfer's `flashinfer.quantization` API): `packbits` and `segment_packbits`,
with the semantics of numpy.packbits. Custom attention masks are passed to the prefill kernels
bit-packed in little bit order: ``packbits(mask.view(-1), bitorder="little")``, or per request
with ``segment_packbits(mask_flat, mask_indptr, bitorder="little")``.

As in FlashInfer the default bit order is "big" (numpy's default): the first of eight elements
lands in the most significant bit. x is a contiguous 1-D CUDA array of bool, int8, uint8, int16,
int32 or int64; any nonzero element packs as a 1.
"""

from __future__ import annotations

from typing import Any, Tuple

from . import _C
from ._frameworks import cuda_device_of, framework_of, host_int32, plain_input, stream_handle
from ._options import _choice

BIT_ORDERS = {"big": 0, "little": 1}
X_DTYPES = "bool, int8, uint8, int16, int32 or int64"


def _bitorder_code(bitorder: Any) -> int:
    return _choice(bitorder, BIT_ORDERS, "bitorder")


def _length(x: Any) -> int:
    """len(x) for sizing the output when x is 1-D; 0 otherwise (the host API then reports the shape)."""
    shape = tuple(x.shape)
    return int(shape[0]) if len(shape) == 1 else 0


def packbits(x: Any, bitorder: str = "big", *, out: Any = None, stream: Any = None) -> Any:
    """Packs the elements of a binary-valued 1-D array into the bits of a uint8 array, as
    numpy.packbits does: byte i holds x[8 i], ..., x[8 i + 7], the last byte padded with zeros.

    bitorder: "big" (default, as in FlashInfer) puts the first element of each byte in its most
    significant bit, "little" in its least significant bit (the custom-mask format).
    Returns uint8 [(len(x) + 7) // 8] in x's framework (or fills `out=`). Runs on `stream` or the
    framework's current stream.
    """
    order = _bitorder_code(bitorder)
    framework = framework_of(x, "x")
    x_in = plain_input(x, "x", X_DTYPES)
    if out is None:
        out = framework.empty(((_length(x) + 7) // 8,), "uint8", "out")
    _C.packbits(x_in, plain_input(out, "out", "uint8"), bitorder=order, stream=stream_handle(stream, framework),
                synchronize=framework.synchronize)
    return out


def _new_indptr_like(indptr: Any, new_indptr, device_copy: Any) -> Any:
    """The packed offsets where indptr was: on the GPU (device_copy, in x's framework) for a CUDA
    indptr, a torch CPU tensor for a torch CPU tensor, else a numpy array."""
    try:
        cuda_device_of(indptr, "indptr")
        return device_copy
    except TypeError:
        pass
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(indptr, torch.Tensor):
        return torch.from_numpy(new_indptr)
    return new_indptr


def segment_packbits(x: Any, indptr: Any, bitorder: str = "big", *, out: Any = None,
                     stream: Any = None) -> Tuple[Any, Any]:
    """Packs each segment x[indptr[i]:indptr[i + 1]] of a binary-valued 1-D array on its own, as
    numpy.packbits does (each segment padded to whole bytes).

    indptr: [batch_size + 1] integers, non-decreasing, indptr[0] >= 0 and indptr[-1] <= len(x)
    (< 2^31); a host array (numpy, list, torch CPU tensor) or a CUDA array. The packed offsets size
    the output, so they are computed on the host: a CUDA indptr is copied to the host first, which
    waits for the work that produces it (FlashInfer does the same), so the call cannot be captured
    in a CUDA graph.

    Returns (packed, new_indptr): packed is uint8 [new_indptr[-1]] in x's framework (or `out=`),
    segment i in packed[new_indptr[i]:new_indptr[i + 1]], and new_indptr is int32
    [batch_size + 1] with new_indptr[i + 1] - new_indptr[i] = (indptr[i + 1] - indptr[i] + 7) // 8,
    on the GPU (x's framework) when indptr is a CUDA array, else on the host (a torch CPU tensor
    for a torch tensor, numpy otherwise).
    """
    import numpy as np

    order = _bitorder_code(bitorder)
    framework = framework_of(x, "x")
    x_in = plain_input(x, "x", X_DTYPES)
    host_indptr = host_int32(indptr, "indptr")
    if len(indptr.shape if hasattr(indptr, "shape") else np.shape(indptr)) == 0:
        raise ValueError(f"indptr: expected 1 dimension [batch_size + 1], got a scalar ({indptr!r})")
    new_indptr = np.zeros(host_indptr.shape[:1], np.int32)
    _C.plan_segment_packbits(x_in, host_indptr, new_indptr)  # checks x and indptr, fills new_indptr
    try:
        segments = framework.empty((2, len(new_indptr)), "int32", "segments")
    except TypeError:
        raise TypeError("x: segment_packbits allocates its device offsets through x's framework: expected a "
                        f"torch, CuPy or JAX array, got {type(x).__module__}.{type(x).__qualname__}") from None
    if out is None:
        out = framework.empty((int(new_indptr[-1]),), "uint8", "out")
    _C.segment_packbits(x_in, host_indptr, plain_input(segments, "segments", "int32"),
                        plain_input(out, "out", "uint8"), bitorder=order,
                        stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out, _new_indptr_like(indptr, new_indptr, segments[1])

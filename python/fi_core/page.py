"""Paged KV-cache management (FlashInfer's `flashinfer.page` API).

Page table (CSR, as in FlashInfer): request b owns pages
``kv_indices[kv_indptr[b]:kv_indptr[b + 1]]`` in order, so its token at position p lives in page
``kv_indices[kv_indptr[b] + p // page_size]``, slot ``p % page_size``; ``kv_last_page_len[b]``
(1..page_size) counts the tokens of its last page. Index arrays are 1-D int32 or int64 CUDA arrays.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import _C
from ._frameworks import framework_of, kernel_input, plain_input, stream_handle
from ._options import integer, kv_layout_code

INDEX_DTYPES = "int32 or int64"


def _dtype_name(x: Any) -> str:
    return str(x.dtype).replace("torch.", "")


def _same_dtype_pair(a: Any, a_name: str, b: Any, b_name: str) -> Tuple[Any, Any, Optional[str]]:
    """kernel_input of two arrays that share a dtype, and their fp8 format. fp8 reaches the
    kernels as uint8, so two different fp8 formats (or fp8 and uint8) are told apart here."""
    a_in, a_fp8 = kernel_input(a, a_name)
    b_in, b_fp8 = kernel_input(b, b_name)
    if a_fp8 != b_fp8:
        raise TypeError(f"{b_name}: expected dtype {_dtype_name(a)}, got {_dtype_name(b)}")
    return a_in, b_in, a_fp8


def append_paged_kv_cache(append_key: Any, append_value: Any, batch_indices: Any, positions: Any,
                          paged_kv_cache: Any, kv_indices: Any, kv_indptr: Any, kv_last_page_len: Any,
                          kv_layout: str = "NHD", *, stream: Any = None) -> None:
    """Writes new tokens' keys and values into their slots of a paged KV cache, in place.

    append_key, append_value: [nnz, num_kv_heads, head_dim], float16, bfloat16 or fp8 (e4m3fn,
    e5m2); copied unchanged, so the cache has the same dtype. Token i goes to request
    batch_indices[i] at position positions[i] of its sequence (see get_batch_indices_positions).

    paged_kv_cache: one array [num_pages, 2, page_size, num_kv_heads, head_dim] ("NHD") or
    [num_pages, 2, num_kv_heads, page_size, head_dim] ("HND") with keys at [:, 0] and values at
    [:, 1]; or a (k_cache, v_cache) pair of [num_pages, page_size, num_kv_heads, head_dim] ("NHD")
    or [num_pages, num_kv_heads, page_size, head_dim] ("HND") arrays. Pages, slots and heads may
    have any strides (a view into a larger pool; k and v with different strides); head_dim must be
    contiguous. The page table must already hold the appended tokens' pages (FlashInfer's
    convention); kv_last_page_len is checked for shape only, as a token's slot follows from its
    position.

    The indices are read on the GPU only: a token whose batch index, position (negative, or past
    its request's pages) or page (outside the cache) is out of range is skipped, so no index can
    make the call write outside the cache. Of two tokens bound for one slot, either may win.
    Runs on `stream` or the framework's current stream.
    """
    layout = kv_layout_code(kv_layout)
    framework = framework_of(append_key, "append_key")
    key_in, value_in, append_fp8 = _same_dtype_pair(append_key, "append_key", append_value, "append_value")
    kv_in = k_in = v_in = None
    if isinstance(paged_kv_cache, (tuple, list)):
        if len(paged_kv_cache) != 2:
            raise ValueError("paged_kv_cache: expected one array or a (k_cache, v_cache) pair, got a "
                             f"{type(paged_kv_cache).__name__} of {len(paged_kv_cache)}")
        k_in, v_in, cache_fp8 = _same_dtype_pair(paged_kv_cache[0], "k_cache", paged_kv_cache[1], "v_cache")
    else:
        kv_in, cache_fp8 = kernel_input(paged_kv_cache, "paged_kv_cache")
    _C.append_paged_kv_cache(
        key_in, value_in, plain_input(batch_indices, "batch_indices", INDEX_DTYPES),
        plain_input(positions, "positions", INDEX_DTYPES), kv_in, k_in, v_in,
        plain_input(kv_indices, "kv_indices", INDEX_DTYPES), plain_input(kv_indptr, "kv_indptr", INDEX_DTYPES),
        plain_input(kv_last_page_len, "kv_last_page_len", INDEX_DTYPES), kv_layout=layout,
        append_fp8_dtype=append_fp8, cache_fp8_dtype=cache_fp8, stream=stream_handle(stream, framework),
        synchronize=framework.synchronize)


def get_batch_indices_positions(append_indptr: Any, seq_lens: Any, nnz: int, *, batch_indices: Any = None,
                                positions: Any = None, stream: Any = None) -> Tuple[Any, Any]:
    """Request and position of every token of a ragged batch of appended tokens.

    Request b appends tokens append_indptr[b] .. append_indptr[b + 1] - 1 ([batch_size + 1],
    non-decreasing) as the last of its seq_lens[b] ([batch_size]) tokens, so token i gets
    batch_indices[i] = b and positions[i] = seq_lens[b] - (append_indptr[b + 1] - i). Tokens
    i < nnz that no request covers (i >= append_indptr[-1]) get -1 in both, which
    append_paged_kv_cache skips. Returns int32 [nnz] arrays (batch_indices, positions) in
    append_indptr's framework, or fills the `batch_indices=` and `positions=` arrays given.
    """
    nnz = integer(nnz, "nnz")
    framework = framework_of(append_indptr, "append_indptr")
    size = (max(nnz, 0),)  # a negative nnz is reported by the kernels' validation
    if batch_indices is None:
        batch_indices = framework.empty(size, "int32", "batch_indices")
    if positions is None:
        positions = framework.empty(size, "int32", "positions")
    _C.get_batch_indices_positions(
        plain_input(append_indptr, "append_indptr", INDEX_DTYPES), plain_input(seq_lens, "seq_lens", INDEX_DTYPES),
        plain_input(batch_indices, "batch_indices", "int32"), plain_input(positions, "positions", "int32"),
        nnz=nnz, stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return batch_indices, positions


def get_seq_lens(kv_indptr: Any, kv_last_page_len: Any, page_size: int, *, out: Any = None,
                 stream: Any = None) -> Any:
    """Sequence lengths of a page table: ``(kv_indptr[b + 1] - kv_indptr[b] - 1) * page_size +
    kv_last_page_len[b]``, 0 for a request with no pages. Returns int32 [batch_size] in
    kv_indptr's framework (or `out`)."""
    page_size = integer(page_size, "page_size")
    framework = framework_of(kv_indptr, "kv_indptr")
    if out is None:
        shape = tuple(kv_indptr.shape)
        out = framework.empty((max(shape[0] - 1, 0) if shape else 0,), "int32", "out")
    _C.get_seq_lens(plain_input(kv_indptr, "kv_indptr", INDEX_DTYPES),
                    plain_input(kv_last_page_len, "kv_last_page_len", INDEX_DTYPES),
                    plain_input(out, "out", "int32"), page_size=page_size,
                    stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out

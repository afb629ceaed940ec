"""Prefill / append attention (FlashInfer's `flashinfer.prefill` API)."""

from __future__ import annotations

import functools
from typing import Any, Optional, Tuple, Union

from . import _C
from ._frameworks import (KV_IN_K, attention_inputs, attention_outputs, dtype_name, framework_of, host_int32,
                          plain_input, stream_handle)
from ._options import attention_options, integer, kv_layout_code, optional_flag, scalar, split_size
from .quantization import packbits, segment_packbits

# Custom masks (FlashInfer's semantics): a request's [qo_len, kv_len] booleans, true where query
# row i sees key j; given, the mask replaces `causal` (a sliding window still applies on top). The
# kernels read them bit-packed in little bit order (packed_custom_mask); a boolean custom_mask is
# packed here on the GPU. When both are given, packed_custom_mask wins, as in FlashInfer.


def _packed_mask_input(packed_custom_mask: Any) -> Any:
    arr = plain_input(packed_custom_mask, "packed_custom_mask", "uint8")
    # A 0-d array reaches the host API as "no array" (and so no mask): name it here.
    if getattr(packed_custom_mask, "shape", None) == ():
        raise ValueError("packed_custom_mask: expected 1 dimensions [num_bytes], got 0 with shape ()")
    return arr


def _flat_bool_mask(custom_mask: Any, shapes: Tuple[Tuple[int, ...], ...], expected: str) -> Any:
    """custom_mask checked (a CUDA bool array of one of `shapes`) as a contiguous 1-D array of its
    framework, ready for packbits."""
    framework = framework_of(custom_mask, "custom_mask")
    dtype = str(getattr(custom_mask.dtype, "name", None) or custom_mask.dtype).replace("torch.", "")
    if dtype != "bool":
        raise TypeError(f"custom_mask: expected dtype bool, got {dtype}")
    shape = tuple(int(n) for n in custom_mask.shape)
    if shape not in shapes:
        raise ValueError(f"custom_mask: expected shape {expected}, got {shape}")
    if framework.name == "torch":
        return custom_mask.reshape(-1).contiguous()
    if framework.name == "cupy":
        import cupy
        return cupy.ascontiguousarray(custom_mask.reshape(-1))
    if framework.name == "jax":
        return custom_mask.reshape(-1)
    raise TypeError("custom_mask: fi_core packs boolean masks through their framework (torch, CuPy or JAX), got "
                    f"{type(custom_mask).__module__}.{type(custom_mask).__qualname__}; pass packed_custom_mask "
                    "(packbits(mask, bitorder='little')) instead")


def _single_mask(custom_mask: Any, packed_custom_mask: Any, q: Any, k: Any, kv_layout: int, stream: Any) -> Any:
    """The packed mask of a single prefill, or None. Where q or k is not 3-D, the host API reports
    them (before the mask) and the mask is not looked at."""
    if packed_custom_mask is not None:
        return _packed_mask_input(packed_custom_mask)
    if custom_mask is None or len(tuple(q.shape)) != 3 or len(tuple(k.shape)) != 3:
        return None
    qo_len, kv_len = int(q.shape[0]), int(k.shape[0 if kv_layout == 0 else 1])
    flat = _flat_bool_mask(custom_mask, ((qo_len, kv_len), (qo_len * kv_len,)),
                           f"[qo_len, kv_len] = ({qo_len}, {kv_len}) or its flattened ({qo_len * kv_len},)")
    return packbits(flat, bitorder="little", stream=stream)


def _mask_offsets(qo_indptr, kv_indptr, last_page_len, page_size: int):
    """Where each request's [qo_len, kv_len] mask starts in a flattened batch mask ([batch_size + 1],
    int64), or None where the index arrays are malformed: plan() then reports them, as it checks
    them before the mask."""
    import numpy as np
    if qo_indptr.ndim != 1 or qo_indptr.shape[0] < 1 or kv_indptr.shape != qo_indptr.shape:
        return None
    qo_len = np.diff(qo_indptr.astype(np.int64))
    kv_len = np.diff(kv_indptr.astype(np.int64))
    if last_page_len is not None:  # paged: kv_len from the pages and the last page's fill
        if last_page_len.shape != qo_len.shape or page_size < 1:
            return None
        if ((kv_len > 0) & ((last_page_len < 1) | (last_page_len > page_size))).any():
            return None
        kv_len = np.where(kv_len > 0, (kv_len - 1) * page_size + last_page_len, 0)
    if qo_indptr[0] < 0 or kv_indptr[0] < 0 or (qo_len < 0).any() or (qo_len > kv_len).any():
        return None
    return np.concatenate([[0], np.cumsum(qo_len * kv_len)]).astype(np.int64)


def check_backend(backend: Any) -> None:
    """FlashInfer's prefill `backend` argument: fi_core has one prefill kernel, FA2."""
    if backend not in ("auto", "fa2"):
        raise ValueError(f"backend: expected 'auto' or 'fa2' (fi_core prefill runs its FA2 kernel), got {backend!r}")


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
    backend: str = "auto",
    return_lse: bool = False,
    out: Any = None,
    lse: Any = None,
    stream: Any = None,
    k_scale: Optional[float] = None,
    v_scale: Optional[float] = None,
) -> Union[Any, Tuple[Any, Any]]:
    """Attention of a request's qo_len query tokens over its kv_len >= qo_len keys (prefill, or
    append when qo_len < kv_len: query row i sits at position i + kv_len - qo_len).

    q: [qo_len, num_qo_heads, head_dim] fp16/bf16. k, v: [kv_len, num_kv_heads, head_dim] ("NHD")
    or [num_kv_heads, kv_len, head_dim] ("HND"), q's dtype or fp8 (float8_e4m3fn, float8_e5m2).
    num_qo_heads must be a multiple of num_kv_heads (GQA). k_scale multiplies sm_scale (the
    logits) and v_scale the output, as in FlashInfer (meant for fp8 KV; any KV dtype takes them).

    causal: row i sees keys j <= i + kv_len - qo_len (bottom-right aligned). window_left >= 0
    also hides keys before position - window_left. pos_encoding_mode: "NONE", "ALIBI" or
    "ROPE_LLAMA" (q and k rotated inside the kernel, LLaMA's rotate-half over the whole head_dim
    with rope_scale / rope_theta: query row i at position i + kv_len - qo_len, key j at j).
    logits_soft_cap > 0 applies cap * tanh(logits / cap). sm_scale defaults to 1/sqrt(head_dim).
    use_fp16_qk_reduction is accepted for compatibility; q.k always accumulates in float32.
    backend: "auto" or "fa2" (both run the FA2 kernel; the Hopper FA3 path is not in fi_core yet).

    custom_mask: bool [qo_len, kv_len] (or flattened), true where row i sees key j; it replaces
    `causal` (window_left still applies) and is packed on the GPU. packed_custom_mask: the same
    bits packed in little bit order, uint8 [ceil(qo_len * kv_len / 8)] (packbits(mask.reshape(-1),
    bitorder="little")); it wins over custom_mask. The heads of a token share its mask row; a row
    that sees no key gives 0 and lse -inf.

    Returns out [qo_len, num_qo_heads, head_dim] in q's dtype and framework, and with return_lse
    (or an `lse=` buffer) the float32 base-2 log-sum-exp [qo_len, num_qo_heads]. `out=`/`lse=`
    are written in place. Runs on `stream` or the framework's current stream.
    """
    causal = optional_flag(causal, "causal")
    optional_flag(use_fp16_qk_reduction, "use_fp16_qk_reduction")
    check_backend(backend)
    layout = kv_layout_code(kv_layout)
    attention = attention_options(pos_encoding_mode, window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta)
    framework, q_in, k_in, v_in, k_fp8 = attention_inputs(q, k, v)
    out, lse, return_lse = attention_outputs(framework, q, out, lse, return_lse)
    mask = _single_mask(custom_mask, packed_custom_mask, q, k, layout, stream)

    _C.single_prefill(
        q_in, k_in, v_in, out, lse, mask,
        kv_fp8_dtype=k_fp8,
        causal=causal,
        kv_layout=layout,
        **attention,
        k_scale=scalar(k_scale, 1.0, "k_scale"),
        v_scale=scalar(v_scale, 1.0, "v_scale"),
        stream=stream_handle(stream, framework),
        synchronize=framework.synchronize,
    )
    return (out, lse) if return_lse else out


# FlashInfer defines it the same way, so positional and keyword calls behave alike.
single_prefill_with_kv_cache_return_lse = functools.partial(single_prefill_with_kv_cache, return_lse=True)


def _on_gpu(x: Any) -> bool:
    return hasattr(x, "__dlpack_device__") and int(x.__dlpack_device__()[0]) != 1


class _BatchPrefillWrapper:
    """What the paged and the ragged wrappers share: workspace, CUDA-graph buffers, plan, run."""

    _paged = True
    # Constructor names of the CUDA-graph buffers: qo_indptr, kv_indptr, then paged-only ones.
    _buffer_names: Tuple[str, ...] = ()

    def __init__(self, float_workspace_buffer: Any, kv_layout: str, use_cuda_graph: bool, buffers: Tuple[Any, ...],
                 custom_mask_buf: Any, mask_indptr_buf: Any, backend: str):
        check_backend(backend)
        self._kv_layout_name = kv_layout
        self._kv_layout = kv_layout_code(kv_layout)
        self._use_cuda_graph = optional_flag(use_cuda_graph, "use_cuda_graph")
        self._workspace_framework = framework_of(float_workspace_buffer, "float_workspace_buffer")
        self._workspace = plain_input(float_workspace_buffer, "float_workspace_buffer", "uint8")
        self._buffers = buffers
        self._fixed_batch_size = None
        if self._use_cuda_graph:
            for buffer, buffer_name in zip(buffers, self._buffer_names):
                if buffer is None:
                    raise TypeError(f"{buffer_name}: expected an int32 CUDA array with use_cuda_graph=True, got None")
                framework_of(buffer, buffer_name)
            self._fixed_batch_size = int(buffers[0].shape[0]) - 1
        for buffer, buffer_name in ((custom_mask_buf, "custom_mask_buf"), (mask_indptr_buf, "mask_indptr_buf")):
            if buffer is not None:
                framework_of(buffer, buffer_name)
        self._custom_mask_buf, self._mask_indptr_buf = custom_mask_buf, mask_indptr_buf
        self._plan = _C.BatchPrefillPlan()
        self._indices = None
        self._mask = None

    @property
    def is_cuda_graph_enabled(self) -> bool:
        return self._use_cuda_graph

    def reset_workspace_buffer(self, float_workspace_buffer: Any, int_workspace_buffer: Any = None) -> None:
        """Switches to another workspace; takes effect at the next plan()."""
        self._workspace_framework = framework_of(float_workspace_buffer, "float_workspace_buffer")
        self._workspace = plain_input(float_workspace_buffer, "float_workspace_buffer", "uint8")

    def _plan_batch(self, qo_indptr, kv_indptr, indices, last_page_len, page_size, num_qo_heads, num_kv_heads,
                    head_dim_qk, head_dim_vo, custom_mask, packed_custom_mask, causal, pos_encoding_mode,
                    use_fp16_qk_reduction, sm_scale, window_left, logits_soft_cap, rope_scale, rope_theta,
                    q_data_type, kv_data_type, fixed_split_size, disable_split_kv, stream):
        head_dim_qk = integer(head_dim_qk, "head_dim_qk")
        split_units = split_size(fixed_split_size, "pages" if self._paged else "keys")
        if head_dim_vo is not None and integer(head_dim_vo, "head_dim_vo") != head_dim_qk:
            raise ValueError(f"head_dim_vo: expected None or head_dim_qk ({head_dim_qk}), got {head_dim_vo} "
                             "(different head dims for q.k and v are not supported yet)")
        optional_flag(use_fp16_qk_reduction, "use_fp16_qk_reduction")
        kv_name = "paged_kv_indptr" if self._paged else "kv_indptr"
        qo_host = host_int32(qo_indptr, "qo_indptr")
        kv_host = host_int32(kv_indptr, kv_name)
        indices_arg = last_host = None
        if self._paged:
            # Page ids on the GPU are used where they are (as FlashInfer does): the plan neither copies
            # nor checks them, and the wrapper keeps them alive for its runs.
            indices_arg = (plain_input(indices, "paged_kv_indices", "int32") if _on_gpu(indices)
                           else host_int32(indices, "paged_kv_indices"))
            last_host = host_int32(last_page_len, "paged_kv_last_page_len")
        if self._fixed_batch_size is not None and qo_host.shape[:1] != (self._fixed_batch_size + 1,):
            raise ValueError(f"qo_indptr: expected batch_size + 1 = {self._fixed_batch_size + 1} entries "
                             f"(the batch size is fixed by {self._buffer_names[0]} with use_cuda_graph), "
                             f"got shape {tuple(qo_host.shape)}")
        q_dtype = dtype_name(q_data_type, "q_data_type")
        kv_dtype = q_dtype if kv_data_type is None else dtype_name(kv_data_type, "kv_data_type")
        buffers = [plain_input(b, n, "int32") for b, n in zip(self._buffers, self._buffer_names)] \
            if self._use_cuda_graph else []
        buffers += [None] * (4 - len(buffers))
        mask = None
        if packed_custom_mask is not None:
            mask = _packed_mask_input(packed_custom_mask)
        elif custom_mask is not None:
            mask = self._pack_mask(custom_mask, qo_host, kv_host, last_host, page_size, stream)
        mask_buf = mask_indptr_buf = None  # CUDA-graph mode only: plan() copies the mask into them
        if self._use_cuda_graph and self._custom_mask_buf is not None:
            mask_buf = plain_input(self._custom_mask_buf, "custom_mask_buf", "uint8")
        if self._use_cuda_graph and self._mask_indptr_buf is not None:
            mask_indptr_buf = plain_input(self._mask_indptr_buf, "mask_indptr_buf", "int32")
        _C.plan_batch_prefill(
            self._plan, self._paged, qo_host, kv_host, indices_arg, last_host, page_size, self._workspace,
            self._use_cuda_graph, buffers[0], buffers[1], buffers[2], buffers[3], mask, mask_buf, mask_indptr_buf,
            num_qo_heads=integer(num_qo_heads, "num_qo_heads"),
            num_kv_heads=integer(num_kv_heads, "num_kv_heads"), head_dim=head_dim_qk,
            q_dtype=q_dtype, kv_dtype=kv_dtype, causal=optional_flag(causal, "causal"),
            **attention_options(pos_encoding_mode, window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta),
            fixed_split_size=split_units, disable_split_kv=optional_flag(disable_split_kv, "disable_split_kv"),
            stream=stream_handle(stream, self._workspace_framework))
        self._indices = indices_arg
        self._mask = mask  # the runs read it in place

    def _pack_mask(self, custom_mask, qo_host, kv_host, last_host, page_size, stream):
        """custom_mask (bool [sum(qo_len * kv_len)]) packed per request as the kernels read it, or
        None where the index arrays are malformed (plan() reports them)."""
        import numpy as np
        offsets = _mask_offsets(qo_host, kv_host, last_host if self._paged else None, page_size)
        if offsets is None:
            return None
        total = int(offsets[-1])
        if total > np.iinfo(np.int32).max:
            raise ValueError(f"custom_mask: expected fewer than 2^31 elements (segment_packbits takes int32 "
                             f"offsets), got {total}; pass packed_custom_mask instead")
        flat = _flat_bool_mask(custom_mask, ((total,),), f"[sum(qo_len * kv_len)] = ({total},)")
        packed, _ = segment_packbits(flat, offsets.astype(np.int32), bitorder="little", stream=stream)
        return packed

    def _run_batch(self, q, kv_arrays, names, k_scale, v_scale, out, lse, return_lse, stream):
        if not self._plan.planned:
            raise RuntimeError("run: plan() must succeed before run()")
        k, v = kv_arrays
        k_scale, v_scale = scalar(k_scale, 1.0, "k_scale"), scalar(v_scale, 1.0, "v_scale")
        framework, q_in, k_in, v_in, k_fp8 = attention_inputs(q, k, v, *names)
        out, lse, return_lse = attention_outputs(framework, q, out, lse, return_lse)
        arrays = dict(paged_kv_cache=None, k_cache=None, v_cache=None, k=None, v=None)
        if v is KV_IN_K:
            arrays["paged_kv_cache"] = k_in
        else:
            arrays[names[0]], arrays[names[1]] = k_in, v_in
        _C.batch_prefill(self._plan, q_in, arrays["paged_kv_cache"], arrays["k_cache"], arrays["v_cache"],
                         arrays["k"], arrays["v"], kv_fp8_dtype=k_fp8, kv_layout=self._kv_layout, out=out, lse=lse,
                         k_scale=k_scale, v_scale=v_scale, stream=stream_handle(stream, framework),
                         synchronize=framework.synchronize)
        return (out, lse) if return_lse else out

    def plan_info(self) -> dict:
        """What the last plan decided: query tile, tiles, CTA columns, grid, split, bytes."""
        p = self._plan
        return dict(batch_size=p.batch_size, total_qo_len=p.total_qo_len, query_tile_rows=p.query_tile_rows,
                    num_tiles=p.num_tiles, num_work_items=p.num_work_items, grid_size=p.grid_size,
                    chunk_len=p.chunk_len, num_partial_states=p.num_partial_states,
                    workspace_bytes=p.workspace_bytes)


_PLAN_DOC = """
        Query rows: request b owns rows qo_indptr[b]:qo_indptr[b + 1] of q and has kv_len >= qo_len
        keys; its query row i sits at position i + kv_len - qo_len (append; causal masks are
        bottom-right aligned). Index arrays are read on the host (GPU arrays are copied back, which
        waits for them). num_qo_heads must be a multiple of num_kv_heads (GQA); head_dim_vo must be
        None or head_dim_qk. pos_encoding_mode: "NONE", "ALIBI" or "ROPE_LLAMA" (q and k rotated
        inside the kernel with rope_scale / rope_theta: query row i of a request at position
        i + kv_len - qo_len, its key j at j); window_left >= 0 keeps that many keys before each
        query's position; logits_soft_cap > 0 applies cap * tanh(logits / cap); sm_scale defaults
        to 1/sqrt(head_dim). kv_data_type defaults to q_data_type; it may also be fp8
        (float8_e4m3fn or float8_e5m2), and run() then takes an fp8 KV cache of that type.

        custom_mask: bool [sum(qo_len * kv_len)], each request's [qo_len, kv_len] mask flattened
        (true where row i sees key j), the requests concatenated; it replaces `causal` (window_left
        still applies) and is packed on the GPU (segment_packbits). packed_custom_mask: uint8, each
        request's bits packed in little bit order and padded to whole bytes (segment_packbits(mask,
        mask_indptr, bitorder="little") with mask_indptr the element offsets); it wins over
        custom_mask. The byte offsets of the requests follow from the lengths (mask_indptr is
        computed, not passed). The runs read the packed mask in place; with use_cuda_graph plan()
        copies it into custom_mask_buf (and mask_indptr into mask_indptr_buf, when given), and the
        first plan fixes whether plans have a mask.

        The schedule (query tiles of 16, 64 or 128 packed token x head rows (at most 64 with a custom
        mask or ROPE_LLAMA), chosen from the average
        qo_len x group size; the keys of each tile cut into chunks when the tiles alone would leave
        the GPU underfilled) is copied to the GPU on `stream` (default: the workspace framework's
        current stream) from pinned memory, so plan() returns without waiting for the GPU;
        non_blocking is accepted for compatibility. With use_cuda_graph the first plan fixes the
        batch size, the query tile and the most query rows later plans may have.

        fixed_split_size (None or -1: the automatic split above) cuts the keys of every query tile
        into chunks of that many pages (paged) or keys (ragged), counted from the tile's first
        visible key, whatever the rest of the batch; disable_split_kv keeps every tile whole. At
        most one of the two. A request's output then depends on the rest of the batch only through
        the query tile size (chosen from the batch's average qo_len). In CUDA-graph mode a fixed
        split must fit the captured grid and partial states (those of one wave of chunks).
"""


class BatchPrefillWithPagedKVCacheWrapper(_BatchPrefillWrapper):
    """Prefill / append attention for a batch of requests over a paged KV cache (FlashInfer's wrapper).

    plan() does the host work once per step (validation, tiling and scheduling, one asynchronous
    copy of the schedule into `float_workspace_buffer`); run() only launches kernels, for every
    layer: no allocation (with out=/lse= given), no synchronization, capturable in a CUDA graph.

    float_workspace_buffer: a CUDA byte buffer the plan lives in (FlashInfer's 128 MB is plenty);
    keep it alive and do not reuse it while this wrapper's runs are pending.
    kv_layout: "NHD" (pages [page_size, num_kv_heads, head_dim]) or "HND" ([num_kv_heads,
    page_size, head_dim]).
    use_cuda_graph: the launch shape no longer depends on the plan, so a graph captured after one
    plan replays correctly after later plans of the same batch size with at most as many query
    rows; needs qo_indptr_buf [batch_size + 1], paged_kv_indptr_buf [batch_size + 1],
    paged_kv_indices_buf (room for every page id) and paged_kv_last_page_len_buf [batch_size]
    (int32 CUDA arrays), which fix the batch size; plan() copies the index arrays into them.
    custom_mask_buf: with use_cuda_graph and custom masks, a uint8 CUDA array with room for the
    largest packed mask (FlashInfer's); mask_indptr_buf, optional, int32 [batch_size + 1], receives
    the requests' byte offsets. Both are unused without use_cuda_graph.
    backend: "auto" or "fa2" (the same tensor-core kernel).
    """

    _paged = True
    _buffer_names = ("qo_indptr_buf", "paged_kv_indptr_buf", "paged_kv_indices_buf", "paged_kv_last_page_len_buf")

    def __init__(self, float_workspace_buffer: Any, kv_layout: str = "NHD", use_cuda_graph: bool = False,
                 qo_indptr_buf: Any = None, paged_kv_indptr_buf: Any = None, paged_kv_indices_buf: Any = None,
                 paged_kv_last_page_len_buf: Any = None, custom_mask_buf: Any = None, mask_indptr_buf: Any = None,
                 backend: str = "auto", jit_args: Any = None):
        super().__init__(float_workspace_buffer, kv_layout, use_cuda_graph,
                         (qo_indptr_buf, paged_kv_indptr_buf, paged_kv_indices_buf, paged_kv_last_page_len_buf),
                         custom_mask_buf, mask_indptr_buf, backend)

    def plan(self, qo_indptr: Any, paged_kv_indptr: Any, paged_kv_indices: Any, paged_kv_last_page_len: Any,
             num_qo_heads: int, num_kv_heads: int, head_dim_qk: int, page_size: int,
             head_dim_vo: Optional[int] = None, custom_mask: Any = None, packed_custom_mask: Any = None,
             causal: bool = False, pos_encoding_mode: str = "NONE", use_fp16_qk_reduction: bool = False,
             sm_scale: Optional[float] = None, window_left: int = -1, logits_soft_cap: Optional[float] = None,
             rope_scale: Optional[float] = None, rope_theta: Optional[float] = None,
             q_data_type: Any = "float16", kv_data_type: Any = None, non_blocking: bool = True,
             fixed_split_size: Optional[int] = None, disable_split_kv: bool = False,
             stream: Any = None) -> None:
        """Plans prefill for a batch whose page table is paged_kv_indptr [batch_size + 1],
        paged_kv_indices and paged_kv_last_page_len [batch_size] (int32): request b owns pages
        paged_kv_indices[paged_kv_indptr[b]:paged_kv_indptr[b + 1]], the last holding
        paged_kv_last_page_len[b] in [1, page_size] tokens. Page ids on the host are checked (>= 0,
        within the cache at run()) and copied with the schedule; page ids on the GPU are used in
        place, unchecked, and must stay unchanged until the runs are done.
        """
        self._plan_batch(qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len,
                         integer(page_size, "page_size"), num_qo_heads, num_kv_heads, head_dim_qk, head_dim_vo,
                         custom_mask, packed_custom_mask, causal, pos_encoding_mode, use_fp16_qk_reduction,
                         sm_scale, window_left, logits_soft_cap, rope_scale, rope_theta, q_data_type,
                         kv_data_type, fixed_split_size, disable_split_kv, stream)

    plan.__doc__ += _PLAN_DOC

    def run(self, q: Any, paged_kv_cache: Any, *args: Any, k_scale: Optional[float] = None,
            v_scale: Optional[float] = None, out: Any = None, lse: Any = None, return_lse: bool = False,
            stream: Any = None) -> Union[Any, Tuple[Any, Any]]:
        """Attention of q [qo_indptr[-1], num_qo_heads, head_dim] over the planned pages of
        paged_kv_cache: one array [num_pages, 2, page_size, num_kv_heads, head_dim] (NHD; HND:
        [num_pages, 2, num_kv_heads, page_size, head_dim]) or a (k_cache, v_cache) pair without the
        "2" dimension, in plan()'s kv_data_type (q's dtype or fp8). Any page strides work (the cache
        may be a slice of a larger pool). k_scale multiplies sm_scale (the logits) and v_scale the
        output, as in FlashInfer (meant for fp8 caches; any dtype takes them).

        Returns out like q in q's dtype and framework, and with return_lse (or lse=) the float32
        base-2 log-sum-exp [qo_indptr[-1], num_qo_heads].
        """
        if args:
            raise TypeError(f"run: unexpected positional arguments after paged_kv_cache ({len(args)} given); "
                            "pass k_scale, v_scale, out, lse, return_lse by keyword")
        if isinstance(paged_kv_cache, (tuple, list)):
            if len(paged_kv_cache) != 2:
                raise ValueError(f"paged_kv_cache: expected one array or a (k_cache, v_cache) pair, "
                                 f"got a sequence of {len(paged_kv_cache)}")
            return self._run_batch(q, tuple(paged_kv_cache), ("k_cache", "v_cache"), k_scale, v_scale, out, lse,
                                   return_lse, stream)
        return self._run_batch(q, (paged_kv_cache, KV_IN_K), ("paged_kv_cache", "paged_kv_cache"), k_scale, v_scale,
                               out, lse, return_lse, stream)

    forward = run


class BatchPrefillWithRaggedKVCacheWrapper(_BatchPrefillWrapper):
    """Prefill / append attention for a batch of requests whose keys and values are ragged rows of
    one k and one v array (FlashInfer's wrapper): request b's keys are rows
    kv_indptr[b]:kv_indptr[b + 1]. plan() / run() as BatchPrefillWithPagedKVCacheWrapper.

    kv_layout: "NHD" (k, v [kv_indptr[-1], num_kv_heads, head_dim]) or "HND" ([num_kv_heads,
    kv_indptr[-1], head_dim]). use_cuda_graph needs qo_indptr_buf and kv_indptr_buf ([batch_size +
    1] int32 CUDA arrays, which fix the batch size). custom_mask_buf / mask_indptr_buf: as in
    BatchPrefillWithPagedKVCacheWrapper. backend: "auto" or "fa2".
    """

    _paged = False
    _buffer_names = ("qo_indptr_buf", "kv_indptr_buf")

    def __init__(self, float_workspace_buffer: Any, kv_layout: str = "NHD", use_cuda_graph: bool = False,
                 qo_indptr_buf: Any = None, kv_indptr_buf: Any = None, custom_mask_buf: Any = None,
                 mask_indptr_buf: Any = None, backend: str = "auto", jit_args: Any = None):
        super().__init__(float_workspace_buffer, kv_layout, use_cuda_graph, (qo_indptr_buf, kv_indptr_buf),
                         custom_mask_buf, mask_indptr_buf, backend)

    def plan(self, qo_indptr: Any, kv_indptr: Any, num_qo_heads: int, num_kv_heads: int, head_dim_qk: int,
             head_dim_vo: Optional[int] = None, custom_mask: Any = None, packed_custom_mask: Any = None,
             causal: bool = False, pos_encoding_mode: str = "NONE", use_fp16_qk_reduction: bool = False,
             window_left: int = -1, logits_soft_cap: Optional[float] = None, sm_scale: Optional[float] = None,
             rope_scale: Optional[float] = None, rope_theta: Optional[float] = None,
             q_data_type: Any = "float16", kv_data_type: Any = None, non_blocking: bool = True,
             fixed_split_size: Optional[int] = None, disable_split_kv: bool = False,
             stream: Any = None) -> None:
        """Plans prefill for a batch whose keys are rows kv_indptr[b]:kv_indptr[b + 1] (int32
        [batch_size + 1]) of k and v."""
        self._plan_batch(qo_indptr, kv_indptr, None, None, 0, num_qo_heads, num_kv_heads, head_dim_qk,
                         head_dim_vo, custom_mask, packed_custom_mask, causal, pos_encoding_mode,
                         use_fp16_qk_reduction, sm_scale, window_left, logits_soft_cap, rope_scale, rope_theta,
                         q_data_type, kv_data_type, fixed_split_size, disable_split_kv, stream)

    plan.__doc__ += _PLAN_DOC

    def run(self, q: Any, k: Any, v: Any, *args: Any, out: Any = None, lse: Any = None, return_lse: bool = False,
            stream: Any = None, k_scale: Optional[float] = None,
            v_scale: Optional[float] = None) -> Union[Any, Tuple[Any, Any]]:
        """Attention of q [qo_indptr[-1], num_qo_heads, head_dim] over k and v (plan()'s
        kv_data_type: q's dtype or fp8; NHD [kv_indptr[-1], num_kv_heads, head_dim] or HND
        [num_kv_heads, kv_indptr[-1], head_dim], any leading strides). k_scale / v_scale as in the
        paged wrapper's run() (a fi_core extension here). Returns out like q, and with return_lse (or
        lse=) the float32 base-2 log-sum-exp [qo_indptr[-1], num_qo_heads].
        """
        if args:
            raise TypeError(f"run: unexpected positional arguments after v ({len(args)} given); "
                            "pass out, lse, return_lse by keyword")
        return self._run_batch(q, (k, v), ("k", "v"), k_scale, v_scale, out, lse, return_lse, stream)

    forward = run

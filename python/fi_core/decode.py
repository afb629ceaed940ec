"""Decode attention (FlashInfer's `flashinfer.decode` API)."""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from . import _C
from ._frameworks import (KV_IN_K, attention_inputs, attention_outputs, dtype_name, framework_of,
                          host_int32, plain_input, stream_handle)
from ._options import attention_options, integer, kv_layout_code, optional_flag, scalar, split_size


def single_decode_with_kv_cache(
    q: Any,
    k: Any,
    v: Any,
    kv_layout: str = "NHD",
    pos_encoding_mode: str = "NONE",
    use_tensor_cores: Optional[bool] = None,
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
    place. Runs on `stream` or the framework's current stream. use_tensor_cores: True runs the
    tensor-core kernel (the query heads of a GQA group are the rows of mma tiles), False the
    CUDA-core kernel, None (the default) tensor cores for groups of 4 or more query heads per KV
    head; tensor cores need q and KV of one 16-bit dtype and no RoPE, otherwise CUDA cores run.
    """
    layout = kv_layout_code(kv_layout)
    optional_flag(use_tensor_cores, "use_tensor_cores")
    tensor_cores = -1 if use_tensor_cores is None else int(use_tensor_cores)
    attention = attention_options(pos_encoding_mode, window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta)
    framework, q_in, k_in, v_in, k_fp8 = attention_inputs(q, k, v)
    out, lse, return_lse = attention_outputs(framework, q, out, lse, return_lse)

    options = dict(
        kv_fp8_dtype=k_fp8,
        kv_layout=layout,
        **attention,
        q_scale=scalar(q_scale, 1.0, "q_scale"),
        k_scale=scalar(k_scale, 1.0, "k_scale"),
        v_scale=scalar(v_scale, 1.0, "v_scale"),
        use_tensor_cores=tensor_cores,
    )
    _, _, workspace_bytes, _ = _C.plan_single_decode(q_in, k_in, v_in, out, lse, None, **options)
    workspace = framework.empty((workspace_bytes,), "uint8", "workspace") if workspace_bytes else None
    _C.single_decode(q_in, k_in, v_in, out, lse, workspace, **options,
                     stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return (out, lse) if return_lse else out


class BatchDecodeWithPagedKVCacheWrapper:
    """Decode attention for a batch of requests over a paged KV cache (FlashInfer's wrapper).

    plan() does the host work once per step (validation, scheduling, one asynchronous copy of the
    schedule into `float_workspace_buffer`); run() only launches kernels, for every layer: no
    allocation (with out=/lse= given), no synchronization, capturable in a CUDA graph.

    float_workspace_buffer: a CUDA byte buffer the plan lives in (FlashInfer's 128 MB is plenty);
    keep it alive and do not reuse it while this wrapper's runs are pending.
    kv_layout: "NHD" (pages [page_size, num_kv_heads, head_dim]) or "HND" ([num_kv_heads,
    page_size, head_dim]).
    use_cuda_graph: the launch shape no longer depends on the plan, so a graph captured after one
    plan replays correctly after any later plan of the same batch size; needs the three
    paged_kv_*_buffer arguments (int32 CUDA arrays: indptr [batch_size + 1], indices with room for
    every page id, last_page_len [batch_size]), which fix the batch size; plan() copies the page
    table into them.
    use_tensor_cores: True runs the tensor-core kernel (the query heads of a GQA group are the rows
    of mma tiles), False the CUDA-core kernel; None (the default) picks tensor cores for groups of 4
    or more query heads per KV head. Tensor cores need q and the cache in one 16-bit dtype and no
    RoPE (pos_encoding_mode "ROPE_LLAMA"); otherwise the CUDA-core kernel runs. Both read each KV
    head once for its whole group.
    """

    def __init__(self, float_workspace_buffer: Any, kv_layout: str = "NHD", use_cuda_graph: bool = False,
                 use_tensor_cores: Optional[bool] = None, paged_kv_indptr_buffer: Any = None,
                 paged_kv_indices_buffer: Any = None, paged_kv_last_page_len_buffer: Any = None,
                 backend: str = "auto", jit_args: Any = None):
        self._kv_layout_name = kv_layout
        self._kv_layout = kv_layout_code(kv_layout)
        self._use_cuda_graph = optional_flag(use_cuda_graph, "use_cuda_graph")
        optional_flag(use_tensor_cores, "use_tensor_cores")
        self._use_tensor_cores = use_tensor_cores
        self._workspace_framework = framework_of(float_workspace_buffer, "float_workspace_buffer")
        self._workspace = plain_input(float_workspace_buffer, "float_workspace_buffer", "uint8")
        self._buffers = (paged_kv_indptr_buffer, paged_kv_indices_buffer, paged_kv_last_page_len_buffer)
        self._fixed_batch_size = None
        if self._use_cuda_graph:
            names = ("paged_kv_indptr_buffer", "paged_kv_indices_buffer", "paged_kv_last_page_len_buffer")
            for buffer, buffer_name in zip(self._buffers, names):
                if buffer is None:
                    raise TypeError(f"{buffer_name}: expected an int32 CUDA array with use_cuda_graph=True, got None")
                framework_of(buffer, buffer_name)
            self._fixed_batch_size = int(paged_kv_indptr_buffer.shape[0]) - 1
        self._plan = _C.BatchDecodePlan()
        self._indices = None

    @property
    def is_cuda_graph_enabled(self) -> bool:
        return self._use_cuda_graph

    @property
    def use_tensor_cores(self) -> Optional[bool]:
        """As given to the constructor (None: automatic); plan_info() says which kernel runs."""
        return self._use_tensor_cores

    def reset_workspace_buffer(self, float_workspace_buffer: Any, int_workspace_buffer: Any = None) -> None:
        """Switches to another workspace; takes effect at the next plan()."""
        self._workspace_framework = framework_of(float_workspace_buffer, "float_workspace_buffer")
        self._workspace = plain_input(float_workspace_buffer, "float_workspace_buffer", "uint8")

    def plan(self, indptr: Any, indices: Any, last_page_len: Any, num_qo_heads: int, num_kv_heads: int,
             head_dim: int, page_size: int, pos_encoding_mode: str = "NONE", window_left: int = -1,
             logits_soft_cap: Optional[float] = None, q_data_type: Any = "float16",
             kv_data_type: Any = None, data_type: Any = None, sm_scale: Optional[float] = None,
             rope_scale: Optional[float] = None, rope_theta: Optional[float] = None,
             non_blocking: bool = True, fixed_split_size: Optional[int] = None,
             disable_split_kv: bool = False, stream: Any = None) -> None:
        """Plans decode for a batch whose page table is indptr [batch_size + 1], indices and
        last_page_len [batch_size] (int32). indptr and last_page_len are read on the host (GPU
        arrays are copied back, which waits for them); indices on the host are checked (page ids
        >= 0, within the cache at run()) and copied with the schedule, indices on the GPU are used
        in place, unchecked, and must stay unchanged until the runs are done. Request b owns pages indices[indptr[b]:indptr[b + 1]], the last holding
        last_page_len[b] in [1, page_size] tokens; a request without pages has no keys (output 0,
        lse -inf). kv_data_type defaults to q_data_type (data_type is FlashInfer's older name for
        it). The schedule is copied to the GPU on `stream` (default: the workspace framework's
        current stream) from pinned memory, so plan() returns without waiting for the GPU;
        non_blocking is accepted for compatibility.

        Each request is cut into chunks of keys, one CTA column each, merged afterwards. By default
        the batch's keys are spread evenly over the GPU (one CTA per SM for the tensor-core kernel,
        every resident CTA slot for the CUDA-core kernel): a request longer than its share is
        split, at any batch size, and a batch of shorter requests runs unsplit. fixed_split_size
        (pages; None or -1: the default) cuts every request into chunks of that many pages
        instead, so that its output is bit for bit the same whatever else is in the batch;
        disable_split_kv keeps every request whole. In CUDA-graph mode a fixed split must fit the
        captured grid (batch size + the columns of one spread; plan() says how many).
        """
        indptr_host = host_int32(indptr, "indptr")
        # Page ids on the GPU are used where they are (as FlashInfer does): the plan neither copies
        # nor checks them, and the wrapper keeps them alive for its runs.
        on_gpu = hasattr(indices, "__dlpack_device__") and int(indices.__dlpack_device__()[0]) != 1
        indices_arg = plain_input(indices, "indices", "int32") if on_gpu else host_int32(indices, "indices")
        last_host = host_int32(last_page_len, "last_page_len")
        if self._fixed_batch_size is not None and indptr_host.shape[:1] != (self._fixed_batch_size + 1,):
            raise ValueError(f"indptr: expected batch_size + 1 = {self._fixed_batch_size + 1} entries "
                             f"(the batch size is fixed by paged_kv_indptr_buffer with use_cuda_graph), "
                             f"got shape {tuple(indptr_host.shape)}")
        if data_type is not None:  # FlashInfer's older name for both
            q_data_type = kv_data_type = data_type
        q_dtype = dtype_name(q_data_type, "q_data_type")
        kv_dtype = q_dtype if kv_data_type is None else dtype_name(kv_data_type, "kv_data_type")
        indptr_buffer, indices_buffer, last_buffer = (
            (plain_input(b, n, "int32") for b, n in zip(self._buffers, (
                "paged_kv_indptr_buffer", "paged_kv_indices_buffer", "paged_kv_last_page_len_buffer")))
            if self._use_cuda_graph else (None, None, None))
        _C.plan_batch_decode(
            self._plan, indptr_host, indices_arg, last_host, self._workspace, self._use_cuda_graph,
            -1 if self._use_tensor_cores is None else int(self._use_tensor_cores),
            indptr_buffer, indices_buffer, last_buffer,
            num_qo_heads=integer(num_qo_heads, "num_qo_heads"),
            num_kv_heads=integer(num_kv_heads, "num_kv_heads"),
            head_dim=integer(head_dim, "head_dim"), page_size=integer(page_size, "page_size"),
            q_dtype=q_dtype, kv_dtype=kv_dtype,
            **attention_options(pos_encoding_mode, window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta),
            fixed_split_size=split_size(fixed_split_size, "pages"),
            disable_split_kv=optional_flag(disable_split_kv, "disable_split_kv"),
            stream=stream_handle(stream, self._workspace_framework))
        self._indices = indices_arg

    def run(self, q: Any, paged_kv_cache: Any, *args: Any, q_scale: Optional[float] = None,
            k_scale: Optional[float] = None, v_scale: Optional[float] = None, out: Any = None,
            lse: Any = None, return_lse: bool = False, stream: Any = None) -> Union[Any, Tuple[Any, Any]]:
        """Decode attention of q [batch_size, num_qo_heads, head_dim] over the planned pages of
        paged_kv_cache: one array [num_pages, 2, page_size, num_kv_heads, head_dim] (NHD; HND:
        [num_pages, 2, num_kv_heads, page_size, head_dim]) or a (k_cache, v_cache) pair without the
        "2" dimension. Any page strides work (the cache may be a slice of a larger pool). fp8
        caches are scaled by k_scale (into the logits) and v_scale (the output).

        Returns out [batch_size, num_qo_heads, head_dim] in q's dtype and framework, and with
        return_lse (or lse=) the float32 base-2 log-sum-exp [batch_size, num_qo_heads].
        """
        if args:
            raise TypeError(f"run: unexpected positional arguments after paged_kv_cache ({len(args)} given); "
                            "pass q_scale, k_scale, v_scale, out, lse, return_lse by keyword")
        if not self._plan.planned:
            raise RuntimeError("run: plan() must succeed before run()")
        if isinstance(paged_kv_cache, (tuple, list)):
            if len(paged_kv_cache) != 2:
                raise ValueError(f"paged_kv_cache: expected one array or a (k_cache, v_cache) pair, "
                                 f"got a sequence of {len(paged_kv_cache)}")
            framework, q_in, k_in, v_in, k_fp8 = attention_inputs(q, paged_kv_cache[0], paged_kv_cache[1],
                                                                  "k_cache", "v_cache")
            kv_in = None
        else:
            framework, q_in, kv_in, _, k_fp8 = attention_inputs(q, paged_kv_cache, KV_IN_K, "paged_kv_cache")
            k_in = v_in = None
        out, lse, return_lse = attention_outputs(framework, q, out, lse, return_lse)
        _C.batch_decode(self._plan, q_in, kv_in, k_in, v_in, kv_fp8_dtype=k_fp8, kv_layout=self._kv_layout,
                        out=out, lse=lse, q_scale=scalar(q_scale, 1.0, "q_scale"),
                        k_scale=scalar(k_scale, 1.0, "k_scale"), v_scale=scalar(v_scale, 1.0, "v_scale"),
                        stream=stream_handle(stream, framework), synchronize=framework.synchronize)
        return (out, lse) if return_lse else out

    forward = run

    def plan_info(self) -> dict:
        """What the last plan decided: chunk length, CTA columns, grid, partial states, kernel, bytes."""
        p = self._plan
        return dict(batch_size=p.batch_size, chunk_len=p.chunk_len, num_work_items=p.num_work_items,
                    grid_size=p.grid_size, num_partial_rows=p.num_partial_rows,
                    tensor_cores=p.tensor_cores, workspace_bytes=p.workspace_bytes)


class CUDAGraphBatchDecodeWithPagedKVCacheWrapper(BatchDecodeWithPagedKVCacheWrapper):
    """BatchDecodeWithPagedKVCacheWrapper for CUDA graphs: caller-owned, fixed page-table buffers
    (int32 CUDA arrays: indptr [batch_size + 1], indices, last_page_len [batch_size]) fix the batch
    size; capture run() once, then plan() and replay for every step."""

    def __init__(self, workspace_buffer: Any, indptr_buffer: Any, indices_buffer: Any,
                 last_page_len_buffer: Any, kv_layout: str = "NHD", use_tensor_cores: Optional[bool] = None):
        super().__init__(workspace_buffer, kv_layout, use_cuda_graph=True, use_tensor_cores=use_tensor_cores,
                         paged_kv_indptr_buffer=indptr_buffer, paged_kv_indices_buffer=indices_buffer,
                         paged_kv_last_page_len_buffer=last_page_len_buffer)

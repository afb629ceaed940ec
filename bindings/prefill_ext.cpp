// Bindings: prefill attention.
#include "common.h"

namespace fi_core_bindings {

void bind_prefill(nb::module_& m) {
  m.def(
      "single_prefill",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         OptionalArray packed_custom_mask, std::optional<std::string> kv_fp8_dtype, bool causal, int kv_layout, int pos_encoding_mode,
         int window_left, float logits_soft_cap, float sm_scale, float rope_scale, float rope_theta,
         float k_scale, float v_scale, uintptr_t stream, bool synchronize) {
        fi_core::SinglePrefillArgs a;
        a.q = view(q, "q");
        a.k = view(k, "k");
        a.v = view(v, "v");
        reinterpret_fp8(a.k, kv_fp8_dtype);
        reinterpret_fp8(a.v, kv_fp8_dtype);
        a.out = view(out, "out");
        a.lse = view(lse, "lse");
        a.packed_custom_mask = view(packed_custom_mask, "packed_custom_mask");
        a.causal = causal;
        a.kv_layout = fi_core::KVLayout(kv_layout);
        a.pos_encoding_mode = fi_core::PosEncodingMode(pos_encoding_mode);
        a.window_left = window_left;
        a.logits_soft_cap = logits_soft_cap;
        a.sm_scale = sm_scale;
        a.rope_scale = rope_scale;
        a.rope_theta = rope_theta;
        a.k_scale = k_scale;
        a.v_scale = v_scale;
        throw_if_error(launch_and_wait([&] { return fi_core::single_prefill(a, as_stream(stream)); },
                                       stream, synchronize));
      },
      "q"_a.none(), "k"_a.none(), "v"_a.none(), "out"_a.none(), "lse"_a.none(), "packed_custom_mask"_a.none(),
      "kv_fp8_dtype"_a.none(),
      "causal"_a, "kv_layout"_a, "pos_encoding_mode"_a, "window_left"_a, "logits_soft_cap"_a,
      "sm_scale"_a, "rope_scale"_a, "rope_theta"_a, "k_scale"_a, "v_scale"_a, "stream"_a, "synchronize"_a,
      "Launches single-request prefill on `stream` (a cudaStream_t as an integer).");

  nb::class_<fi_core::BatchPrefillPlan>(m, "BatchPrefillPlan",
                                        "A batch-prefill plan: made by plan_batch_prefill, used by batch_prefill.")
      .def(nb::init<>())
      .def_prop_ro("planned", &fi_core::BatchPrefillPlan::planned)
      .def_prop_ro("paged", &fi_core::BatchPrefillPlan::paged)
      .def_prop_ro("batch_size", &fi_core::BatchPrefillPlan::batch_size)
      .def_prop_ro("total_qo_len", &fi_core::BatchPrefillPlan::total_qo_len)
      .def_prop_ro("query_tile_rows", &fi_core::BatchPrefillPlan::query_tile_rows)
      .def_prop_ro("num_tiles", &fi_core::BatchPrefillPlan::num_tiles)
      .def_prop_ro("num_work_items", &fi_core::BatchPrefillPlan::num_work_items)
      .def_prop_ro("grid_size", &fi_core::BatchPrefillPlan::grid_size)
      .def_prop_ro("chunk_len", &fi_core::BatchPrefillPlan::chunk_len)
      .def_prop_ro("num_partial_states", &fi_core::BatchPrefillPlan::num_partial_states)
      .def_prop_ro("workspace_bytes", &fi_core::BatchPrefillPlan::workspace_bytes);

  m.def(
      "plan_batch_prefill",
      [](fi_core::BatchPrefillPlan& plan, bool paged, OptionalArray qo_indptr, OptionalArray kv_indptr,
         OptionalArray indices, OptionalArray last_page_len, int64_t page_size, OptionalArray workspace,
         bool use_cuda_graph, OptionalArray qo_indptr_buffer, OptionalArray kv_indptr_buffer,
         OptionalArray indices_buffer, OptionalArray last_page_len_buffer, OptionalArray packed_custom_mask,
         OptionalArray custom_mask_buffer, OptionalArray mask_indptr_buffer, int64_t num_qo_heads,
         int64_t num_kv_heads, int64_t head_dim, std::string q_dtype, std::string kv_dtype, bool causal,
         int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale, float rope_scale,
         float rope_theta, int64_t fixed_split_size, bool disable_split_kv, uintptr_t stream) {
        fi_core::BatchPrefillPlanArgs a;
        a.paged = paged;
        a.qo_indptr = view(qo_indptr, "qo_indptr");
        a.kv_indptr = view(kv_indptr, paged ? "paged_kv_indptr" : "kv_indptr");
        a.indices = view(indices, "paged_kv_indices");
        a.last_page_len = view(last_page_len, "paged_kv_last_page_len");
        a.page_size = page_size;
        a.workspace = view(workspace, "float_workspace_buffer");
        a.use_cuda_graph = use_cuda_graph;
        a.qo_indptr_buffer = view(qo_indptr_buffer, "qo_indptr_buf");
        a.kv_indptr_buffer = view(kv_indptr_buffer, paged ? "paged_kv_indptr_buf" : "kv_indptr_buf");
        a.indices_buffer = view(indices_buffer, "paged_kv_indices_buf");
        a.last_page_len_buffer = view(last_page_len_buffer, "paged_kv_last_page_len_buf");
        a.packed_custom_mask = view(packed_custom_mask, "packed_custom_mask");
        a.custom_mask_buffer = view(custom_mask_buffer, "custom_mask_buf");
        a.mask_indptr_buffer = view(mask_indptr_buffer, "mask_indptr_buf");
        a.num_qo_heads = num_qo_heads;
        a.num_kv_heads = num_kv_heads;
        a.head_dim = head_dim;
        a.q_dtype = dtype_from_name(q_dtype);
        a.kv_dtype = dtype_from_name(kv_dtype);
        a.causal = causal;
        a.pos_encoding_mode = fi_core::PosEncodingMode(pos_encoding_mode);
        a.window_left = window_left;
        a.logits_soft_cap = logits_soft_cap;
        a.sm_scale = sm_scale;
        a.rope_scale = rope_scale;
        a.rope_theta = rope_theta;
        a.fixed_split_size = fixed_split_size;
        a.disable_split_kv = disable_split_kv;
        throw_if_error(fi_core::plan_batch_prefill(a, &plan, as_stream(stream)));
      },
      "plan"_a, "paged"_a, "qo_indptr"_a.none(), "kv_indptr"_a.none(), "indices"_a.none(),
      "last_page_len"_a.none(), "page_size"_a, "workspace"_a.none(), "use_cuda_graph"_a,
      "qo_indptr_buffer"_a.none(), "kv_indptr_buffer"_a.none(), "indices_buffer"_a.none(),
      "last_page_len_buffer"_a.none(), "packed_custom_mask"_a.none(), "custom_mask_buffer"_a.none(),
      "mask_indptr_buffer"_a.none(), "num_qo_heads"_a, "num_kv_heads"_a, "head_dim"_a, "q_dtype"_a,
      "kv_dtype"_a, "causal"_a, "pos_encoding_mode"_a, "window_left"_a, "logits_soft_cap"_a, "sm_scale"_a,
      "rope_scale"_a, "rope_theta"_a, "fixed_split_size"_a, "disable_split_kv"_a, "stream"_a,
      "Plans a batch prefill from host index arrays; copies the schedule to the device on `stream`.");

  m.def(
      "batch_prefill",
      [](const fi_core::BatchPrefillPlan& plan, OptionalArray q, OptionalArray paged_kv_cache,
         OptionalArray k_cache, OptionalArray v_cache, OptionalArray k, OptionalArray v,
         std::optional<std::string> kv_fp8_dtype, int kv_layout, OptionalArray out, OptionalArray lse, float k_scale,
         float v_scale, uintptr_t stream, bool synchronize) {
        fi_core::BatchPrefillRunArgs a;
        a.q = view(q, "q");
        a.paged_kv_cache = view(paged_kv_cache, "paged_kv_cache");
        a.k_cache = view(k_cache, "k_cache");
        a.v_cache = view(v_cache, "v_cache");
        a.k = view(k, "k");
        a.v = view(v, "v");
        for (fi_core::TensorView* t : {&a.paged_kv_cache, &a.k_cache, &a.v_cache, &a.k, &a.v})
          reinterpret_fp8(*t, kv_fp8_dtype);
        a.kv_layout = fi_core::KVLayout(kv_layout);
        a.out = view(out, "out");
        a.lse = view(lse, "lse");
        a.k_scale = k_scale;
        a.v_scale = v_scale;
        throw_if_error(launch_and_wait([&] { return fi_core::batch_prefill(a, plan, as_stream(stream)); },
                                       stream, synchronize));
      },
      "plan"_a, "q"_a.none(), "paged_kv_cache"_a.none(), "k_cache"_a.none(), "v_cache"_a.none(), "k"_a.none(),
      "v"_a.none(), "kv_fp8_dtype"_a.none(), "kv_layout"_a, "out"_a.none(), "lse"_a.none(), "k_scale"_a,
      "v_scale"_a, "stream"_a, "synchronize"_a,
      "Runs a planned batch prefill on `stream`: launches only.");

  m.def(
      "schedule_batch_prefill",
      [](OptionalArray qo_indptr, OptionalArray kv_lens, int64_t num_qo_heads, int64_t num_kv_heads, bool causal,
         int window_left, uint32_t query_tile_rows, uint32_t max_items, uint32_t grid_size, uint32_t merge_rows,
         uint32_t fixed_chunk_len) {
        fi_core::BatchPrefillSchedule s;
        throw_if_error(fi_core::schedule_batch_prefill(view(qo_indptr, "qo_indptr"), view(kv_lens, "kv_lens"),
                                                       num_qo_heads, num_kv_heads, causal, window_left,
                                                       query_tile_rows, max_items, fixed_chunk_len, grid_size,
                                                       merge_rows, &s));
        std::vector<std::tuple<int32_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t,
                               int32_t, uint32_t, uint32_t>>
            work;
        for (const auto& w : s.work)
          work.emplace_back(w.request, w.qo_begin, w.qo_len, w.kv_len, w.row_begin, w.row_end, w.kv_begin, w.kv_end,
                            w.partial_state, w.num_chunks, w.chunk);
        return std::make_tuple(work, s.state_indptr, s.query_tile_rows, s.chunk_len, s.num_tiles);
      },
      "qo_indptr"_a.none(), "kv_lens"_a.none(), "num_qo_heads"_a, "num_kv_heads"_a, "causal"_a, "window_left"_a,
      "query_tile_rows"_a, "max_items"_a, "grid_size"_a, "merge_rows"_a, "fixed_chunk_len"_a = 0,
      "The batch-prefill scheduler alone (host only): ([(request, qo_begin, qo_len, kv_len, row_begin, row_end, "
      "kv_begin, kv_end, partial_state, num_chunks, chunk)], state_indptr, query_tile_rows, chunk_len, num_tiles); "
      "fixed_chunk_len > 0 cuts tiles into chunks of that many keys.");
}

}  // namespace fi_core_bindings

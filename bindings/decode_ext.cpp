// Bindings: decode attention.
#include "common.h"

namespace fi_core_bindings {
namespace {

fi_core::SingleDecodeArgs single_decode_args(
    const OptionalArray& q, const OptionalArray& k, const OptionalArray& v, const OptionalArray& out,
    const OptionalArray& lse, const OptionalArray& workspace, const std::optional<std::string>& kv_fp8_dtype,
    int kv_layout, int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
    float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale, int use_tensor_cores) {
  fi_core::SingleDecodeArgs a;
  a.q = view(q, "q");
  a.k = view(k, "k");
  a.v = view(v, "v");
  reinterpret_fp8(a.k, kv_fp8_dtype);
  reinterpret_fp8(a.v, kv_fp8_dtype);
  a.out = view(out, "out");
  a.lse = view(lse, "lse");
  a.workspace = view(workspace, "workspace");
  a.kv_layout = fi_core::KVLayout(kv_layout);
  a.pos_encoding_mode = fi_core::PosEncodingMode(pos_encoding_mode);
  a.window_left = window_left;
  a.logits_soft_cap = logits_soft_cap;
  a.sm_scale = sm_scale;
  a.rope_scale = rope_scale;
  a.rope_theta = rope_theta;
  a.q_scale = q_scale;
  a.k_scale = k_scale;
  a.v_scale = v_scale;
  a.use_tensor_cores = use_tensor_cores;
  return a;
}

}  // namespace

void bind_decode(nb::module_& m) {
#define FI_CORE_SINGLE_DECODE_ARGS                                                             \
  "q"_a.none(), "k"_a.none(), "v"_a.none(), "out"_a.none(), "lse"_a.none(), "workspace"_a.none(), \
      "kv_fp8_dtype"_a.none(), "kv_layout"_a, "pos_encoding_mode"_a, "window_left"_a,           \
      "logits_soft_cap"_a, "sm_scale"_a, "rope_scale"_a, "rope_theta"_a, "q_scale"_a,            \
      "k_scale"_a, "v_scale"_a, "use_tensor_cores"_a

  m.def(
      "plan_single_decode",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         OptionalArray workspace, std::optional<std::string> kv_fp8_dtype, int kv_layout,
         int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
         float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale,
         int use_tensor_cores) {
        const auto args = single_decode_args(q, k, v, out, lse, workspace, kv_fp8_dtype, kv_layout,
                                             pos_encoding_mode, window_left, logits_soft_cap, sm_scale,
                                             rope_scale, rope_theta, q_scale, k_scale, v_scale, use_tensor_cores);
        fi_core::SingleDecodePlanInfo plan;
        throw_if_error(fi_core::plan_single_decode(args, &plan));
        return std::make_tuple(plan.num_chunks, plan.chunk_len, plan.workspace_bytes, plan.tensor_cores);
      },
      FI_CORE_SINGLE_DECODE_ARGS,
      "Validates a single-decode call; returns (num_chunks, chunk_len, workspace_bytes, tensor_cores).");

  m.def(
      "single_decode",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         OptionalArray workspace, std::optional<std::string> kv_fp8_dtype, int kv_layout,
         int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
         float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale,
         int use_tensor_cores, uintptr_t stream, bool synchronize) {
        const auto args = single_decode_args(q, k, v, out, lse, workspace, kv_fp8_dtype, kv_layout,
                                             pos_encoding_mode, window_left, logits_soft_cap, sm_scale,
                                             rope_scale, rope_theta, q_scale, k_scale, v_scale, use_tensor_cores);
        throw_if_error(launch_and_wait(
            [&] { return fi_core::single_decode(args, as_stream(stream)); },
            stream, synchronize));
      },
      FI_CORE_SINGLE_DECODE_ARGS, "stream"_a, "synchronize"_a,
      "Launches single-request decode on `stream` (a cudaStream_t as an integer).");
#undef FI_CORE_SINGLE_DECODE_ARGS
  nb::class_<fi_core::BatchDecodePlan>(m, "BatchDecodePlan",
                                       "A batch-decode plan: made by plan_batch_decode, used by batch_decode.")
      .def(nb::init<>())
      .def_prop_ro("planned", &fi_core::BatchDecodePlan::planned)
      .def_prop_ro("batch_size", &fi_core::BatchDecodePlan::batch_size)
      .def_prop_ro("chunk_len", &fi_core::BatchDecodePlan::chunk_len)
      .def_prop_ro("num_work_items", &fi_core::BatchDecodePlan::num_work_items)
      .def_prop_ro("grid_size", &fi_core::BatchDecodePlan::grid_size)
      .def_prop_ro("num_partial_rows", &fi_core::BatchDecodePlan::num_partial_rows)
      .def_prop_ro("tensor_cores", &fi_core::BatchDecodePlan::tensor_cores)
      .def_prop_ro("workspace_bytes", &fi_core::BatchDecodePlan::workspace_bytes);

  m.def(
      "plan_batch_decode",
      [](fi_core::BatchDecodePlan& plan, OptionalArray indptr, OptionalArray indices,
         OptionalArray last_page_len, OptionalArray workspace, bool use_cuda_graph, int use_tensor_cores,
         OptionalArray indptr_buffer, OptionalArray indices_buffer, OptionalArray last_page_len_buffer,
         int64_t num_qo_heads, int64_t num_kv_heads, int64_t head_dim, int64_t page_size,
         std::string q_dtype, std::string kv_dtype, int pos_encoding_mode, int window_left,
         float logits_soft_cap, float sm_scale, float rope_scale, float rope_theta, int64_t fixed_split_size,
         bool disable_split_kv, uintptr_t stream) {
        fi_core::BatchDecodePlanArgs a;
        a.indptr = view(indptr, "indptr");
        a.indices = view(indices, "indices");
        a.last_page_len = view(last_page_len, "last_page_len");
        a.workspace = view(workspace, "float_workspace_buffer");
        a.use_cuda_graph = use_cuda_graph;
        a.use_tensor_cores = use_tensor_cores;
        a.indptr_buffer = view(indptr_buffer, "paged_kv_indptr_buffer");
        a.indices_buffer = view(indices_buffer, "paged_kv_indices_buffer");
        a.last_page_len_buffer = view(last_page_len_buffer, "paged_kv_last_page_len_buffer");
        a.num_qo_heads = num_qo_heads;
        a.num_kv_heads = num_kv_heads;
        a.head_dim = head_dim;
        a.page_size = page_size;
        a.q_dtype = dtype_from_name(q_dtype);
        a.kv_dtype = dtype_from_name(kv_dtype);
        a.pos_encoding_mode = fi_core::PosEncodingMode(pos_encoding_mode);
        a.window_left = window_left;
        a.logits_soft_cap = logits_soft_cap;
        a.sm_scale = sm_scale;
        a.rope_scale = rope_scale;
        a.rope_theta = rope_theta;
        a.fixed_split_size = fixed_split_size;
        a.disable_split_kv = disable_split_kv;
        throw_if_error(fi_core::plan_batch_decode(a, &plan, as_stream(stream)));
      },
      "plan"_a, "indptr"_a.none(), "indices"_a.none(), "last_page_len"_a.none(), "workspace"_a.none(),
      "use_cuda_graph"_a, "use_tensor_cores"_a, "indptr_buffer"_a.none(), "indices_buffer"_a.none(),
      "last_page_len_buffer"_a.none(), "num_qo_heads"_a, "num_kv_heads"_a, "head_dim"_a,
      "page_size"_a, "q_dtype"_a, "kv_dtype"_a, "pos_encoding_mode"_a, "window_left"_a,
      "logits_soft_cap"_a, "sm_scale"_a, "rope_scale"_a, "rope_theta"_a, "fixed_split_size"_a,
      "disable_split_kv"_a, "stream"_a,
      "Plans a batch decode from a host page table; copies the schedule to the device on `stream`.");

  m.def(
      "batch_decode",
      [](const fi_core::BatchDecodePlan& plan, OptionalArray q, OptionalArray paged_kv_cache,
         OptionalArray k_cache, OptionalArray v_cache, std::optional<std::string> kv_fp8_dtype,
         int kv_layout, OptionalArray out, OptionalArray lse, float q_scale, float k_scale,
         float v_scale, uintptr_t stream, bool synchronize) {
        fi_core::BatchDecodeRunArgs a;
        a.q = view(q, "q");
        a.paged_kv_cache = view(paged_kv_cache, "paged_kv_cache");
        a.k_cache = view(k_cache, "k_cache");
        a.v_cache = view(v_cache, "v_cache");
        reinterpret_fp8(a.paged_kv_cache, kv_fp8_dtype);
        reinterpret_fp8(a.k_cache, kv_fp8_dtype);
        reinterpret_fp8(a.v_cache, kv_fp8_dtype);
        a.kv_layout = fi_core::KVLayout(kv_layout);
        a.out = view(out, "out");
        a.lse = view(lse, "lse");
        a.q_scale = q_scale;
        a.k_scale = k_scale;
        a.v_scale = v_scale;
        throw_if_error(launch_and_wait([&] { return fi_core::batch_decode(a, plan, as_stream(stream)); },
                                       stream, synchronize));
      },
      "plan"_a, "q"_a.none(), "paged_kv_cache"_a.none(), "k_cache"_a.none(), "v_cache"_a.none(),
      "kv_fp8_dtype"_a.none(), "kv_layout"_a, "out"_a.none(), "lse"_a.none(), "q_scale"_a,
      "k_scale"_a, "v_scale"_a, "stream"_a, "synchronize"_a,
      "Runs a planned batch decode on `stream`: launches only.");
  m.def(
      "schedule_batch_decode",
      [](OptionalArray indptr, OptionalArray last_page_len, int64_t page_size, int window_left,
         uint32_t max_items, uint32_t tokens_per_step, uint32_t min_chunk_len, uint32_t grid_size,
         uint32_t fixed_chunk_len) {
        fi_core::BatchDecodeSchedule s;
        throw_if_error(fi_core::schedule_batch_decode(view(indptr, "indptr"), view(last_page_len, "last_page_len"),
                                                      page_size, window_left, max_items, tokens_per_step,
                                                      min_chunk_len, fixed_chunk_len, grid_size, &s));
        std::vector<std::tuple<int32_t, int32_t, uint32_t, uint32_t, uint32_t, int32_t>> work;
        for (const auto& w : s.work) work.emplace_back(w.request, w.partial_row, w.begin, w.end, w.kv_len, w.page_begin);
        return std::make_tuple(work, s.state_indptr, s.chunk_len);
      },
      "indptr"_a.none(), "last_page_len"_a.none(), "page_size"_a, "window_left"_a, "max_items"_a,
      "tokens_per_step"_a, "min_chunk_len"_a, "grid_size"_a, "fixed_chunk_len"_a = 0,
      "The batch-decode scheduler alone (host only): ([(request, partial_row, begin, end, kv_len, "
      "page_begin)], state_indptr, chunk_len); fixed_chunk_len > 0 cuts requests into chunks of that "
      "many keys.");
}

}  // namespace fi_core_bindings

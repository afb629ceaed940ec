// Host entry points of batch decode: plan (validation, scheduling, the asynchronous copy of the
// schedule into the workspace) and run (validation against the plan, dispatch to an instantiation).
// A .cu file only because the scheduler lives in the CUDA header batch_decode.cuh.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "batch_decode_problem.h"
#include "batch_plan.h"
#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "flashinfer/attention/batch_decode.cuh"

namespace fi_core {

using flashinfer::attention::DecodeWork;

struct BatchDecodePlan::Impl {
  bool planned = false;
  // What the plan was made for; run() checks its arrays against these.
  int device = -1;
  int64_t batch_size = 0, num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  int64_t min_num_pages = 0;  // 1 + the largest page id in the page table
  DType q_dtype = DType::kFloat16, kv_dtype = DType::kFloat16;
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  float logits_soft_cap = 0.f, sm_scale = 0.f, rope_scale = 1.f, rope_theta = 1e4f;
  // The schedule and where it lives on the device.
  uint32_t chunk_len = 0, num_work_items = 0, grid_size = 0, num_partial_rows = 0;
  bool split = false, tensor_cores = false;
  detail::DeviceSchedule schedule;
  detail::PinnedStaging staging;  // the schedule's host copy
};

BatchDecodePlan::BatchDecodePlan() : impl_(new Impl) {}
BatchDecodePlan::~BatchDecodePlan() { delete impl_; }
bool BatchDecodePlan::planned() const { return impl_->planned; }
int64_t BatchDecodePlan::batch_size() const { return impl_->batch_size; }
uint32_t BatchDecodePlan::chunk_len() const { return impl_->chunk_len; }
uint32_t BatchDecodePlan::num_work_items() const { return impl_->num_work_items; }
uint32_t BatchDecodePlan::grid_size() const { return impl_->grid_size; }
uint32_t BatchDecodePlan::num_partial_rows() const { return impl_->num_partial_rows; }
bool BatchDecodePlan::tensor_cores() const { return impl_->tensor_cores; }
size_t BatchDecodePlan::workspace_bytes() const { return impl_->schedule.workspace_bytes; }

namespace {

using detail::device_int32_buffer;
using detail::host_int32_vector;
using detail::indexed;

// The page table's lengths, read on the host: indptr [batch_size + 1] non-decreasing from >= 0,
// last_page_len [batch_size] in [1, page_size] for requests with pages, every kv_len below 2^31.
Checker& check_page_lengths(Checker& c, const TensorView& indptr_view, const TensorView& last_view,
                            int64_t page_size) {
  host_int32_vector(c, indptr_view, "indptr", "[batch_size + 1]");
  host_int32_vector(c, last_view, "last_page_len", "[batch_size]");
  if (!c.ok()) return c;
  const int64_t batch = indptr_view.shape[0] - 1;
  c.require(batch >= 0, [] { return std::string("indptr: expected batch_size + 1 >= 1 entries, got 0"); });
  c.shape(last_view, "last_page_len", {batch}, "[batch_size] (indptr has batch_size + 1)");
  c.require(page_size >= 1 && page_size < (int64_t(1) << 31), [&] {
    return "page_size: expected a positive integer, got " + std::to_string(page_size);
  });
  if (!c.ok()) return c;
  if (!detail::check_indptr(c, indptr_view, "indptr").ok()) return c;
  const auto* indptr = static_cast<const int32_t*>(indptr_view.data);
  const auto* last = static_cast<const int32_t*>(last_view.data);
  for (int64_t b = 0; b < batch && c.ok(); ++b) {
    const bool has_pages = indptr[b + 1] > indptr[b];
    c.require(!has_pages || (last[b] >= 1 && last[b] <= page_size), [&] {
      return "last_page_len: expected values in [1, page_size = " + std::to_string(page_size) +
             "], got " + indexed("last_page_len", b) + " = " + std::to_string(last[b]);
    });
    const int64_t kv_len = has_pages ? (int64_t(indptr[b + 1]) - indptr[b] - 1) * page_size + last[b] : 0;
    c.require(kv_len < std::numeric_limits<int32_t>::max(), [&] {
      return "indptr: expected kv_len below 2^31 per request, got " + std::to_string(kv_len) +
             " for request " + std::to_string(b);
    });
  }
  return c;
}

// The page ids [indptr[0], indptr[-1]) (see detail::check_page_ids).
Status check_page_ids(const BatchDecodePlanArgs& a, int64_t* min_num_pages) {
  const auto* indptr = static_cast<const int32_t*>(a.indptr.data);
  Checker c;
  return detail::check_page_ids(c, a.indices, "indices", indptr[0], indptr[a.indptr.shape[0] - 1], "indptr[-1]",
                                min_num_pages)
      .status();
}

Status check_plan_args(const BatchDecodePlanArgs& a) {
  Checker c;
  c.present(a.indices, "indices").dtype_in(a.indices, "indices", {DType::kInt32});
  c.ndim(a.indices, "indices", 1, "[num_pages_used]").contiguous(a.indices, "indices");
  if (!check_page_lengths(c, a.indptr, a.last_page_len, a.page_size).ok()) return c.status();
  const int64_t batch = a.indptr.shape[0] - 1;
  c.attention_heads(a.head_dim, "head_dim", a.num_qo_heads, a.num_kv_heads);
  c.require(a.q_dtype == DType::kFloat16 || a.q_dtype == DType::kBFloat16, [&] {
    return std::string("q_data_type: expected float16 or bfloat16, got ") + dtype_name(a.q_dtype);
  });
  c.require(a.kv_dtype == DType::kFloat16 || a.kv_dtype == DType::kBFloat16 ||
                a.kv_dtype == DType::kFloat8E4M3 || a.kv_dtype == DType::kFloat8E5M2,
            [&] {
              return std::string("kv_data_type: expected float16, bfloat16, float8_e4m3fn or float8_e5m2, got ") +
                     dtype_name(a.kv_dtype);
            });
  c.attention_options(a.pos_encoding_mode, a.window_left, a.logits_soft_cap, a.sm_scale, a.rope_scale,
                      a.rope_theta);
  detail::check_split_options(c, a.fixed_split_size, a.disable_split_kv, a.page_size, "pages");
  c.present(a.workspace, "workspace").on_cuda(a.workspace, "workspace").contiguous(a.workspace, "workspace");
  c.rows_aligned(a.workspace, "workspace", int(detail::kWorkspaceRegionAlign));
  if (a.indices.device >= 0) c.same_device(a.indices, "indices", a.workspace, "workspace");
  if (!c.ok()) return c.status();
  if (a.use_cuda_graph) {
    const int64_t num_indices = static_cast<const int32_t*>(a.indptr.data)[batch];
    device_int32_buffer(c, a.indices_buffer, "paged_kv_indices_buffer", num_indices, a.workspace);
    if (a.indptr_buffer.present())
      device_int32_buffer(c, a.indptr_buffer, "paged_kv_indptr_buffer", batch + 1, a.workspace);
    if (a.last_page_len_buffer.present())
      device_int32_buffer(c, a.last_page_len_buffer, "paged_kv_last_page_len_buffer", batch, a.workspace);
  }
  return c.status();
}

struct CapacityOp {
  const BatchDecodePlanArgs& a;
  bool tensor_cores;
  int device;
  uint32_t* max_items;
  uint32_t* tokens_per_step;
  template <int D, DType Q, DType KV>
  cudaError_t call() const {
    return detail::batch_decode_capacity<D, Q, KV>(
        uint32_t(a.num_qo_heads), uint32_t(a.num_kv_heads),
        a.pos_encoding_mode == PosEncodingMode::kRoPELlama, tensor_cores, device, max_items, tokens_per_step);
  }
};

struct RunOp {
  const detail::BatchDecodeProblem& problem;
  cudaStream_t stream;
  template <int D, DType Q, DType KV>
  cudaError_t call() const {
    return detail::run_batch_decode_kernel<D, Q, KV>(problem, stream);
  }
};

}  // namespace

Status plan_batch_decode(const BatchDecodePlanArgs& a, BatchDecodePlan* plan, cudaStream_t stream) {
  Status st = check_plan_args(a);
  if (!st.ok()) return st;
  int64_t min_num_pages = 0;
  st = check_page_ids(a, &min_num_pages);
  if (!st.ok()) return st;

  BatchDecodePlan::Impl& p = plan->impl();
  p.planned = false;
  const int device = a.workspace.device;
  detail::DeviceGuard guard(device);
  // q and KV of one dtype are one 16-bit type here (q is never fp8).
  const bool tensor_cores = flashinfer::attention::choose_tensor_cores(
      a.q_dtype == a.kv_dtype, a.pos_encoding_mode == PosEncodingMode::kRoPELlama, a.use_tensor_cores,
      uint32_t(a.num_qo_heads / a.num_kv_heads));
  uint32_t max_items = 0, tokens_per_step = 0;
  st = detail::cuda_status(
      detail::dispatch_attention(int(a.head_dim), a.q_dtype, a.kv_dtype,
                                 CapacityOp{a, tensor_cores, device, &max_items, &tokens_per_step}),
      "batch_decode plan");
  if (!st.ok()) return st;

  const uint32_t batch = uint32_t(a.indptr.shape[0] - 1);
  const auto* indptr = static_cast<const int32_t*>(a.indptr.data);
  flashinfer::attention::BatchDecodeSchedule schedule;
  // A CUDA-graph grid has room for any automatic plan of this batch size (schedule_batch_decode:
  // at most batch + max_items columns, and at most 2 * max_items of them split).
  const uint32_t graph_grid = a.use_cuda_graph ? batch + max_items : 0;
  const uint32_t fixed_chunk_len = detail::fixed_chunk_keys(a.fixed_split_size, a.disable_split_kv, a.page_size);
  flashinfer::attention::schedule_batch_decode(
      indptr, static_cast<const int32_t*>(a.last_page_len.data), batch, uint32_t(a.page_size),
      a.window_left, max_items, tokens_per_step,
      flashinfer::attention::decode_min_chunk_len(tensor_cores, tokens_per_step), fixed_chunk_len, graph_grid,
      &schedule);
  if (a.use_cuda_graph && schedule.work.size() > graph_grid) {
    return {StatusCode::kValueError,
            "fixed_split_size: chunks of " + std::to_string(a.fixed_split_size) + " pages make " +
                std::to_string(schedule.work.size()) + " grid columns, more than the CUDA graph's " +
                std::to_string(graph_grid) + " (batch size + " + std::to_string(max_items) +
                "); expected a larger fixed_split_size"};
  }

  // The schedule into the workspace (host page ids travel with it; in CUDA-graph mode the page
  // table and the index arrays go to the caller's buffers).
  detail::ScheduleUpload upload;
  upload.work = schedule.work.data();
  upload.work_bytes = schedule.work.size() * sizeof(DecodeWork);
  upload.state_indptr = schedule.state_indptr.data();
  upload.state_indptr_len = size_t(batch) + 1;
  upload.page_ids = a.indices;
  upload.num_page_ids = size_t(indptr[batch]);
  upload.use_cuda_graph = a.use_cuda_graph;
  upload.page_ids_buffer = a.indices_buffer;
  upload.graph_copies = {{a.indptr_buffer, indptr, size_t(batch) + 1},
                         {a.last_page_len_buffer, static_cast<const int32_t*>(a.last_page_len.data), batch}};
  upload.partial_states = a.use_cuda_graph ? 2 * max_items : schedule.num_partial_rows;
  upload.num_qo_heads = a.num_qo_heads;
  upload.head_dim = a.head_dim;
  st = detail::upload_schedule(upload, a.workspace, p.staging, stream, "batch_decode plan", &p.schedule);
  if (!st.ok()) return st;

  p.device = device;
  p.batch_size = batch;
  p.num_qo_heads = a.num_qo_heads;
  p.num_kv_heads = a.num_kv_heads;
  p.head_dim = a.head_dim;
  p.page_size = a.page_size;
  p.min_num_pages = min_num_pages;
  p.q_dtype = a.q_dtype;
  p.kv_dtype = a.kv_dtype;
  p.pos_encoding_mode = a.pos_encoding_mode;
  p.logits_soft_cap = a.logits_soft_cap;
  p.sm_scale = a.sm_scale > 0.f ? a.sm_scale : 1.f / std::sqrt(float(a.head_dim));
  p.rope_scale = a.rope_scale;
  p.rope_theta = a.rope_theta;
  p.chunk_len = schedule.chunk_len;
  p.num_work_items = uint32_t(std::count_if(schedule.work.begin(), schedule.work.end(),
                                            [](const DecodeWork& w) { return w.request >= 0; }));
  p.grid_size = uint32_t(schedule.work.size());
  p.num_partial_rows = schedule.num_partial_rows;
  p.split = a.use_cuda_graph || schedule.num_partial_rows > 0;
  p.tensor_cores = tensor_cores;
  p.planned = true;
  return Status::Ok();
}

Status schedule_batch_decode(const TensorView& indptr, const TensorView& last_page_len, int64_t page_size,
                             int32_t window_left, uint32_t max_items, uint32_t tokens_per_step,
                             uint32_t min_chunk_len, uint32_t fixed_chunk_len, uint32_t grid_size,
                             BatchDecodeSchedule* out) {
  Checker c;
  check_page_lengths(c, indptr, last_page_len, page_size);
  c.require(!c.ok() || (tokens_per_step >= 1 && max_items >= 1), [&] {
    return "tokens_per_step, max_items: expected positive values, got " + std::to_string(tokens_per_step) +
           ", " + std::to_string(max_items);
  });
  if (!c.ok()) return c.status();
  flashinfer::attention::BatchDecodeSchedule s;
  flashinfer::attention::schedule_batch_decode(
      static_cast<const int32_t*>(indptr.data), static_cast<const int32_t*>(last_page_len.data),
      uint32_t(indptr.shape[0] - 1), uint32_t(page_size), window_left, max_items, tokens_per_step,
      min_chunk_len, fixed_chunk_len, grid_size, &s);
  out->work.clear();
  for (const DecodeWork& w : s.work)
    out->work.push_back({w.request, w.partial_row, w.begin, w.end, w.kv_len, w.page_begin});
  out->state_indptr = s.state_indptr;
  out->chunk_len = s.chunk_len;
  return Status::Ok();
}

Status batch_decode(const BatchDecodeRunArgs& a, const BatchDecodePlan& plan, cudaStream_t stream) {
  const BatchDecodePlan::Impl& p = plan.impl();
  if (!p.planned)
    return {StatusCode::kValueError, "plan: expected plan() to have succeeded before run(), got no plan"};
  Checker c;
  const std::string q_dims = "[batch_size, num_qo_heads, head_dim] = (" + std::to_string(p.batch_size) +
                             ", " + std::to_string(p.num_qo_heads) + ", " + std::to_string(p.head_dim) +
                             ") from plan()";
  c.present(a.q, "q").on_cuda(a.q, "q").dtype_in(a.q, "q", {p.q_dtype});
  c.shape(a.q, "q", {p.batch_size, p.num_qo_heads, p.head_dim}, q_dims.c_str());
  c.last_dim_contiguous(a.q, "q").rows_aligned(a.q, "q", 16);
  c.require(!c.ok() || a.q.device == p.device, [&] {
    return "q: expected the device of plan()'s workspace (" + device_string(p.device) + "), got " +
           device_string(a.q.device);
  });
  c.require(a.kv_layout == KVLayout::kNHD || a.kv_layout == KVLayout::kHND, [&] {
    return "kv_layout: expected NHD (0) or HND (1), got " + std::to_string(int(a.kv_layout));
  });
  if (!c.ok()) return c.status();

  // One tensor [pages, 2, ...] is the k and v views at offsets 0 and stride[1] of its dim 1.
  const bool nhd = a.kv_layout == KVLayout::kNHD;
  const char* page_dims = nhd ? "[num_pages, page_size, num_kv_heads, head_dim]"
                              : "[num_pages, num_kv_heads, page_size, head_dim]";
  TensorView k = a.k_cache, v = a.v_cache;
  const char* k_name = "k_cache";
  const char* v_name = "v_cache";
  if (a.paged_kv_cache.present()) {
    const TensorView& kv = a.paged_kv_cache;
    k_name = v_name = "paged_kv_cache";
    c.on_cuda(kv, k_name).ndim(kv, k_name, 5, nhd ? "[num_pages, 2, page_size, num_kv_heads, head_dim]"
                                                  : "[num_pages, 2, num_kv_heads, page_size, head_dim]");
    c.require(!c.ok() || kv.shape[1] == 2, [&] {
      return "paged_kv_cache: expected 2 (k and v) in dimension 1, got shape " + shape_string(kv);
    });
    if (!c.ok()) return c.status();
    k = kv;
    k.ndim = 4;
    for (int i = 1; i < 4; ++i) {
      k.shape[i] = kv.shape[i + 1];
      k.strides[i] = kv.strides[i + 1];
    }
    v = k;
    v.data = static_cast<uint8_t*>(kv.data) + kv.strides[1] * int64_t(dtype_size(kv.dtype));
  }
  const int64_t num_pages = k.present() ? k.shape[0] : 0;
  const std::vector<int64_t> cache_shape =
      nhd ? std::vector<int64_t>{num_pages, p.page_size, p.num_kv_heads, p.head_dim}
          : std::vector<int64_t>{num_pages, p.num_kv_heads, p.page_size, p.head_dim};
  for (auto [t, name] : {std::pair{&k, k_name}, {&v, v_name}}) {
    c.present(*t, name).on_cuda(*t, name).dtype_in(*t, name, {p.kv_dtype});
    c.shape(*t, name, cache_shape, page_dims).last_dim_contiguous(*t, name);
    c.same_device(*t, name, a.q, "q").rows_aligned(*t, name, int(8 * dtype_size(p.kv_dtype)));
  }
  c.require(!c.ok() || num_pages >= p.min_num_pages, [&] {
    return std::string(k_name) + ": expected at least " + std::to_string(p.min_num_pages) +
           " pages (plan()'s page table refers to page " + std::to_string(p.min_num_pages - 1) +
           "), got " + std::to_string(num_pages);
  });
  c.present(a.out, "out").on_cuda(a.out, "out").dtype_in(a.out, "out", {p.q_dtype});
  c.shape(a.out, "out", {p.batch_size, p.num_qo_heads, p.head_dim}, "[batch_size, num_qo_heads, head_dim]");
  c.last_dim_contiguous(a.out, "out").rows_aligned(a.out, "out", 16).same_device(a.out, "out", a.q, "q");
  if (a.lse.present()) {
    c.on_cuda(a.lse, "lse").dtype_in(a.lse, "lse", {DType::kFloat32});
    c.shape(a.lse, "lse", {p.batch_size, p.num_qo_heads}, "[batch_size, num_qo_heads]");
    c.last_dim_contiguous(a.lse, "lse").same_device(a.lse, "lse", a.q, "q");
  }
  c.finite(a.q_scale, "q_scale", true, "a finite number").finite(a.k_scale, "k_scale", true, "a finite number");
  c.finite(a.v_scale, "v_scale", true, "a finite number");
  if (!c.ok()) return c.status();

  const int n_axis = nhd ? 1 : 2, h_axis = nhd ? 2 : 1;
  detail::BatchDecodeProblem pr{};
  pr.q = a.q.data;
  pr.out = a.out.data;
  pr.lse = a.lse.present() ? static_cast<float*>(a.lse.data) : nullptr;
  pr.q_stride_n = a.q.strides[0];
  pr.q_stride_h = a.q.strides[1];
  pr.o_stride_n = a.out.strides[0];
  pr.o_stride_h = a.out.strides[1];
  pr.lse_stride_n = a.lse.present() ? a.lse.strides[0] : 0;
  pr.k = k.data;
  pr.v = v.data;
  pr.k_stride_page = k.strides[0];
  pr.k_stride_n = k.strides[n_axis];
  pr.k_stride_h = k.strides[h_axis];
  pr.v_stride_page = v.strides[0];
  pr.v_stride_n = v.strides[n_axis];
  pr.v_stride_h = v.strides[h_axis];
  pr.schedule = p.schedule;
  pr.split = p.split;
  pr.tensor_cores = p.tensor_cores;
  pr.page_size = uint32_t(p.page_size);
  pr.batch_size = uint32_t(p.batch_size);
  pr.grid_size = p.grid_size;
  pr.num_qo_heads = uint32_t(p.num_qo_heads);
  pr.num_kv_heads = uint32_t(p.num_kv_heads);
  pr.pos_encoding_mode = p.pos_encoding_mode;
  pr.sm_scale = p.sm_scale * a.q_scale * a.k_scale;
  pr.logits_soft_cap = p.logits_soft_cap;
  pr.rope_scale = p.rope_scale;
  pr.rope_theta = p.rope_theta;
  pr.v_scale = a.v_scale;
  detail::DeviceGuard guard(p.device);
  return detail::cuda_status(
      detail::dispatch_attention(int(p.head_dim), p.q_dtype, p.kv_dtype, RunOp{pr, stream}), "batch_decode");
}

}  // namespace fi_core

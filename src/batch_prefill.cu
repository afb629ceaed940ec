// Host entry points of batch prefill (paged and ragged KV): plan (validation, tiling and
// scheduling, the asynchronous copy of the schedule into the workspace) and run (validation
// against the plan, dispatch to an instantiation). A .cu file only because the scheduler lives in
// the CUDA header batch_prefill.cuh.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "batch_plan.h"
#include "batch_prefill_problem.h"
#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "flashinfer/attention/batch_prefill.cuh"

namespace fi_core {

using flashinfer::attention::PrefillTiling;
using flashinfer::attention::PrefillWork;

struct BatchPrefillPlan::Impl {
  bool planned = false;
  // What the plan was made for; run() checks its arrays against these.
  int device = -1;
  bool paged = true;
  int64_t batch_size = 0, total_qo_len = 0, num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  int64_t min_num_pages = 0;  // paged: 1 + the largest page id in a host page table
  int64_t min_kv_rows = 0;    // ragged: kv_indptr[batch_size]
  DType q_dtype = DType::kFloat16, kv_dtype = DType::kFloat16;
  detail::PrefillVariant variant;  // k_scale and v_scale come with each run
  // The schedule and where it lives on the device.
  uint32_t query_rows = 0, num_tiles = 0, num_work_items = 0, grid_size = 0, merge_rows = 0;
  uint32_t chunk_len = 0, num_partial_states = 0;
  bool split = false;
  detail::DeviceSchedule schedule;
  // CUDA-graph mode: the launch shape fixed by the first such plan (0: none yet).
  int64_t graph_batch_size = 0;
  uint32_t graph_max_rows = 0, graph_query_rows = 0, graph_grid = 0, graph_states = 0;
  bool graph_custom_mask = false;  // the captured kernel reads a custom mask
  bool graph_rope = false;         // the captured kernel rotates q and k
  detail::PinnedStaging staging;  // the schedule's host copy
};

BatchPrefillPlan::BatchPrefillPlan() : impl_(new Impl) {}
BatchPrefillPlan::~BatchPrefillPlan() { delete impl_; }
bool BatchPrefillPlan::planned() const { return impl_->planned; }
bool BatchPrefillPlan::paged() const { return impl_->paged; }
int64_t BatchPrefillPlan::batch_size() const { return impl_->batch_size; }
int64_t BatchPrefillPlan::total_qo_len() const { return impl_->total_qo_len; }
uint32_t BatchPrefillPlan::query_tile_rows() const { return impl_->query_rows; }
uint32_t BatchPrefillPlan::num_tiles() const { return impl_->num_tiles; }
uint32_t BatchPrefillPlan::num_work_items() const { return impl_->num_work_items; }
uint32_t BatchPrefillPlan::grid_size() const { return impl_->grid_size; }
uint32_t BatchPrefillPlan::chunk_len() const { return impl_->chunk_len; }
uint32_t BatchPrefillPlan::num_partial_states() const { return impl_->num_partial_states; }
size_t BatchPrefillPlan::workspace_bytes() const { return impl_->schedule.workspace_bytes; }

namespace {

using detail::check_indptr;
using detail::device_int32_buffer;
using detail::host_int32_vector;

using detail::indexed;

std::string num(int64_t n) { return std::to_string(n); }

// The lengths of the batch, read on the host: query rows, KV lengths (from the page table or the
// ragged indptr), qo_len <= kv_len per request. Fills kv_len and kv_start per request.
Status check_lengths(const BatchPrefillPlanArgs& a, const char* kv_indptr_name, std::vector<uint32_t>* kv_len,
                     std::vector<int32_t>* kv_start) {
  Checker c;
  host_int32_vector(c, a.qo_indptr, "qo_indptr", "[batch_size + 1]");
  host_int32_vector(c, a.kv_indptr, kv_indptr_name, "[batch_size + 1]");
  if (a.paged) host_int32_vector(c, a.last_page_len, "paged_kv_last_page_len", "[batch_size]");
  if (!c.ok()) return c.status();
  const int64_t batch = a.qo_indptr.shape[0] - 1;
  c.require(batch >= 0, [] { return std::string("qo_indptr: expected batch_size + 1 >= 1 entries, got 0"); });
  c.shape(a.kv_indptr, kv_indptr_name, {batch + 1}, "[batch_size + 1] (qo_indptr has batch_size + 1)");
  if (a.paged) {
    c.shape(a.last_page_len, "paged_kv_last_page_len", {batch}, "[batch_size] (qo_indptr has batch_size + 1)");
    c.require(a.page_size >= 1 && a.page_size < (int64_t(1) << 31),
              [&] { return "page_size: expected a positive integer, got " + num(a.page_size); });
  }
  check_indptr(c, a.qo_indptr, "qo_indptr");
  check_indptr(c, a.kv_indptr, kv_indptr_name);
  if (!c.ok()) return c.status();
  const auto* qo_indptr = static_cast<const int32_t*>(a.qo_indptr.data);
  const auto* kv_indptr = static_cast<const int32_t*>(a.kv_indptr.data);
  const auto* last = static_cast<const int32_t*>(a.last_page_len.data);
  const int64_t group = a.num_qo_heads / std::max<int64_t>(a.num_kv_heads, 1);
  kv_len->resize(size_t(batch));
  kv_start->resize(size_t(batch));
  for (int64_t b = 0; b < batch && c.ok(); ++b) {
    const int64_t span = int64_t(kv_indptr[b + 1]) - kv_indptr[b];
    int64_t n = span;
    if (a.paged) {
      c.require(span == 0 || (last[b] >= 1 && last[b] <= a.page_size), [&] {
        return "paged_kv_last_page_len: expected values in [1, page_size = " + num(a.page_size) + "], got " +
               indexed("paged_kv_last_page_len", b) + " = " + num(last[b]);
      });
      n = span > 0 ? (span - 1) * a.page_size + last[b] : 0;
    }
    c.require(n < std::numeric_limits<int32_t>::max(), [&] {
      return std::string(kv_indptr_name) + ": expected kv_len below 2^31 per request, got " + num(n) +
             " for request " + num(b);
    });
    const int64_t qo_len = int64_t(qo_indptr[b + 1]) - qo_indptr[b];
    c.require(qo_len <= n, [&] {
      return "qo_indptr: expected qo_len <= kv_len for every request (query tokens are the last of their "
             "request's keys), got qo_len = " + num(qo_len) + " > kv_len = " + num(n) + " for request " + num(b);
    });
    // Packed query rows (token x group size) are divided with a fast divisor exact below 2^31.
    c.require(qo_len * group < std::numeric_limits<int32_t>::max(), [&] {
      return "qo_indptr: expected qo_len x (num_qo_heads / num_kv_heads) below 2^31, got " + num(qo_len) +
             " x " + num(group) + " for request " + num(b);
    });
    (*kv_len)[size_t(b)] = uint32_t(n);
    (*kv_start)[size_t(b)] = kv_indptr[b];
  }
  return c.status();
}

// Paged: the page ids, at least kv_indptr[-1] of them; on the host each >= 0 and `min_num_pages`
// = the largest + 1 (run() checks the cache against it). Ids on the GPU are used in place, unread.
Status check_page_ids(const BatchPrefillPlanArgs& a, int64_t* min_num_pages) {
  Checker c;
  c.present(a.indices, "paged_kv_indices").dtype_in(a.indices, "paged_kv_indices", {DType::kInt32});
  c.ndim(a.indices, "paged_kv_indices", 1, "[num_indices]").contiguous(a.indices, "paged_kv_indices");
  if (a.indices.device >= 0) c.same_device(a.indices, "paged_kv_indices", a.workspace, "workspace");
  *min_num_pages = 0;
  if (!c.ok()) return c.status();
  const auto* kv_indptr = static_cast<const int32_t*>(a.kv_indptr.data);
  return detail::check_page_ids(c, a.indices, "paged_kv_indices", kv_indptr[0], kv_indptr[a.kv_indptr.shape[0] - 1],
                                "paged_kv_indptr[-1]", min_num_pages)
      .status();
}

// The custom mask's layout: request b's [qo_len, kv_len] bits padded to whole bytes, the requests
// one after another (as segment_packbits writes them); mask_indptr [batch_size + 1] gets each
// request's first byte. Checks the packed mask against it, and in CUDA-graph mode the buffers it
// is copied into.
Status check_custom_mask(const BatchPrefillPlanArgs& a, const std::vector<uint32_t>& kv_len,
                         std::vector<int32_t>* mask_indptr) {
  Checker c;
  const auto* qo_indptr = static_cast<const int32_t*>(a.qo_indptr.data);
  const size_t batch = kv_len.size();
  std::vector<int64_t> offsets(batch + 1, 0);
  for (size_t b = 0; b < batch; ++b)
    offsets[b + 1] = offsets[b] + (int64_t(qo_indptr[b + 1] - qo_indptr[b]) * kv_len[b] + 7) / 8;
  const int64_t total = offsets[batch];
  const char* what = "the sum over requests of ceil(qo_len * kv_len / 8)";
  c.packed_mask(a.packed_custom_mask, "packed_custom_mask", total, false, what, a.workspace, "workspace");
  c.require(total <= std::numeric_limits<int32_t>::max(), [&] {
    return "packed_custom_mask: expected at most 2^31 - 1 bytes for the batch (its offsets are int32), got " +
           num(total);
  });
  if (a.use_cuda_graph) {
    if (c.ok() && !a.custom_mask_buffer.present())
      c.fail(StatusCode::kTypeError, "custom_mask_buf: expected a uint8 CUDA array (the wrapper's) for a custom mask "
                                     "with use_cuda_graph=True, got None");
    c.packed_mask(a.custom_mask_buffer, "custom_mask_buf", total, true, what, a.workspace, "workspace");
    if (a.mask_indptr_buffer.present())
      device_int32_buffer(c, a.mask_indptr_buffer, "mask_indptr_buf", int64_t(batch) + 1, a.workspace);
  }
  if (!c.ok()) return c.status();
  mask_indptr->assign(offsets.begin(), offsets.end());
  return Status::Ok();
}

Status check_plan_options(const BatchPrefillPlanArgs& a) {
  Checker c;
  c.present(a.workspace, "workspace").on_cuda(a.workspace, "workspace").contiguous(a.workspace, "workspace");
  // The schedule's regions are read with vector loads.
  c.rows_aligned(a.workspace, "workspace", int(detail::kWorkspaceRegionAlign));
  c.attention_heads(a.head_dim, "head_dim", a.num_qo_heads, a.num_kv_heads);
  // KV heads are the grid's y dimension.
  c.require(a.num_kv_heads <= 65535, [&] { return "num_kv_heads: expected at most 65535, got " + num(a.num_kv_heads); });
  c.require(a.q_dtype == DType::kFloat16 || a.q_dtype == DType::kBFloat16, [&] {
    return std::string("q_data_type: expected float16 or bfloat16, got ") + dtype_name(a.q_dtype);
  });
  c.require(!c.ok() || detail::prefill_dtypes_built(a.q_dtype, a.kv_dtype), [&] {
    return std::string("kv_data_type: expected the q data type (") + dtype_name(a.q_dtype) +
           ") or an fp8 type (float8_e4m3fn, float8_e5m2), got " + dtype_name(a.kv_dtype);
  });
  c.attention_options(a.pos_encoding_mode, a.window_left, a.logits_soft_cap, a.sm_scale, a.rope_scale, a.rope_theta);
  detail::check_split_options(c, a.fixed_split_size, a.disable_split_kv, a.paged ? a.page_size : 1,
                              a.paged ? "pages" : "keys");
  return c.status();
}

struct CapacityOp {
  bool paged;
  uint32_t query_rows, num_kv_heads;
  int device;
  uint32_t* max_items;
  template <int D, DType Q, DType KV>
  cudaError_t call() const {
    if constexpr (detail::prefill_dtypes_built(Q, KV)) {
      return paged ? detail::batch_prefill_capacity<D, Q, KV, true>(query_rows, num_kv_heads, device, max_items)
                   : detail::batch_prefill_capacity<D, Q, KV, false>(query_rows, num_kv_heads, device, max_items);
    } else {
      return cudaErrorInvalidValue;  // rejected by check_plan_options
    }
  }
};

struct RunOp {
  const detail::BatchPrefillProblem& problem;
  bool paged;
  cudaStream_t stream;
  template <int D, DType Q, DType KV>
  cudaError_t call() const {
    if constexpr (detail::prefill_dtypes_built(Q, KV)) {
      return paged ? detail::run_batch_prefill_kernel<D, Q, KV, true>(problem, stream)
                   : detail::run_batch_prefill_kernel<D, Q, KV, false>(problem, stream);
    } else {
      return cudaErrorInvalidValue;
    }
  }
};

// Tiles any batch of `batch` requests and `rows` query rows in total can have: whole-token tiles
// leave at most one partial tile per request.
uint32_t max_tiles(const PrefillTiling& tiling, uint64_t rows, uint64_t batch) {
  const uint64_t n = tiling.whole_tokens() ? flashinfer::math::ceil_div<uint64_t>(rows, tiling.tokens_per_tile()) + batch
                                           : rows * tiling.tiles_per_token();
  return uint32_t(std::min<uint64_t>(n, std::numeric_limits<int32_t>::max()));
}

}  // namespace

Status plan_batch_prefill(const BatchPrefillPlanArgs& a, BatchPrefillPlan* plan, cudaStream_t stream) {
  const char* kv_indptr_name = a.paged ? "paged_kv_indptr" : "kv_indptr";
  Status st = check_plan_options(a);
  if (!st.ok()) return st;
  std::vector<uint32_t> kv_len;
  std::vector<int32_t> kv_start;
  st = check_lengths(a, kv_indptr_name, &kv_len, &kv_start);
  if (!st.ok()) return st;
  int64_t min_num_pages = 0;
  if (a.paged) {
    st = check_page_ids(a, &min_num_pages);
    if (!st.ok()) return st;
  }
  const bool has_mask = a.packed_custom_mask.present();
  std::vector<int32_t> mask_indptr;
  if (has_mask) {
    st = check_custom_mask(a, kv_len, &mask_indptr);
    if (!st.ok()) return st;
  }

  BatchPrefillPlan::Impl& p = plan->impl();
  const uint32_t batch = uint32_t(a.qo_indptr.shape[0] - 1);
  const auto* qo_indptr = static_cast<const int32_t*>(a.qo_indptr.data);
  const auto* kv_indptr = static_cast<const int32_t*>(a.kv_indptr.data);
  const uint32_t total_rows = uint32_t(qo_indptr[batch]);
  const uint32_t group = uint32_t(a.num_qo_heads / a.num_kv_heads);
  const bool rope = a.pos_encoding_mode == PosEncodingMode::kRoPELlama;
  const bool graph_fixed = a.use_cuda_graph && p.graph_grid > 0;
  if (graph_fixed) {
    Checker c;
    c.require(int64_t(batch) == p.graph_batch_size, [&] {
      return "qo_indptr: expected batch_size + 1 = " + num(p.graph_batch_size + 1) +
             " entries (fixed by the first plan with use_cuda_graph), got " + num(batch + 1);
    });
    c.require(total_rows <= p.graph_max_rows, [&] {
      return "qo_indptr: expected at most " + num(p.graph_max_rows) +
             " query rows in total (qo_indptr[-1], fixed by the first plan with use_cuda_graph), got " +
             num(total_rows);
    });
    c.require(has_mask == p.graph_custom_mask, [&] {
      return p.graph_custom_mask
                 ? std::string("packed_custom_mask: expected a custom mask (the first plan with use_cuda_graph had "
                               "one, and the captured kernel reads it), got None")
                 : std::string("packed_custom_mask: expected None (the first plan with use_cuda_graph had no custom "
                               "mask, and the captured kernel ignores it), got a mask");
    });
    c.require(rope == p.graph_rope, [&] {
      return std::string("pos_encoding_mode: expected ") + (p.graph_rope ? "ROPE_LLAMA" : "NONE or ALIBI") +
             " (the first plan with use_cuda_graph fixed whether the captured kernel applies RoPE), got " +
             (rope ? "ROPE_LLAMA" : "NONE or ALIBI");
    });
    if (!c.ok()) return c.status();
  }
  {
    Checker c;
    if (a.use_cuda_graph && a.paged) {
      const int64_t num_indices = kv_indptr[batch];
      device_int32_buffer(c, a.indices_buffer, "paged_kv_indices_buffer", num_indices, a.workspace);
    }
    if (a.use_cuda_graph && a.qo_indptr_buffer.present())
      device_int32_buffer(c, a.qo_indptr_buffer, "qo_indptr_buffer", batch + 1, a.workspace);
    if (a.use_cuda_graph && a.kv_indptr_buffer.present())
      device_int32_buffer(c, a.kv_indptr_buffer, a.paged ? "paged_kv_indptr_buffer" : "kv_indptr_buffer", batch + 1,
                          a.workspace);
    if (a.use_cuda_graph && a.paged && a.last_page_len_buffer.present())
      device_int32_buffer(c, a.last_page_len_buffer, "paged_kv_last_page_len_buffer", batch, a.workspace);
    if (!c.ok()) return c.status();
  }

  p.planned = false;
  const int device = a.workspace.device;
  detail::DeviceGuard guard(device);
  const uint32_t query_rows =
      graph_fixed ? p.graph_query_rows
                  : flashinfer::attention::choose_query_rows(uint64_t(total_rows) * group, batch, uint32_t(a.head_dim),
                                                             has_mask || rope);
  const PrefillTiling tiling{group, query_rows};
  uint32_t max_items = 0;
  st = detail::cuda_status(
      detail::dispatch_attention(int(a.head_dim), a.q_dtype, a.kv_dtype,
                                 CapacityOp{a.paged, query_rows, uint32_t(a.num_kv_heads), device, &max_items}),
      "batch_prefill plan");
  if (!st.ok()) return st;

  // A CUDA-graph grid has room for any plan of this batch size and at most this many query rows:
  // every tile unsplit, or one wave of chunks; the merge covers every row.
  uint32_t graph_grid = 0, merge_rows = total_rows, graph_states = 0;
  if (a.use_cuda_graph) {
    const uint32_t max_rows = graph_fixed ? p.graph_max_rows : total_rows;
    graph_grid = std::max(max_items, max_tiles(tiling, max_rows, batch));
    graph_states = max_items * tiling.tokens_per_tile();
    if (graph_fixed && (graph_grid > p.graph_grid || graph_states > p.graph_states))
      return {StatusCode::kValueError,
              "use_cuda_graph: expected the heads and head_dim of the first plan with use_cuda_graph (its "
              "launch shape is fixed), got a plan that needs a larger grid"};
    graph_grid = graph_fixed ? p.graph_grid : graph_grid;
    graph_states = graph_fixed ? p.graph_states : graph_states;
    merge_rows = max_rows;
  }
  flashinfer::attention::BatchPrefillSchedule schedule;
  // A custom mask replaces the causal bound: every key up to kv_len may be visible.
  const uint32_t fixed_chunk_len =
      detail::fixed_chunk_keys(a.fixed_split_size, a.disable_split_kv, a.paged ? a.page_size : 1);
  flashinfer::attention::schedule_batch_prefill(qo_indptr, kv_len.data(), kv_start.data(), batch, tiling,
                                                a.causal && !has_mask, a.window_left, max_items, fixed_chunk_len,
                                                graph_grid, merge_rows, &schedule);
  if (a.use_cuda_graph && (schedule.work.size() > graph_grid || schedule.num_partial_states > graph_states)) {
    return {StatusCode::kValueError,
            "fixed_split_size: chunks of " + num(a.fixed_split_size) + (a.paged ? " pages" : " keys") + " make " +
                num(int64_t(schedule.work.size())) + " grid columns and " + num(schedule.num_partial_states) +
                " partial states, more than the CUDA graph's " + num(graph_grid) + " and " + num(graph_states) +
                " (one wave of chunks); expected a larger fixed_split_size"};
  }

  // The schedule into the workspace (host page ids travel with it; in CUDA-graph mode the page
  // table and the index arrays go to the caller's buffers). The mask bits stay where the caller has
  // them (CUDA-graph mode: copied to custom_mask_buf below).
  detail::ScheduleUpload upload;
  upload.work = schedule.work.data();
  upload.work_bytes = schedule.work.size() * sizeof(PrefillWork);
  upload.state_indptr = schedule.state_indptr.data();
  upload.state_indptr_len = schedule.state_indptr.size();
  if (has_mask) {
    upload.mask_indptr = mask_indptr.data();
    upload.mask_indptr_len = mask_indptr.size();
  }
  if (a.paged) {
    upload.page_ids = a.indices;
    upload.num_page_ids = size_t(kv_indptr[batch]);
    upload.page_ids_buffer = a.indices_buffer;
  }
  upload.use_cuda_graph = a.use_cuda_graph;
  upload.graph_copies = {{a.qo_indptr_buffer, qo_indptr, size_t(batch) + 1},
                         {a.kv_indptr_buffer, kv_indptr, size_t(batch) + 1}};
  if (a.paged)
    upload.graph_copies.push_back(
        {a.last_page_len_buffer, static_cast<const int32_t*>(a.last_page_len.data), size_t(batch)});
  if (has_mask) upload.graph_copies.push_back({a.mask_indptr_buffer, mask_indptr.data(), size_t(batch) + 1});
  upload.partial_states = a.use_cuda_graph ? graph_states : schedule.num_partial_states;
  upload.num_qo_heads = a.num_qo_heads;
  upload.head_dim = a.head_dim;
  st = detail::upload_schedule(upload, a.workspace, p.staging, stream, "batch_prefill plan", &p.schedule);
  if (!st.ok()) return st;
  if (a.use_cuda_graph && has_mask) {
    const size_t mask_bytes = size_t(mask_indptr.back());
    if (a.packed_custom_mask.data != a.custom_mask_buffer.data && mask_bytes > 0) {
      st = detail::cuda_status(cudaMemcpyAsync(a.custom_mask_buffer.data, a.packed_custom_mask.data, mask_bytes,
                                               cudaMemcpyDeviceToDevice, stream),
                               "batch_prefill plan: copy of the custom mask");
      if (!st.ok()) return st;
    }
  }

  if (a.use_cuda_graph && !graph_fixed) {
    p.graph_batch_size = batch;
    p.graph_max_rows = total_rows;
    p.graph_query_rows = query_rows;
    p.graph_grid = graph_grid;
    p.graph_states = graph_states;
    p.graph_custom_mask = has_mask;
    p.graph_rope = rope;
  }
  p.device = device;
  p.paged = a.paged;
  p.batch_size = batch;
  p.total_qo_len = total_rows;
  p.num_qo_heads = a.num_qo_heads;
  p.num_kv_heads = a.num_kv_heads;
  p.head_dim = a.head_dim;
  p.page_size = a.paged ? a.page_size : 0;
  p.min_num_pages = min_num_pages;
  p.min_kv_rows = a.paged ? 0 : kv_indptr[batch];
  p.q_dtype = a.q_dtype;
  p.kv_dtype = a.kv_dtype;
  detail::PrefillVariant& v = p.variant;
  v.causal = a.causal;
  v.window_left = a.window_left;
  v.custom_mask = has_mask ? static_cast<const uint8_t*>(a.use_cuda_graph ? a.custom_mask_buffer.data
                                                                          : a.packed_custom_mask.data)
                           : nullptr;
  v.use_alibi = a.pos_encoding_mode == PosEncodingMode::kALiBi;
  v.use_rope = rope;
  v.sm_scale = a.sm_scale > 0.f ? a.sm_scale : 1.f / std::sqrt(float(a.head_dim));
  v.logits_soft_cap = a.logits_soft_cap;
  v.rope_scale = a.rope_scale;
  v.rope_theta = a.rope_theta;
  p.query_rows = query_rows;
  p.num_tiles = schedule.num_tiles;
  p.num_work_items = uint32_t(std::count_if(schedule.work.begin(), schedule.work.end(),
                                            [](const PrefillWork& w) { return w.request >= 0; }));
  p.grid_size = uint32_t(schedule.work.size());
  p.merge_rows = merge_rows;
  p.chunk_len = schedule.chunk_len;
  p.num_partial_states = schedule.num_partial_states;
  p.split = a.use_cuda_graph || schedule.num_partial_states > 0;
  p.planned = true;
  return Status::Ok();
}

Status schedule_batch_prefill(const TensorView& qo_indptr, const TensorView& kv_lens, int64_t num_qo_heads,
                              int64_t num_kv_heads, bool causal, int32_t window_left, uint32_t query_tile_rows,
                              uint32_t max_items, uint32_t fixed_chunk_len, uint32_t grid_size,
                              uint32_t merge_rows, BatchPrefillSchedule* out) {
  Checker c;
  host_int32_vector(c, qo_indptr, "qo_indptr", "[batch_size + 1]");
  host_int32_vector(c, kv_lens, "kv_lens", "[batch_size]");
  check_indptr(c, qo_indptr, "qo_indptr");
  if (!c.ok()) return c.status();
  const int64_t batch = qo_indptr.shape[0] - 1;
  c.shape(kv_lens, "kv_lens", {batch}, "[batch_size] (qo_indptr has batch_size + 1)");
  c.require(num_kv_heads > 0 && num_qo_heads > 0 && num_qo_heads % num_kv_heads == 0, [&] {
    return "num_qo_heads: expected a positive multiple of num_kv_heads (" + num(num_kv_heads) + "), got " +
           num(num_qo_heads);
  });
  c.require(query_tile_rows == 0 || query_tile_rows == 16 || query_tile_rows == 64 || query_tile_rows == 128, [&] {
    return "query_tile_rows: expected 0 (automatic, as for head_dim 128), 16, 64 or 128, got " + num(query_tile_rows);
  });
  c.require(max_items >= 1, [] { return std::string("max_items: expected a positive value, got 0"); });
  if (!c.ok()) return c.status();
  const auto* qo = static_cast<const int32_t*>(qo_indptr.data);
  const auto* lens = static_cast<const int32_t*>(kv_lens.data);
  std::vector<uint32_t> kv_len(static_cast<size_t>(batch));
  std::vector<int32_t> kv_start(size_t(batch), 0);
  for (int64_t b = 0; b < batch && c.ok(); ++b) {
    c.require(lens[b] >= qo[b + 1] - qo[b], [&] {
      return "kv_lens: expected kv_len >= qo_len for every request, got " + indexed("kv_lens", b) + " = " +
             num(lens[b]) + " < qo_len = " + num(qo[b + 1] - qo[b]);
    });
    kv_len[size_t(b)] = uint32_t(std::max(lens[b], 0));
  }
  const uint32_t total_rows = batch > 0 ? uint32_t(qo[batch]) : 0;
  c.require(merge_rows == 0 || merge_rows >= total_rows, [&] {
    return "merge_rows: expected 0 or at least qo_indptr[-1] = " + num(total_rows) + ", got " + num(merge_rows);
  });
  if (!c.ok()) return c.status();
  const uint32_t group = uint32_t(num_qo_heads / num_kv_heads);
  const uint32_t rows = query_tile_rows > 0 ? query_tile_rows
                                            : flashinfer::attention::choose_query_rows(uint64_t(total_rows) * group,
                                                                                       uint64_t(batch), 128);
  flashinfer::attention::BatchPrefillSchedule s;
  flashinfer::attention::schedule_batch_prefill(qo, kv_len.data(), kv_start.data(), uint32_t(batch), {group, rows},
                                                causal, window_left, max_items, fixed_chunk_len, grid_size,
                                                std::max(merge_rows, total_rows), &s);
  out->work.clear();
  for (const PrefillWork& w : s.work)
    out->work.push_back({w.request, w.qo_begin, w.qo_len, w.kv_len, w.row_begin, w.row_end, w.kv_begin, w.kv_end,
                         w.partial_state, w.num_chunks, w.chunk});
  out->state_indptr = s.state_indptr;
  out->query_tile_rows = rows;
  out->chunk_len = s.chunk_len;
  out->num_tiles = s.num_tiles;
  return Status::Ok();
}

namespace {

// The paged cache of a run as k and v views [num_pages, page_size, H, D] (NHD) or [num_pages, H,
// page_size, D] (HND): one tensor [pages, 2, ...] is the two views at offsets 0 and stride[1].
Status paged_cache_views(const BatchPrefillRunArgs& a, const BatchPrefillPlan::Impl& p, TensorView* k,
                         TensorView* v, const char** k_name, const char** v_name) {
  Checker c;
  const bool nhd = a.kv_layout == KVLayout::kNHD;
  *k = a.k_cache;
  *v = a.v_cache;
  *k_name = "k_cache";
  *v_name = "v_cache";
  if (a.paged_kv_cache.present()) {
    const TensorView& kv = a.paged_kv_cache;
    *k_name = *v_name = "paged_kv_cache";
    c.on_cuda(kv, *k_name).ndim(kv, *k_name, 5, nhd ? "[num_pages, 2, page_size, num_kv_heads, head_dim]"
                                                    : "[num_pages, 2, num_kv_heads, page_size, head_dim]");
    c.require(!c.ok() || kv.shape[1] == 2, [&] {
      return "paged_kv_cache: expected 2 (k and v) in dimension 1, got shape " + shape_string(kv);
    });
    if (!c.ok()) return c.status();
    *k = kv;
    k->ndim = 4;
    for (int i = 1; i < 4; ++i) {
      k->shape[i] = kv.shape[i + 1];
      k->strides[i] = kv.strides[i + 1];
    }
    *v = *k;
    v->data = static_cast<uint8_t*>(kv.data) + kv.strides[1] * int64_t(dtype_size(kv.dtype));
  }
  const int64_t num_pages = k->present() ? k->shape[0] : 0;
  const std::vector<int64_t> shape = nhd ? std::vector<int64_t>{num_pages, p.page_size, p.num_kv_heads, p.head_dim}
                                         : std::vector<int64_t>{num_pages, p.num_kv_heads, p.page_size, p.head_dim};
  const char* dims = nhd ? "[num_pages, page_size, num_kv_heads, head_dim]" : "[num_pages, num_kv_heads, page_size, head_dim]";
  for (auto [t, name] : {std::pair{k, *k_name}, {v, *v_name}}) {
    c.present(*t, name).on_cuda(*t, name).dtype_in(*t, name, {p.kv_dtype});
    c.shape(*t, name, shape, dims).last_dim_contiguous(*t, name);
    c.same_device(*t, name, a.q, "q").rows_aligned(*t, name, 16);
  }
  c.require(!c.ok() || num_pages >= p.min_num_pages, [&] {
    return std::string(*k_name) + ": expected at least " + num(p.min_num_pages) +
           " pages (plan()'s page table refers to page " + num(p.min_num_pages - 1) + "), got " + num(num_pages);
  });
  return c.status();
}

// Ragged k and v: [kv_rows, H, D] (NHD) or [H, kv_rows, D] (HND) with kv_rows >= kv_indptr[-1].
Status ragged_views(const BatchPrefillRunArgs& a, const BatchPrefillPlan::Impl& p) {
  Checker c;
  const bool nhd = a.kv_layout == KVLayout::kNHD;
  const char* dims = nhd ? "[kv_indptr[-1], num_kv_heads, head_dim]" : "[num_kv_heads, kv_indptr[-1], head_dim]";
  const int n_axis = nhd ? 0 : 1;
  for (auto [t, name] : {std::pair{&a.k, "k"}, {&a.v, "v"}}) {
    c.present(*t, name).on_cuda(*t, name).dtype_in(*t, name, {p.kv_dtype}).ndim(*t, name, 3, dims);
    if (!c.ok()) return c.status();
    const int64_t rows = std::max(t->shape[n_axis], p.min_kv_rows);
    c.shape(*t, name, nhd ? std::vector<int64_t>{rows, p.num_kv_heads, p.head_dim}
                          : std::vector<int64_t>{p.num_kv_heads, rows, p.head_dim}, dims);
    c.last_dim_contiguous(*t, name).same_device(*t, name, a.q, "q").rows_aligned(*t, name, 16);
  }
  return c.status();
}

}  // namespace

Status batch_prefill(const BatchPrefillRunArgs& a, const BatchPrefillPlan& plan, cudaStream_t stream) {
  const BatchPrefillPlan::Impl& p = plan.impl();
  if (!p.planned)
    return {StatusCode::kValueError, "plan: expected plan() to have succeeded before run(), got no plan"};
  Checker c;
  c.present(a.q, "q").on_cuda(a.q, "q").dtype_in(a.q, "q", {p.q_dtype});
  if (!c.ok()) return c.status();
  // CUDA-graph mode: q may have more rows than this plan's (a buffer sized for the largest).
  const bool graph = p.graph_grid > 0;
  const int64_t rows = a.q.ndim == 3 && graph ? std::max(a.q.shape[0], p.total_qo_len) : p.total_qo_len;
  c.shape(a.q, "q", {rows, p.num_qo_heads, p.head_dim}, "[qo_indptr[-1], num_qo_heads, head_dim]");
  c.last_dim_contiguous(a.q, "q").rows_aligned(a.q, "q", 16);
  c.require(!c.ok() || a.q.device == p.device, [&] {
    return "q: expected the device of plan()'s workspace (" + device_string(p.device) + "), got " +
           device_string(a.q.device);
  });
  c.require(a.kv_layout == KVLayout::kNHD || a.kv_layout == KVLayout::kHND,
            [&] { return "kv_layout: expected NHD (0) or HND (1), got " + num(int(a.kv_layout)); });
  c.present(a.out, "out").on_cuda(a.out, "out").dtype_in(a.out, "out", {p.q_dtype});
  c.shape(a.out, "out", {rows, p.num_qo_heads, p.head_dim}, "[q.shape[0], num_qo_heads, head_dim]");
  c.last_dim_contiguous(a.out, "out").rows_aligned(a.out, "out", 16).same_device(a.out, "out", a.q, "q");
  if (a.lse.present()) {
    c.on_cuda(a.lse, "lse").dtype_in(a.lse, "lse", {DType::kFloat32});
    c.shape(a.lse, "lse", {rows, p.num_qo_heads}, "[q.shape[0], num_qo_heads]");
    c.last_dim_contiguous(a.lse, "lse").same_device(a.lse, "lse", a.q, "q");
  }
  c.finite(a.k_scale, "k_scale", true, "a finite number").finite(a.v_scale, "v_scale", true, "a finite number");
  if (!c.ok()) return c.status();

  const bool nhd = a.kv_layout == KVLayout::kNHD;
  detail::BatchPrefillProblem pr{};
  if (p.paged) {
    TensorView k, v;
    const char* k_name = nullptr;
    const char* v_name = nullptr;
    Status st = paged_cache_views(a, p, &k, &v, &k_name, &v_name);
    if (!st.ok()) return st;
    const int n_axis = nhd ? 1 : 2, h_axis = nhd ? 2 : 1;
    pr.k = k.data;
    pr.v = v.data;
    pr.k_stride_page = k.strides[0];
    pr.k_stride_n = k.strides[n_axis];
    pr.k_stride_h = k.strides[h_axis];
    pr.v_stride_page = v.strides[0];
    pr.v_stride_n = v.strides[n_axis];
    pr.v_stride_h = v.strides[h_axis];
  } else {
    Status st = ragged_views(a, p);
    if (!st.ok()) return st;
    const int n_axis = nhd ? 0 : 1, h_axis = nhd ? 1 : 0;
    pr.k = a.k.data;
    pr.v = a.v.data;
    pr.k_stride_n = a.k.strides[n_axis];
    pr.k_stride_h = a.k.strides[h_axis];
    pr.v_stride_n = a.v.strides[n_axis];
    pr.v_stride_h = a.v.strides[h_axis];
  }
  pr.q = a.q.data;
  pr.out = a.out.data;
  pr.lse = a.lse.present() ? static_cast<float*>(a.lse.data) : nullptr;
  pr.q_stride_n = a.q.strides[0];
  pr.q_stride_h = a.q.strides[1];
  pr.o_stride_n = a.out.strides[0];
  pr.o_stride_h = a.out.strides[1];
  pr.lse_stride_n = a.lse.present() ? a.lse.strides[0] : 0;
  pr.page_size = uint32_t(p.page_size);
  pr.schedule = p.schedule;
  pr.split = p.split;
  pr.query_rows = p.query_rows;
  pr.grid_size = p.grid_size;
  pr.merge_rows = p.merge_rows;
  pr.num_qo_heads = uint32_t(p.num_qo_heads);
  pr.num_kv_heads = uint32_t(p.num_kv_heads);
  pr.variant = p.variant;
  pr.variant.sm_scale *= a.k_scale;  // as in FlashInfer: k_scale scales the logits
  pr.variant.v_scale = a.v_scale;
  detail::DeviceGuard guard(p.device);
  return detail::cuda_status(
      detail::dispatch_attention(int(p.head_dim), p.q_dtype, p.kv_dtype, RunOp{pr, p.paged, stream}), "batch_prefill");
}

}  // namespace fi_core

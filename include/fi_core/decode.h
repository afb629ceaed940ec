// fi_core host API: decode attention.
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Single-request decode: one query token per head against a contiguous KV cache.
struct SingleDecodeArgs {
  TensorView q;    // [num_qo_heads, head_dim], fp16 or bf16
  TensorView k;    // [kv_len, num_kv_heads, head_dim] (NHD) or [num_kv_heads, kv_len, head_dim] (HND)
  TensorView v;    // like k; fp16, bf16, fp8 e4m3 or e5m2 (k and v alike)
  TensorView out;  // like q
  TensorView lse;  // optional float32 [num_qo_heads], base-2 log-sum-exp
  TensorView workspace;  // split-KV scratch of plan.workspace_bytes bytes (any dtype), if > 0
  KVLayout kv_layout = KVLayout::kNHD;
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  int32_t window_left = -1;      // -1: no sliding window
  float logits_soft_cap = 0.f;   // 0: off
  float sm_scale = 0.f;          // 0: 1 / sqrt(head_dim)
  float rope_scale = 1.f;
  float rope_theta = 1e4f;
  float q_scale = 1.f, k_scale = 1.f, v_scale = 1.f;  // fp8 dequantization scales
  // Tensor cores (1), CUDA cores (0) or -1: tensor cores for groups of 4 or more heads. Tensor
  // cores need q and KV of one 16-bit type and no RoPE; otherwise CUDA cores run.
  int32_t use_tensor_cores = -1;
};

struct SingleDecodePlanInfo {
  uint32_t num_chunks = 1;   // KV splits merged at the end
  uint32_t chunk_len = 0;
  size_t workspace_bytes = 0;
  bool tensor_cores = false;
};

// Validates `args` (workspace excepted) and sizes the split for the device that holds q.
Status plan_single_decode(const SingleDecodeArgs& args, SingleDecodePlanInfo* plan);
// Validates `args` and launches on `stream` (on q's device; the current device is restored).
Status single_decode(const SingleDecodeArgs& args, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Batch decode over a paged KV cache, in two steps: plan_batch_decode (host work: validation,
// scheduling, one asynchronous copy of the schedule to the GPU) and batch_decode (launches only:
// no allocation, no synchronization, capturable in a CUDA graph).
//
// Page table (CSR, host int32 arrays): request b owns pages indices[indptr[b]] ..
// indices[indptr[b + 1] - 1], the last filled to last_page_len[b] in [1, page_size], so
// kv_len = (pages - 1) * page_size + last_page_len. A request without pages has no keys: its
// output is 0 and its lse -inf (last_page_len is not read).
struct BatchDecodePlanArgs {
  TensorView indptr;         // host int32 [batch_size + 1], non-decreasing
  // int32 [>= indptr[batch_size]], page ids >= 0. On the host they are checked and copied with the
  // schedule; on the GPU they are used in place (not read by the plan, so neither checked nor
  // compared with the cache's size; keep them alive and unchanged until the runs are done).
  TensorView indices;
  TensorView last_page_len;  // host int32 [batch_size]
  // Device scratch the plan lives in (schedule, page table copy, split-KV partial states): any
  // dtype, counted in bytes; kept by the caller until the last run of this plan has finished.
  TensorView workspace;
  // CUDA-graph mode: the launch shape no longer depends on the plan (the grid is padded to one
  // wave, partial states always have room), so a graph captured after one plan replays correctly
  // after another of the same batch size. The page table is copied into `indices_buffer` (device
  // int32, caller-owned, fixed address); indptr_buffer and last_page_len_buffer, when given,
  // receive copies of indptr and last_page_len.
  bool use_cuda_graph = false;
  TensorView indptr_buffer, indices_buffer, last_page_len_buffer;
  int64_t num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  // Tensor cores (the query heads of a group as the rows of mma tiles) or CUDA cores: 1 / 0, or
  // -1 for the default: tensor cores for groups of 4 or more heads. Tensor cores need q and KV of
  // one 16-bit type and no RoPE; otherwise CUDA cores run whatever is asked.
  int32_t use_tensor_cores = -1;
  DType q_dtype = DType::kFloat16;
  DType kv_dtype = DType::kFloat16;
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  int32_t window_left = -1;
  float logits_soft_cap = 0.f, sm_scale = 0.f, rope_scale = 1.f, rope_theta = 1e4f;
  // How requests are cut into chunks, one CTA column each (FlashInfer's plan options). Default:
  // the batch's keys spread evenly over the GPU (one tensor-core CTA per SM, or every resident
  // CUDA-core CTA slot), in whole kernel steps. fixed_split_size > 0: chunks of that many pages,
  // so a request's output does not depend on the rest of the batch. disable_split_kv: every
  // request whole (no merge). At most one of the two; in CUDA-graph mode a fixed split must fit
  // the graph's grid (batch size + the columns of one spread).
  int64_t fixed_split_size = 0;
  bool disable_split_kv = false;
};

// The result of plan_batch_decode, consumed by batch_decode. Owns a pinned staging buffer.
class BatchDecodePlan {
 public:
  BatchDecodePlan();
  ~BatchDecodePlan();
  BatchDecodePlan(const BatchDecodePlan&) = delete;
  BatchDecodePlan& operator=(const BatchDecodePlan&) = delete;

  bool planned() const;
  int64_t batch_size() const;
  uint32_t chunk_len() const;         // keys per CTA
  uint32_t num_work_items() const;    // CTA columns with work (the grid may be padded)
  uint32_t grid_size() const;
  uint32_t num_partial_rows() const;  // split-KV partial states to merge
  bool tensor_cores() const;          // which kernel runs
  size_t workspace_bytes() const;     // of the workspace this plan uses

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  Impl* impl_;
};

Status plan_batch_decode(const BatchDecodePlanArgs& args, BatchDecodePlan* plan, cudaStream_t stream);

struct BatchDecodeRunArgs {
  TensorView q;  // [batch_size, num_qo_heads, head_dim], the plan's q dtype
  // The cache: paged_kv_cache [num_pages, 2, page_size, num_kv_heads, head_dim] (NHD) or
  // [num_pages, 2, num_kv_heads, page_size, head_dim] (HND); or k_cache and v_cache without the
  // "2" dimension. Any strides with a contiguous last dimension (a slice of a larger pool works).
  TensorView paged_kv_cache, k_cache, v_cache;
  KVLayout kv_layout = KVLayout::kNHD;
  TensorView out;  // like q
  TensorView lse;  // optional float32 [batch_size, num_qo_heads]
  float q_scale = 1.f, k_scale = 1.f, v_scale = 1.f;
};

Status batch_decode(const BatchDecodeRunArgs& args, const BatchDecodePlan& plan, cudaStream_t stream);

// The batch scheduler on its own, on the host (no GPU needed), for tests and tools: the grid
// columns plan_batch_decode would make for a page table, given how many columns the keys are
// spread over (max_items), the kernel step (tokens_per_step), the shortest automatic chunk
// (min_chunk_len), a fixed chunk length in keys (0: automatic) and, for CUDA-graph mode, the
// padded grid size.
struct BatchDecodeWorkItem {
  int32_t request;      // -1: padding
  int32_t partial_row;  // -1: writes the output directly
  uint32_t begin, end;  // keys of the request this column covers
  uint32_t kv_len;
  int32_t page_begin;
};
struct BatchDecodeSchedule {
  std::vector<BatchDecodeWorkItem> work;
  std::vector<int32_t> state_indptr;  // [batch_size + 1]: partial rows per request
  uint32_t chunk_len = 0;
};
Status schedule_batch_decode(const TensorView& indptr, const TensorView& last_page_len, int64_t page_size,
                             int32_t window_left, uint32_t max_items, uint32_t tokens_per_step,
                             uint32_t min_chunk_len, uint32_t fixed_chunk_len, uint32_t grid_size,
                             BatchDecodeSchedule* schedule);

}  // namespace fi_core

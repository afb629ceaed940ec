// fi_core host API: prefill / append attention.
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Single-request prefill: qo_len query tokens against kv_len >= qo_len keys of a contiguous
// (strided) KV cache; query row i sits at position i + kv_len - qo_len (append).
struct SinglePrefillArgs {
  TensorView q;    // [qo_len, num_qo_heads, head_dim], fp16 or bf16
  // [kv_len, num_kv_heads, head_dim] (NHD) or [num_kv_heads, kv_len, head_dim] (HND): q's dtype, or
  // fp8 (e4m3 or e5m2) scaled by k_scale / v_scale
  TensorView k;
  TensorView v;    // like k
  TensorView out;  // like q
  TensorView lse;  // optional float32 [qo_len, num_qo_heads], base-2 log-sum-exp
  // Optional custom mask: the [qo_len, kv_len] booleans (true: row i sees key j), row-major and
  // bit-packed in little bit order (element e is bit e % 8 of byte e / 8), uint8 CUDA
  // [ceil(qo_len * kv_len / 8)] (packbits(mask, bitorder="little")). It replaces `causal`; a
  // sliding window still applies on top of it. The heads of a token share its row.
  TensorView packed_custom_mask;
  KVLayout kv_layout = KVLayout::kNHD;
  bool causal = false;  // bottom-right aligned: row i sees keys j <= i + kv_len - qo_len
  // kRoPELlama: q and k rotated on the fly (LLaMA's rotate-half over the whole head_dim, frequency
  // of dims i and i + head_dim / 2 = theta^(-2i / head_dim) / rope_scale), query row i at position
  // i + kv_len - qo_len, key j at position j (FlashInfer's prefill).
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  int32_t window_left = -1;     // -1: no sliding window
  float logits_soft_cap = 0.f;  // 0: off
  float sm_scale = 0.f;         // 0: 1 / sqrt(head_dim)
  float rope_scale = 1.f;
  float rope_theta = 1e4f;
  // As FlashInfer: k_scale multiplies sm_scale (the logits, before a soft cap), v_scale the output.
  // Any KV dtype; meant for fp8 KV's dequantization.
  float k_scale = 1.f, v_scale = 1.f;
};

// Validates `args` and launches on `stream` (on q's device; the current device is restored).
Status single_prefill(const SinglePrefillArgs& args, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Batch prefill / append over a paged or ragged KV cache, in two steps like batch decode:
// plan_batch_prefill (host work: validation, tiling and scheduling, one asynchronous copy of the
// schedule to the GPU) and batch_prefill (launches only: no allocation, no synchronization,
// capturable in a CUDA graph).
//
// Request b owns query rows qo_indptr[b] .. qo_indptr[b + 1] - 1 of q and kv_len >= qo_len keys;
// its query row i sits at position i + kv_len - qo_len (causal masks are bottom-right aligned).
// Keys, paged: pages indices[kv_indptr[b]] .. indices[kv_indptr[b + 1] - 1], the last filled to
// last_page_len[b] in [1, page_size], so kv_len = (pages - 1) * page_size + last_page_len.
// Keys, ragged: rows kv_indptr[b] .. kv_indptr[b + 1] - 1 of k and v.
struct BatchPrefillPlanArgs {
  TensorView qo_indptr;  // host int32 [batch_size + 1], non-decreasing from >= 0
  bool paged = true;
  TensorView kv_indptr;  // host int32 [batch_size + 1]: page ranges (paged) or key rows (ragged)
  // Paged only: page ids, int32 [>= kv_indptr[batch_size]]. On the host they are checked (>= 0)
  // and copied with the schedule; on the GPU they are used in place (neither read nor checked by
  // the plan; keep them alive and unchanged until the runs are done).
  TensorView indices;
  TensorView last_page_len;  // paged only: host int32 [batch_size]
  int64_t page_size = 0;     // paged only
  // Device scratch the plan lives in (schedule, page table copy, split-KV partial states): any
  // dtype, counted in bytes; kept by the caller until the last run of this plan has finished.
  TensorView workspace;
  // CUDA-graph mode: the launch shape no longer depends on the plan, so a graph captured after one
  // plan replays correctly after another. The first such plan of a BatchPrefillPlan fixes the batch
  // size, the query tile and the most query rows (qo_indptr[batch_size]) later plans may have. The
  // page table is copied into `indices_buffer` (device int32, caller-owned, fixed address; paged
  // only); the other buffers, when given, receive copies of qo_indptr, kv_indptr, last_page_len.
  bool use_cuda_graph = false;
  TensorView qo_indptr_buffer, kv_indptr_buffer, indices_buffer, last_page_len_buffer;
  // Optional custom mask: request b's [qo_len, kv_len] booleans (true: row i sees key j), row-major
  // and bit-packed in little bit order (element e is bit e % 8 of byte e / 8), each request padded
  // to whole bytes and the requests concatenated: uint8 CUDA [sum of ceil(qo_len * kv_len / 8)]
  // (segment_packbits(mask, indptr, bitorder="little")); request b starts at byte mask_indptr[b],
  // computed here from the lengths. The mask replaces `causal`; a sliding window still applies on
  // top of it. The runs read it in place (keep it alive and unchanged until they are done); in
  // CUDA-graph mode it is copied into `custom_mask_buffer` (uint8 CUDA, room for the mask), and
  // the first such plan fixes whether plans have a mask. `mask_indptr_buffer` (int32 CUDA
  // [>= batch_size + 1]), when given, receives a copy of mask_indptr.
  TensorView packed_custom_mask, custom_mask_buffer, mask_indptr_buffer;
  int64_t num_qo_heads = 0, num_kv_heads = 0, head_dim = 0;
  DType q_dtype = DType::kFloat16;
  DType kv_dtype = DType::kFloat16;  // q's dtype, or fp8 (e4m3 or e5m2)
  bool causal = false;
  // kRoPELlama: as in SinglePrefillArgs, per request (query row i at i + kv_len - qo_len, key j at j).
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  int32_t window_left = -1;
  float logits_soft_cap = 0.f, sm_scale = 0.f, rope_scale = 1.f, rope_theta = 1e4f;
  // How query tiles are cut into KV chunks, one CTA column each (FlashInfer's plan options).
  // Default: unsplit when the tiles fill one wave, else the shortest chunk whose chunks fill it.
  // fixed_split_size > 0: chunks of that many pages (paged) or keys (ragged) from each tile's first
  // visible key, whatever the rest of the batch. disable_split_kv: every tile whole (no merge). At
  // most one of the two; in CUDA-graph mode a fixed split must fit the graph's grid and partial
  // states (those of one wave of chunks).
  int64_t fixed_split_size = 0;
  bool disable_split_kv = false;
};

// The result of plan_batch_prefill, consumed by batch_prefill. Owns a pinned staging buffer.
class BatchPrefillPlan {
 public:
  BatchPrefillPlan();
  ~BatchPrefillPlan();
  BatchPrefillPlan(const BatchPrefillPlan&) = delete;
  BatchPrefillPlan& operator=(const BatchPrefillPlan&) = delete;

  bool planned() const;
  bool paged() const;
  int64_t batch_size() const;
  int64_t total_qo_len() const;        // qo_indptr[batch_size]
  uint32_t query_tile_rows() const;    // packed (token x head) rows per CTA: 16, 64 or 128
  uint32_t num_tiles() const;          // query tiles of the batch (per KV head)
  uint32_t num_work_items() const;     // CTA columns with work (the grid may be padded)
  uint32_t grid_size() const;
  uint32_t chunk_len() const;          // keys per chunk of a split tile; 0: nothing split
  uint32_t num_partial_states() const; // split-KV partial states (per token and chunk) to merge
  size_t workspace_bytes() const;      // of the workspace this plan uses

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  Impl* impl_;
};

Status plan_batch_prefill(const BatchPrefillPlanArgs& args, BatchPrefillPlan* plan, cudaStream_t stream);

struct BatchPrefillRunArgs {
  TensorView q;  // [qo_indptr[batch_size], num_qo_heads, head_dim] (CUDA-graph mode: at least that many rows)
  // Paged: paged_kv_cache [num_pages, 2, page_size, num_kv_heads, head_dim] (NHD) or
  // [num_pages, 2, num_kv_heads, page_size, head_dim] (HND); or k_cache and v_cache without the
  // "2" dimension. Ragged: k and v [kv_indptr[batch_size], num_kv_heads, head_dim] (NHD) or
  // [num_kv_heads, kv_indptr[batch_size], head_dim] (HND) (more key rows are allowed). Any
  // strides with a contiguous last dimension; the plan's kv_dtype.
  TensorView paged_kv_cache, k_cache, v_cache;
  TensorView k, v;
  KVLayout kv_layout = KVLayout::kNHD;
  TensorView out;  // like q
  TensorView lse;  // optional float32 [q.shape[0], num_qo_heads]
  float k_scale = 1.f, v_scale = 1.f;  // as in SinglePrefillArgs
};

Status batch_prefill(const BatchPrefillRunArgs& args, const BatchPrefillPlan& plan, cudaStream_t stream);

// The batch scheduler on its own, on the host (no GPU needed), for tests and tools: the grid
// columns plan_batch_prefill would make for these lengths, given how many columns fill one wave
// (max_items), the query tile (16 or 64 rows; 0: chosen as the plan does), a fixed chunk length in
// keys (0: automatic) and, for CUDA-graph mode, the padded grid size and merge rows (0: unpadded).
struct BatchPrefillWorkItem {
  int32_t request;  // -1: padding
  uint32_t qo_begin, qo_len, kv_len;
  uint32_t row_begin, row_end;  // packed rows (token x group size + head in group) of the request
  uint32_t kv_begin, kv_end;    // keys of the request this column covers
  int32_t partial_state;        // -1: writes the output directly
  uint32_t num_chunks, chunk;
};
struct BatchPrefillSchedule {
  std::vector<BatchPrefillWorkItem> work;
  std::vector<int32_t> state_indptr;  // [merge rows + 1]: partial states per query token
  uint32_t query_tile_rows = 0;
  uint32_t chunk_len = 0;
  uint32_t num_tiles = 0;
};
Status schedule_batch_prefill(const TensorView& qo_indptr, const TensorView& kv_lens, int64_t num_qo_heads,
                              int64_t num_kv_heads, bool causal, int32_t window_left, uint32_t query_tile_rows,
                              uint32_t max_items, uint32_t fixed_chunk_len, uint32_t grid_size,
                              uint32_t merge_rows, BatchPrefillSchedule* schedule);

}  // namespace fi_core

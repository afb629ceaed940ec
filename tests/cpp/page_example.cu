// Uses paged KV-cache management and state merging from C++ without Python: the host API
// (validated; link libfi_core_kernels.a) and the header templates directly.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "fi_core/api.h"
#include "flashinfer/attention/merge_state.cuh"
#include "flashinfer/page.cuh"

// Host API: append one decode step (one token per request) to an fp16 HND cache of 16-token
// pages, then merge a shared-prefix attention result into the per-request one.
fi_core::Status decode_step_with_host_api(void* keys, void* values, void* cache, void* indptr,
                                          void* indices, void* last_page_len, void* append_indptr,
                                          void* seq_lens,
                                          void* batch_indices, void* positions, void* out, void* lse,
                                          void* prefix_out, void* prefix_lse, int batch, int pages,
                                          cudaStream_t stream) {
  using fi_core::DType;
  using View = fi_core::TensorView;  // data, dtype, device, ndim, shape, strides (elements)
  fi_core::SeqLensArgs lens;
  lens.kv_indptr = View{indptr, DType::kInt32, 0, 1, {batch + 1}, {1}};
  lens.kv_last_page_len = View{last_page_len, DType::kInt32, 0, 1, {batch}, {1}};
  lens.out = View{seq_lens, DType::kInt32, 0, 1, {batch}, {1}};
  lens.page_size = 16;
  fi_core::Status st = fi_core::get_seq_lens(lens, stream);
  if (!st.ok()) return st;

  fi_core::BatchIndicesPositionsArgs rows;
  rows.append_indptr = View{append_indptr, DType::kInt32, 0, 1, {batch + 1}, {1}};  // 0, 1, ..., batch
  rows.seq_lens = lens.out;
  rows.batch_indices = View{batch_indices, DType::kInt32, 0, 1, {batch}, {1}};
  rows.positions = View{positions, DType::kInt32, 0, 1, {batch}, {1}};
  rows.nnz = batch;
  st = fi_core::get_batch_indices_positions(rows, stream);
  if (!st.ok()) return st;

  fi_core::AppendPagedKVCacheArgs append;
  append.append_key = View{keys, DType::kFloat16, 0, 3, {batch, 8, 128}, {8 * 128, 128, 1}};
  append.append_value = View{values, DType::kFloat16, 0, 3, {batch, 8, 128}, {8 * 128, 128, 1}};
  append.batch_indices = rows.batch_indices;
  append.positions = rows.positions;
  const int64_t page_elems = 8 * 16 * 128;  // [8 heads, 16 slots, 128]
  append.paged_kv_cache =
      View{cache, DType::kFloat16, 0, 5, {pages, 2, 8, 16, 128}, {2 * page_elems, page_elems, 16 * 128, 128, 1}};
  append.kv_indices = View{indices, DType::kInt32, 0, 1, {pages}, {1}};
  append.kv_indptr = lens.kv_indptr;
  append.kv_last_page_len = lens.kv_last_page_len;
  append.kv_layout = fi_core::KVLayout::kHND;
  st = fi_core::append_paged_kv_cache(append, stream);
  if (!st.ok()) return st;

  fi_core::MergeStateInPlaceArgs merge;
  merge.v = View{out, DType::kFloat16, 0, 3, {batch, 32, 128}, {32 * 128, 128, 1}};
  merge.s = View{lse, DType::kFloat32, 0, 2, {batch, 32}, {32, 1}};
  merge.v_other = View{prefix_out, DType::kFloat16, 0, 3, {batch, 32, 128}, {32 * 128, 128, 1}};
  merge.s_other = View{prefix_lse, DType::kFloat32, 0, 2, {batch, 32}, {32, 1}};
  return fi_core::merge_state_in_place(merge, stream);
}

// Header templates: the engine fills the parameter structs itself (NHD cache, k and v apart).
cudaError_t decode_step_with_templates(const half* keys, const half* values, half* k_cache, half* v_cache,
                                       const int32_t* batch_indices, const int32_t* positions,
                                       const int32_t* indptr, const int32_t* indices, int32_t num_indices,
                                       half* out, float* lse, const half* prefix_out, const float* prefix_lse,
                                       uint32_t batch, int64_t pages, cudaStream_t stream) {
  namespace page = flashinfer::page;
  page::AppendPagedKVCacheParams append{};
  const int64_t row = 128 * sizeof(half);
  append.append_key = {reinterpret_cast<const char*>(keys), 8 * row, row};
  append.append_value = {reinterpret_cast<const char*>(values), 8 * row, row};
  append.k_cache = {reinterpret_cast<char*>(k_cache), 16 * 8 * row, 8 * row, row};
  append.v_cache = {reinterpret_cast<char*>(v_cache), 16 * 8 * row, 8 * row, row};
  append.batch_indices = {batch_indices, false};
  append.positions = {positions, false};
  append.kv_indptr = {indptr, false};
  append.kv_indices = {indices, false};
  append.num_indices = num_indices;
  append.num_pages = pages;
  append.batch_size = batch, append.page_size = 16, append.nnz = batch, append.num_heads = 8;
  append.row_bytes = uint32_t(row);
  cudaError_t err = page::AppendPagedKVCache(append, stream);
  if (err != cudaSuccess) return err;

  flashinfer::attention::MergeStateParams merge{};
  merge.v_a = merge.v_out = out;
  merge.s_a = merge.s_out = lse;
  merge.v_b = prefix_out;
  merge.s_b = prefix_lse;
  merge.v_a_strides = merge.v_b_strides = merge.v_out_strides = {32 * 128, 128};
  merge.s_a_strides = merge.s_b_strides = merge.s_out_strides = {32, 1};
  merge.num_pairs = batch * 32, merge.num_heads = 32, merge.head_dim = 128;
  return flashinfer::attention::MergeState<half>(merge, stream);
}

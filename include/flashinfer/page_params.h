// Parameters of the paged KV-cache kernels (page.cuh), in a plain C++ header so that host code
// compiled without nvcc can fill them directly.
#pragma once

#include <cstdint>

namespace flashinfer {
namespace page {

// An array of int32 or int64 indices: the dtype is the caller's choice, known at run time only.
struct IndexArray {
  const void* data;
  bool is_int64;
};

// The rows (head_dim contiguous elements) of the new tokens: token i, head h starts at
// base + i * token_stride + h * head_stride bytes.
struct TokenRows {
  const char* base;
  int64_t token_stride, head_stride;
};

// The rows of one side (keys or values) of a paged cache: page p, slot s (the token's place in
// its page), head h starts at base + p * page_stride + s * slot_stride + h * head_stride bytes.
// The NHD and HND layouts, a cache inside a larger pool and k/v halves of one tensor differ only
// in these numbers.
struct PagedRows {
  char* base;
  int64_t page_stride, slot_stride, head_stride;
};

// Copies token i's rows into page kv_indices[kv_indptr[b] + pos / page_size], slot
// pos % page_size, where b = batch_indices[i] and pos = positions[i].
struct AppendPagedKVCacheParams {
  TokenRows append_key, append_value;
  PagedRows k_cache, v_cache;
  IndexArray batch_indices, positions;  // [nnz]
  IndexArray kv_indptr;                 // [batch_size + 1]
  IndexArray kv_indices;                // [num_indices]
  int64_t num_indices;
  int64_t num_pages;  // pages in the cache: valid page indices are [0, num_pages)
  uint32_t batch_size, page_size;
  uint32_t nnz, num_heads;
  uint32_t row_bytes;  // head_dim * element size
};

// Token i of a ragged batch belongs to the request b with append_indptr[b] <= i <
// append_indptr[b + 1] and sits at position seq_lens[b] - append_indptr[b + 1] + i.
struct BatchIndicesPositionsParams {
  IndexArray append_indptr;  // [batch_size + 1]
  IndexArray seq_lens;       // [batch_size]
  int32_t* batch_indices;    // [nnz]
  int32_t* positions;        // [nnz]
  uint32_t batch_size, nnz;
};

// seq_lens[b] = (pages of b - 1) * page_size + kv_last_page_len[b], 0 for a request with no pages.
struct SeqLensParams {
  IndexArray kv_indptr;         // [batch_size + 1]
  IndexArray kv_last_page_len;  // [batch_size]
  int32_t* seq_lens;            // [batch_size]
  uint32_t batch_size, page_size;
};

}  // namespace page
}  // namespace flashinfer

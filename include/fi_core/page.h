// fi_core host API: paged KV-cache management (FlashInfer's flashinfer.page).
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Page table (CSR, as in FlashInfer): request b owns pages kv_indices[kv_indptr[b]], ...,
// kv_indices[kv_indptr[b + 1] - 1] in order; its token at position p lives in page
// kv_indices[kv_indptr[b] + p / page_size], slot p % page_size. Index arrays are 1-D, contiguous,
// int32 or int64, on the device of the data they index.

// Writes token i of append_key / append_value into the slot of position positions[i] of request
// batch_indices[i]. Values are copied unchanged: the cache has the dtype of append_key (float16,
// bfloat16, fp8 e4m3 or e5m2). The cache is paged_kv_cache, or else k_cache and v_cache. Pages,
// slots and heads may have any strides (a cache inside a larger pool; k and v apart, with
// different strides); head_dim must be contiguous. The indices are on the GPU, so the host does
// not read them: a token whose batch index, position (negative, or past the request's pages),
// page-table entry or page (outside the cache) is out of range is skipped. Of two tokens bound for
// one slot, either may win.
struct AppendPagedKVCacheArgs {
  TensorView append_key, append_value;  // [nnz, num_kv_heads, head_dim]
  TensorView batch_indices, positions;  // [nnz]
  // [num_pages, 2, page_size, num_kv_heads, head_dim] (NHD) or
  // [num_pages, 2, num_kv_heads, page_size, head_dim] (HND): keys at [:, 0], values at [:, 1].
  TensorView paged_kv_cache;
  // Or (paged_kv_cache absent) two arrays [num_pages, page_size, num_kv_heads, head_dim] (NHD) or
  // [num_pages, num_kv_heads, page_size, head_dim] (HND).
  TensorView k_cache, v_cache;
  TensorView kv_indices;  // [number of page-table entries]
  TensorView kv_indptr;   // [batch_size + 1]
  // [batch_size]: part of FlashInfer's signature, checked for shape and dtype; a token's slot
  // follows from its position alone.
  TensorView kv_last_page_len;
  KVLayout kv_layout = KVLayout::kNHD;
};
Status append_paged_kv_cache(const AppendPagedKVCacheArgs& args, cudaStream_t stream);

// Request and position of every token of a ragged batch whose request b appends tokens
// append_indptr[b] .. append_indptr[b + 1] - 1 as the last of its seq_lens[b] tokens:
// batch_indices[i] = b, positions[i] = seq_lens[b] - append_indptr[b + 1] + i. Tokens that no
// request covers (i >= append_indptr[batch_size]) get -1 in both, which the append skips.
struct BatchIndicesPositionsArgs {
  TensorView append_indptr;             // [batch_size + 1], non-decreasing
  TensorView seq_lens;                  // [batch_size]
  TensorView batch_indices, positions;  // int32 [nnz], written
  int64_t nnz = 0;                      // tokens: >= 0
};
Status get_batch_indices_positions(const BatchIndicesPositionsArgs& args, cudaStream_t stream);

// Sequence lengths: out[b] = (kv_indptr[b + 1] - kv_indptr[b] - 1) * page_size + kv_last_page_len[b],
// or 0 for a request with no pages.
struct SeqLensArgs {
  TensorView kv_indptr;         // [batch_size + 1]
  TensorView kv_last_page_len;  // [batch_size]
  TensorView out;               // int32 [batch_size]: seq_lens
  int64_t page_size = 0;        // >= 1
};
Status get_seq_lens(const SeqLensArgs& args, cudaStream_t stream);

}  // namespace fi_core

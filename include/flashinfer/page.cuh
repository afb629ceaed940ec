// Paged KV-cache management: appending the keys and values of new tokens to their pages, and the
// index conversions around it (batch indices and positions of a ragged batch, sequence lengths of
// a page table).
//
// Page table (CSR, as in FlashInfer): request b owns pages kv_indices[kv_indptr[b]],
// ..., kv_indices[kv_indptr[b + 1] - 1] in order, so its token at position p lives in page
// kv_indices[kv_indptr[b] + p / page_size], slot p % page_size.
//
// Appending converts nothing: it moves bytes, so one kernel serves every element type (fp16,
// bf16, fp8), with the widest access (up to 16 bytes) that every address, stride and row length
// allows. The indices live in GPU memory, where the host cannot check them without a
// synchronization; the kernel checks each token instead and skips (writes nothing for) a token
// whose request, position, page-table entry or page is out of range, so that no index can make it
// write outside the cache.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "math.cuh"
#include "page_params.h"

namespace flashinfer {
namespace page {

__device__ __forceinline__ int64_t load_index(IndexArray a, int64_t i) {
  return a.is_int64 ? static_cast<const int64_t*>(a.data)[i] : int64_t(static_cast<const int32_t*>(a.data)[i]);
}

// Page (in [0, num_pages)) and slot of append token i; false when the token has no valid place.
__device__ __forceinline__ bool locate_token(const AppendPagedKVCacheParams& p, uint32_t i, int64_t* page,
                                             uint32_t* slot) {
  const int64_t b = load_index(p.batch_indices, i), pos = load_index(p.positions, i);
  if (b < 0 || b >= int64_t(p.batch_size) || pos < 0) return false;
  const int64_t entry = load_index(p.kv_indptr, b) + pos / p.page_size;
  if (entry < 0 || entry >= p.num_indices || entry >= load_index(p.kv_indptr, b + 1)) return false;
  *page = load_index(p.kv_indices, entry);
  *slot = uint32_t(pos % p.page_size);
  return *page >= 0 && *page < p.num_pages;
}

constexpr uint32_t kAppendThreads = 128;

// A CTA holds blockDim.y tokens, blockDim.x threads each. A token's 2 * num_heads rows (keys, then
// values) are cut into Vec-sized pieces that its threads take round-robin: consecutive threads
// copy consecutive pieces of a row.
template <typename Vec>
__global__ void __launch_bounds__(kAppendThreads) append_paged_kv_cache_kernel(const AppendPagedKVCacheParams p) {
  const uint32_t token = blockIdx.x * blockDim.y + threadIdx.y;
  int64_t page;
  uint32_t slot;
  if (token >= p.nnz || !locate_token(p, token, &page, &slot)) return;
  const uint32_t vecs_per_row = p.row_bytes / sizeof(Vec);
  const uint32_t vecs = 2 * p.num_heads * vecs_per_row;
  for (uint32_t v = threadIdx.x; v < vecs; v += blockDim.x) {
    const uint32_t row = v / vecs_per_row, piece = v % vecs_per_row;
    const bool is_value = row >= p.num_heads;
    const int64_t head = is_value ? row - p.num_heads : row;
    const TokenRows src = is_value ? p.append_value : p.append_key;
    const PagedRows dst = is_value ? p.v_cache : p.k_cache;
    const Vec* from = reinterpret_cast<const Vec*>(src.base + token * src.token_stride + head * src.head_stride);
    Vec* to = reinterpret_cast<Vec*>(dst.base + page * dst.page_stride + slot * dst.slot_stride +
                                     head * dst.head_stride);
    to[piece] = from[piece];
  }
}

// The widest access (16, 8, 4, 2 or 1 bytes) that divides every row address: the base addresses,
// strides and the row length.
inline uint32_t append_access_bytes(const AppendPagedKVCacheParams& p) {
  const int64_t spans[] = {
      int64_t(p.row_bytes),
      int64_t(reinterpret_cast<uintptr_t>(p.append_key.base)), p.append_key.token_stride, p.append_key.head_stride,
      int64_t(reinterpret_cast<uintptr_t>(p.append_value.base)), p.append_value.token_stride, p.append_value.head_stride,
      int64_t(reinterpret_cast<uintptr_t>(p.k_cache.base)), p.k_cache.page_stride, p.k_cache.slot_stride, p.k_cache.head_stride,
      int64_t(reinterpret_cast<uintptr_t>(p.v_cache.base)), p.v_cache.page_stride, p.v_cache.slot_stride, p.v_cache.head_stride};
  uint32_t bytes = 16;
  for (int64_t span : spans)
    while (span % bytes != 0) bytes /= 2;
  return bytes;
}

inline cudaError_t AppendPagedKVCache(const AppendPagedKVCacheParams& p, cudaStream_t stream) {
  if (p.nnz == 0 || p.num_heads == 0 || p.row_bytes == 0) return cudaSuccess;
  const uint32_t access = append_access_bytes(p);
  const uint32_t vecs = 2 * p.num_heads * (p.row_bytes / access);
  uint32_t threads = 1;  // per token: a power of two, so that several small tokens share a CTA
  while (threads < vecs && threads < kAppendThreads) threads *= 2;
  const dim3 block(threads, kAppendThreads / threads);
  const dim3 grid(math::ceil_div(p.nnz, block.y));
  switch (access) {
    case 16: append_paged_kv_cache_kernel<uint4><<<grid, block, 0, stream>>>(p); break;
    case 8: append_paged_kv_cache_kernel<uint2><<<grid, block, 0, stream>>>(p); break;
    case 4: append_paged_kv_cache_kernel<uint32_t><<<grid, block, 0, stream>>>(p); break;
    case 2: append_paged_kv_cache_kernel<uint16_t><<<grid, block, 0, stream>>>(p); break;
    default: append_paged_kv_cache_kernel<uint8_t><<<grid, block, 0, stream>>>(p); break;
  }
  return cudaGetLastError();
}

constexpr uint32_t kIndexThreads = 256;

// One thread per token; tokens no request covers (past append_indptr[batch_size], or a table
// that is not non-decreasing) get batch index and position -1, which the append skips.
__global__ void __launch_bounds__(kIndexThreads) batch_indices_positions_kernel(const BatchIndicesPositionsParams p) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.nnz) return;
  // Binary search for the number of requests that start at or before token i.
  uint32_t lo = 0, hi = p.batch_size + 1;
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (load_index(p.append_indptr, mid) <= int64_t(i)) lo = mid + 1;
    else hi = mid;
  }
  const int64_t b = int64_t(lo) - 1;
  const int64_t end = b >= 0 && b < int64_t(p.batch_size) ? load_index(p.append_indptr, b + 1) : 0;
  const bool covered = int64_t(i) < end;
  p.batch_indices[i] = covered ? int32_t(b) : -1;
  p.positions[i] = covered ? int32_t(load_index(p.seq_lens, b) - end + i) : -1;
}

inline cudaError_t BatchIndicesPositions(const BatchIndicesPositionsParams& p, cudaStream_t stream) {
  if (p.nnz == 0) return cudaSuccess;
  batch_indices_positions_kernel<<<math::ceil_div(p.nnz, kIndexThreads), kIndexThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

__global__ void __launch_bounds__(kIndexThreads) seq_lens_kernel(const SeqLensParams p) {
  const uint32_t b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= p.batch_size) return;
  const int64_t pages = load_index(p.kv_indptr, b + 1) - load_index(p.kv_indptr, b);
  p.seq_lens[b] = pages > 0 ? int32_t((pages - 1) * p.page_size + load_index(p.kv_last_page_len, b)) : 0;
}

inline cudaError_t SeqLens(const SeqLensParams& p, cudaStream_t stream) {
  if (p.batch_size == 0) return cudaSuccess;
  seq_lens_kernel<<<math::ceil_div(p.batch_size, kIndexThreads), kIndexThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace page
}  // namespace flashinfer

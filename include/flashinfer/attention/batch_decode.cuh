// Batch decode over a paged KV cache: one query token per head for each request of a batch.
//
// Work is planned on the host (schedule_batch_decode): every request's visible keys are cut into
// chunks of one common length, chosen so that the whole batch fills the GPU in a single wave of
// decode CTAs (decode.cuh), and each chunk becomes one DecodeWork entry, i.e. one column of the
// grid. A request covered by one chunk writes its output directly; the chunks of a split request
// write partial states that the shared merge kernel (cascade.cuh) combines, driven by a per-request
// range of partial rows. The run reads the plan from device memory, so a captured CUDA graph can
// be replayed after a new plan for a batch of the same size.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../math.cuh"
#include "cascade.cuh"
#include "decode.cuh"
#include "decode_tc.cuh"

namespace flashinfer {
namespace attention {

// A request's keys and values in pages: token n lives in page pages[n / page_size], at slot
// n % page_size, and the page's (token, head) element is at page * stride_page + slot * stride_n.
template <typename DTypeKV>
struct PagedSequence {
  struct Location {
    int32_t page;
    uint32_t slot;
  };
  const DTypeKV* k;  // the page pool, offset to the CTA's KV head
  const DTypeKV* v;
  const int32_t* pages;
  int64_t k_stride_page, k_stride_n, v_stride_page, v_stride_n;
  math::FastDivmod page_size;

  __device__ __forceinline__ Location locate(uint32_t pos) const {
    uint32_t page_index, slot;
    page_size.divmod(pos, page_index, slot);
    return {__ldg(pages + page_index), slot};
  }
  __device__ __forceinline__ const DTypeKV* k_at(Location l) const {
    return k + l.page * k_stride_page + l.slot * k_stride_n;
  }
  __device__ __forceinline__ const DTypeKV* v_at(Location l) const {
    return v + l.page * v_stride_page + l.slot * v_stride_n;
  }
};

template <typename DTypeQ, typename DTypeKV, typename DTypeO>
struct BatchDecodeParams : DecodeCommonParams<DTypeQ, DTypeKV, DTypeO> {
  using Sequence = PagedSequence<DTypeKV>;
  const DTypeKV* k;  // page pool: (page, slot, head) at page * stride_page + slot * stride_n + head * stride_h
  const DTypeKV* v;
  int64_t k_stride_page, k_stride_n, k_stride_h, v_stride_page, v_stride_n, v_stride_h;
  const int32_t* page_table;  // the batch's page indices (CSR values)
  math::FastDivmod page_size;
  const DecodeWork* work_items;  // one per grid column

  __device__ __forceinline__ DecodeWork work() const { return work_items[blockIdx.x]; }
  __device__ __forceinline__ Sequence sequence(const DecodeWork& w, uint32_t kv_head) const {
    return {k + kv_head * k_stride_h, v + kv_head * v_stride_h, page_table + w.page_begin,
            k_stride_page, k_stride_n, v_stride_page, v_stride_n, page_size};
  }
};

// The host's plan of a batch.
struct BatchDecodeSchedule {
  std::vector<DecodeWork> work;        // grid columns, padded to the requested grid size
  std::vector<int32_t> state_indptr;   // [batch + 1]: partial rows of each request
  uint32_t chunk_len = 0;              // keys per chunk
  uint32_t num_partial_rows = 0;
};

// Request b holds pages indptr[b] .. indptr[b + 1] - 1, its last page filled to last_page_len[b];
// a request without pages has no keys. `max_items` is how many grid columns the keys are spread
// over (BatchDecode::capacity); chunk lengths are multiples of `tokens_per_step` and at least
// `min_chunk_len`. `grid_size` > 0 pads the grid to that many columns (CUDA-graph mode, where the
// launch shape is fixed at capture: it must be at least batch + max_items, the most columns an
// automatic plan makes). `fixed_chunk_len` > 0 replaces the automatic chunk length: every request
// is cut into chunks of that many keys from its first visible key, whatever the rest of the batch
// (FlashInfer's fixed_split_size, which makes a request's output independent of the batch; a
// length no request reaches keeps requests whole).
inline void schedule_batch_decode(const int32_t* indptr, const int32_t* last_page_len, uint32_t batch,
                                  uint32_t page_size, int32_t window_left, uint32_t max_items,
                                  uint32_t tokens_per_step, uint32_t min_chunk_len, uint32_t fixed_chunk_len,
                                  uint32_t grid_size, BatchDecodeSchedule* s) {
  std::vector<uint32_t> kv_len(batch), first(batch);
  uint32_t longest = 0;
  uint64_t total = 0;
  for (uint32_t b = 0; b < batch; ++b) {
    const int64_t pages = int64_t(indptr[b + 1]) - indptr[b];
    kv_len[b] = pages > 0 ? uint32_t((pages - 1) * page_size + last_page_len[b]) : 0;
    first[b] = visible_begin(kv_len[b], window_left);
    longest = std::max(longest, kv_len[b] - first[b]);
    total += kv_len[b] - first[b];
  }
  auto chunks_of = [&](uint32_t b, uint32_t chunk) {
    return std::max(1u, math::ceil_div(kv_len[b] - first[b], chunk));
  };
  // The automatic chunk spreads the batch's visible keys evenly over max_items columns
  // (decode_chunk_len): a request longer than that is split, at any batch size, so that one long
  // request among short ones does not hold up the grid; a batch whose requests all fit in one
  // chunk runs unsplit. Splitting further would only add columns beyond max_items, and states to
  // merge. Then there are at most total / chunk + batch <= max_items + batch columns.
  const uint32_t chunk = fixed_chunk_len > 0
                             ? std::min(fixed_chunk_len, std::max(longest, 1u))
                             : decode_chunk_len(total, longest, max_items, tokens_per_step, min_chunk_len);
  s->chunk_len = chunk;
  s->work.clear();
  s->state_indptr.assign(batch + 1, 0);
  uint32_t rows = 0;
  for (uint32_t b = 0; b < batch; ++b) {
    const uint32_t n = chunks_of(b, chunk);
    for (uint32_t c = 0; c < n; ++c) {
      DecodeWork w{};
      w.request = int32_t(b);
      w.partial_row = n > 1 ? int32_t(rows + c) : -1;
      w.begin = first[b] + c * chunk;
      w.end = std::min(w.begin + chunk, kv_len[b]);
      w.kv_len = kv_len[b];
      w.page_begin = indptr[b];
      s->work.push_back(w);
    }
    if (n > 1) rows += n;
    s->state_indptr[b + 1] = int32_t(rows);
  }
  s->num_partial_rows = rows;
  DecodeWork padding{};
  padding.request = -1;
  if (grid_size > s->work.size()) s->work.resize(grid_size, padding);
}

// Host side of batch decode: how many grid columns fit in a wave, and the launch of a planned
// batch, on CUDA cores or (q and KV of one 16-bit type) tensor cores.
template <uint32_t HEAD_DIM, typename DTypeQ, typename DTypeKV, typename DTypeO>
struct BatchDecode {
  using Params = BatchDecodeParams<DTypeQ, DTypeKV, DTypeO>;

  // Grid columns of one wave for this head configuration (each column is num_kv_heads x head
  // tiles CTAs), and the kernel's step, which chunk lengths are multiples of.
  static cudaError_t capacity(uint32_t num_qo_heads, uint32_t num_kv_heads, bool rope, bool tensor_cores,
                              int device, uint32_t* max_items, uint32_t* tokens_per_step) {
    uint32_t wave = 0, head_tiles = 1;
    const cudaError_t err = decode_launch_shape<HEAD_DIM, Params>(num_qo_heads / num_kv_heads, rope, tensor_cores,
                                                                  device, &wave, &head_tiles, tokens_per_step);
    *max_items = std::max(1u, wave / (num_kv_heads * head_tiles));
    return err;
  }

  // `p.work_items` holds grid_size entries and, when any request is split, `state_indptr`
  // [batch + 1] and p.partial_o / p.partial_lse its partial rows (all in device memory).
  static cudaError_t run(const Params& p, uint32_t grid_size, uint32_t batch, const int32_t* state_indptr,
                         bool split, bool tensor_cores, cudaStream_t stream) {
    if (grid_size == 0) return cudaSuccess;
    cudaError_t err = launch_decode<HEAD_DIM>(p, tensor_cores, grid_size, stream);
    if (err != cudaSuccess || !split) return err;
    auto merge = split_kv_merge<HEAD_DIM>(p);
    merge.state_indptr = state_indptr;
    merge.num_rows = batch;
    return MergeStates(merge, stream, /*after_producer=*/true);
  }
};

}  // namespace attention
}  // namespace flashinfer

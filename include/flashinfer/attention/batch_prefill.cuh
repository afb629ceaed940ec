// Batch prefill / append over a ragged (contiguous per request) or paged KV cache.
//
// Work is planned on the host (schedule_batch_prefill): every request's packed query rows are cut
// into tiles (PrefillTiling), each tile covering the keys its rows see. When the tiles alone would
// leave the GPU underfilled, every tile's keys are cut into chunks of one common length (whole
// kernel steps), the shortest whose chunks still fit one wave; each (tile, chunk) becomes one
// PrefillWork, i.e. one column of the grid (x the KV heads). Columns are ordered longest first,
// so that the short ones fill the tail. A tile covered by one chunk writes its output directly;
// the chunks of a split tile write partial states per (token, head) that the shared merge kernel
// (cascade.cuh) combines, driven by a per-token range of states (state_indptr). The run reads the
// plan from device memory, so a captured CUDA graph can be replayed after a new plan.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../math.cuh"
#include "batch_decode.cuh"
#include "cascade.cuh"
#include "prefill.cuh"

namespace flashinfer {
namespace attention {

// Ragged KV: request b's keys are rows kv_start .. kv_start + kv_len - 1 of k and v.
template <typename T, typename TKV = T>
struct BatchPrefillRaggedParams : PrefillCommonParams<T, TKV> {
  using Sequence = StridedSequence<TKV>;
  const TKV* k;  // key row n of kv head h at n * k_stride_n + h * k_stride_h (NHD or HND)
  const TKV* v;
  int64_t k_stride_n, k_stride_h, v_stride_n, v_stride_h;
  const PrefillWork* work_items;  // one per grid column

  __device__ __forceinline__ PrefillWork work() const { return work_items[blockIdx.x]; }
  __device__ __forceinline__ Sequence sequence(const PrefillWork& w, uint32_t kv_head) const {
    return {k + w.kv_start * k_stride_n + kv_head * k_stride_h, v + w.kv_start * v_stride_n + kv_head * v_stride_h,
            k_stride_n, v_stride_n};
  }
};

// Paged KV: request b's pages are page_table[kv_start ...] (PagedSequence).
template <typename T, typename TKV = T>
struct BatchPrefillPagedParams : PrefillCommonParams<T, TKV> {
  using Sequence = PagedSequence<TKV>;
  const TKV* k;  // page pool: (page, slot, head) at page * stride_page + slot * stride_n + head * stride_h
  const TKV* v;
  int64_t k_stride_page, k_stride_n, k_stride_h, v_stride_page, v_stride_n, v_stride_h;
  const int32_t* page_table;  // the batch's page indices (CSR values)
  math::FastDivmod page_size;
  const PrefillWork* work_items;

  __device__ __forceinline__ PrefillWork work() const { return work_items[blockIdx.x]; }
  __device__ __forceinline__ Sequence sequence(const PrefillWork& w, uint32_t kv_head) const {
    return {k + kv_head * k_stride_h, v + kv_head * v_stride_h, page_table + w.kv_start,
            k_stride_page, k_stride_n, v_stride_page, v_stride_n, page_size};
  }
};

// Below this many keys per chunk a split's partial states and merge cost more than it gains.
constexpr uint32_t kMinPrefillChunkLen = 256;

// The host's plan of a batch.
struct BatchPrefillSchedule {
  std::vector<PrefillWork> work;      // grid columns, longest first, padded to the requested grid size
  std::vector<int32_t> state_indptr;  // [merge_rows + 1]: partial states of each query token
  uint32_t chunk_len = 0;             // keys per chunk (0: no request is split)
  uint32_t num_tiles = 0;
  uint32_t num_partial_states = 0;
};

// The batch: request b owns query rows qo_indptr[b] .. qo_indptr[b + 1] - 1 and kv_len[b] >=
// qo_len keys, starting at kv_start[b] (ragged: key row; paged: page-table entry); with a custom
// mask `causal` must be false (the mask, not the diagonal, decides which keys a row sees). `max_items` is
// how many grid columns fit in one wave; `grid_size` > 0 pads the grid to that many columns and
// `merge_rows` (>= qo_indptr[batch]) sizes state_indptr (CUDA-graph mode, where both are fixed at
// capture: grid_size must be at least max(max_items, the tiles of any batch planned)).
// `fixed_chunk_len` > 0 replaces the automatic chunk length: every tile's keys are cut into chunks
// of that many from the tile's first visible key, whatever the rest of the batch (FlashInfer's
// fixed_split_size; a length no tile reaches keeps every tile whole).
inline void schedule_batch_prefill(const int32_t* qo_indptr, const uint32_t* kv_len, const int32_t* kv_start,
                                   uint32_t batch, PrefillTiling tiling, bool causal, int32_t window_left,
                                   uint32_t max_items, uint32_t fixed_chunk_len, uint32_t grid_size,
                                   uint32_t merge_rows, BatchPrefillSchedule* s) {
  constexpr uint32_t kStepKeys = 64;  // PrefillTraits::kStepKeys: chunks are whole kernel steps
  struct TileKeys {
    uint32_t request, row_begin, row_end, key_begin, key_end;
  };
  std::vector<TileKeys> tiles;
  uint32_t longest = 0;
  for (uint32_t b = 0; b < batch; ++b) {
    const uint32_t qo_len = uint32_t(qo_indptr[b + 1] - qo_indptr[b]);
    const PrefillMask mask{kv_len[b], kv_len[b] - qo_len, window_left, causal};
    const uint32_t n = tiling.num_tiles(qo_len);
    for (uint32_t i = 0; i < n; ++i) {
      TileKeys t{b, 0, 0, 0, 0};
      tiling.rows(i, qo_len, &t.row_begin, &t.row_end);
      t.key_begin = mask.key_begin(t.row_begin / tiling.group_size);
      t.key_end = mask.key_end((t.row_end - 1) / tiling.group_size);
      longest = std::max(longest, t.key_end - t.key_begin);
      tiles.push_back(t);
    }
  }
  s->num_tiles = uint32_t(tiles.size());

  // Chunk length: unsplit when the tiles fill the wave; else the shortest (in kernel steps, at
  // least kMinPrefillChunkLen) whose chunks all fit in one wave, if it is short enough to pay. With the longest tile in one
  // chunk the tiles fit, so the search always ends.
  auto chunks_of = [](const TileKeys& t, uint32_t chunk) {
    return std::max(1u, math::ceil_div(t.key_end - t.key_begin, chunk));
  };
  const uint32_t longest_steps = math::ceil_div(std::max(longest, 1u), kStepKeys);
  uint32_t steps = longest_steps;
  if (fixed_chunk_len == 0 && tiles.size() < max_items) {
    auto total_chunks = [&](uint32_t chunk) {
      uint64_t n = 0;
      for (const TileKeys& t : tiles) n += chunks_of(t, chunk);
      return n;
    };
    uint32_t lo = std::min(math::ceil_div(kMinPrefillChunkLen, kStepKeys), longest_steps), hi = longest_steps;
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo) / 2;
      if (total_chunks(mid * kStepKeys) <= max_items) hi = mid;
      else lo = mid + 1;
    }
    // A split that shortens the longest column by less than a quarter does not pay for its merge
    // (a grid just short of a wave, e.g. 128 long tiles on 132 columns).
    steps = 4 * lo > 3 * longest_steps ? longest_steps : lo;
  }
  const uint32_t chunk = fixed_chunk_len > 0 ? std::min(fixed_chunk_len, std::max(longest, 1u)) : steps * kStepKeys;

  // Partial states, token by token in batch order (the merge's CSR): every token of a split tile
  // gets one per chunk. The tiles of a token spread over several tiles share its states.
  const uint32_t nnz = batch > 0 ? uint32_t(qo_indptr[batch]) : 0;
  std::vector<int32_t> states_of_token(std::max(merge_rows, nnz), 0);
  for (const TileKeys& t : tiles) {
    const uint32_t n = chunks_of(t, chunk);
    if (n == 1) continue;
    const uint32_t first = uint32_t(qo_indptr[t.request]);
    for (uint32_t token = t.row_begin / tiling.group_size; token <= (t.row_end - 1) / tiling.group_size; ++token)
      states_of_token[first + token] = int32_t(n);
  }
  s->state_indptr.assign(states_of_token.size() + 1, 0);
  for (size_t i = 0; i < states_of_token.size(); ++i)
    s->state_indptr[i + 1] = s->state_indptr[i] + states_of_token[i];
  s->num_partial_states = uint32_t(s->state_indptr.back());
  s->chunk_len = s->num_partial_states > 0 ? chunk : 0;

  s->work.clear();
  for (const TileKeys& t : tiles) {
    const uint32_t n = chunks_of(t, chunk);
    const uint32_t qo_begin = uint32_t(qo_indptr[t.request]);
    for (uint32_t c = 0; c < n; ++c) {
      PrefillWork w{};
      w.request = int32_t(t.request);
      w.qo_begin = qo_begin;
      w.qo_len = uint32_t(qo_indptr[t.request + 1]) - qo_begin;
      w.kv_len = kv_len[t.request];
      w.row_begin = t.row_begin;
      w.row_end = t.row_end;
      w.kv_begin = t.key_begin + c * chunk;
      w.kv_end = std::min(w.kv_begin + chunk, t.key_end);
      w.kv_start = kv_start[t.request];
      w.partial_state = n > 1 ? s->state_indptr[qo_begin + t.row_begin / tiling.group_size] : -1;
      w.num_chunks = n;
      w.chunk = c;
      s->work.push_back(w);
    }
  }
  // Longest work first: the short columns then fill the tail of the grid.
  std::stable_sort(s->work.begin(), s->work.end(), [](const PrefillWork& a, const PrefillWork& b) {
    return uint64_t(a.kv_end - a.kv_begin) * (a.row_end - a.row_begin) >
           uint64_t(b.kv_end - b.kv_begin) * (b.row_end - b.row_begin);
  });
  PrefillWork padding{};
  padding.request = -1;
  if (grid_size > s->work.size()) s->work.resize(grid_size, padding);
}

// Host side of batch prefill for one Problem (ragged or paged): how many grid columns fit in a
// wave, and the launch of a planned batch (kernel, then the merge of split tiles' states).
template <uint32_t HEAD_DIM, typename Problem>
struct BatchPrefill {
  using Params = Problem;
  using Kernels = PrefillKernels<HEAD_DIM, Problem>;

  // Grid columns of one wave (each column is num_kv_heads CTAs of the query_rows kernel).
  static cudaError_t capacity(uint32_t query_rows, uint32_t num_kv_heads, int device, uint32_t* max_items) {
    uint32_t wave = 0;
    const cudaError_t err = Kernels::wave_ctas(query_rows, device, &wave);
    *max_items = std::max(1u, wave / std::max(num_kv_heads, 1u));
    return err;
  }

  // `p.work_items` holds grid_size entries and, when `split`, `state_indptr` [merge_rows + 1]
  // and p.partial_o / p.partial_lse the partial states (all in device memory).
  static cudaError_t run(const Params& p, uint32_t query_rows, uint32_t grid_size, uint32_t merge_rows,
                         const int32_t* state_indptr, bool split, cudaStream_t stream) {
    if (grid_size == 0) return cudaSuccess;
    cudaError_t err = Kernels::launch(p, query_rows, grid_size, stream);
    if (err != cudaSuccess || !split) return err;
    auto merge = split_kv_merge<HEAD_DIM>(p);
    merge.state_indptr = state_indptr;
    merge.num_rows = merge_rows;
    return MergeStates(merge, stream, /*after_producer=*/true);
  }
};

}  // namespace attention
}  // namespace flashinfer

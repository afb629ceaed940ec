// Sorting-free sampling from probability rows, with optional top-k, top-p and min-p filters, and
// the matching renormalization (top_k_renorm_probs / top_p_renorm_probs).
//
// One CTA per row. Every filter keeps the tokens whose probability is >= a threshold, and each
// threshold is found without sorting: non-negative float32 values order like their bit patterns,
// so a bisection over the 32-bit key, with one streamed pass over the row and one CTA-wide
// reduction per step, finds it exactly (at most 31 steps):
//   top-k: the largest key t with count(p >= t) >= k          (the k-th largest value)
//   top-p: the largest key t with sum(p >= t) >= top_p * mass  (mass of the row, or of the top-k
//          set when top-k is applied first)
//   min-p: min_p * max(p)
// The token is then drawn by inverse transform over the kept tokens: u ~ U(0, 1] from
// Philox4x32-10 (key = seed, counter = (offset, output row)), and the first token whose running sum of kept
// probabilities reaches u * (kept mass), found chunk by chunk with a CTA scan.
//
// Defined behaviour on odd input (documented in the Python API):
//  - NaN, +-inf and negative probabilities count as 0.
//  - A row with no positive finite probability samples token 0 (renormalized: a row of zeros).
//  - Values tied at a threshold are all kept: top-k keeps more than k tokens when the k-th
//    largest value is tied.
//  - Per-row filter values: top_k <= 0 or >= vocab keeps every token; top_p >= 1 or NaN keeps
//    every token, top_p <= 0 keeps only the largest; min_p <= 0 or NaN keeps every token,
//    min_p > 1 acts as 1.
//  - An `indices` entry outside [0, num_prob_rows) samples token 0 without reading anything.
// Results depend only on the inputs, the seed and the offset (all reductions have a fixed order).
#pragma once

#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "sampling_params.h"
#include "vec_dtypes.cuh"

namespace flashinfer {
namespace sampling {

constexpr uint32_t kSamplingThreads = 1024;
constexpr uint32_t kElemsPerThread = 8;  // two 16-byte loads per thread and chunk
constexpr uint32_t kChunk = kSamplingThreads * kElemsPerThread;


// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), first word of the
// block for counter (offset, row) and key seed. Written out here because the toolkit used for
// building need not ship cuRAND's headers.
__device__ __forceinline__ uint32_t philox_first_word(uint64_t seed, uint64_t offset, uint32_t row) {
  uint32_t c0 = uint32_t(offset), c1 = uint32_t(offset >> 32), c2 = row, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// Uniform in (0, 1]: 24 random bits, never 0, so the drawn target mass is positive.
__device__ __forceinline__ float uniform_open_closed(uint64_t seed, uint64_t offset, uint32_t row) {
  return float((philox_first_word(seed, offset, row) >> 8) + 1u) * (1.f / 16777216.f);
}

__device__ __forceinline__ float sanitize(float p) {
  return (p > 0.f && p <= FLT_MAX) ? p : 0.f;  // false for NaN and inf
}

// Sum / max / min of v over the CTA, returned to every thread. Fixed order: deterministic.
struct Sum {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a + b; }
};
struct Max {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};
struct Min {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a < b ? a : b; }
};

template <typename V, typename Op>
__device__ __forceinline__ V block_all_reduce(V v, Op op, V* warp_partials) {
  for (int off = 16; off >= 1; off /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // warp_partials may still be read by the previous reduction
  if (lane == 0) warp_partials[warp] = v;
  __syncthreads();
  v = warp_partials[0];
  for (uint32_t w = 1; w < kSamplingThreads / 32; ++w) v = op(v, warp_partials[w]);
  return v;
}

struct SharedStorage {
  typename cub::BlockScan<float, kSamplingThreads>::TempStorage scan;
  float float_partials[kSamplingThreads / 32];
  uint32_t uint_partials[kSamplingThreads / 32];
};

// Calls f(x, first, n) for this thread's (up to 8) elements of each chunk of the row, x
// sanitized and zero past the end. Every thread runs the same number of iterations.
template <typename F>
__device__ __forceinline__ void for_each_chunk(const float* row, uint32_t vocab, F&& f) {
  for (uint32_t base = 0; base < vocab; base += kChunk) {
    const uint32_t first = base + threadIdx.x * kElemsPerThread;
    const uint32_t n = first < vocab ? min(kElemsPerThread, vocab - first) : 0u;
    float x[kElemsPerThread];
    load_upto8_as_float(row + first, n, x);
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) x[i] = sanitize(x[i]);
    f(x, first, n);
  }
}

__device__ __forceinline__ uint32_t key_of(float p) { return __float_as_uint(p); }

// Count and mass of the elements whose key is >= t.
__device__ __forceinline__ uint32_t count_at_least(const float* row, uint32_t vocab, uint32_t t,
                                                   SharedStorage& s) {
  uint32_t c = 0;
  for_each_chunk(row, vocab, [&](const float(&x)[kElemsPerThread], uint32_t, uint32_t) {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) c += key_of(x[i]) >= t && x[i] > 0.f ? 1 : 0;
  });
  return block_all_reduce(c, Sum{}, s.uint_partials);
}

__device__ __forceinline__ float mass_at_least(const float* row, uint32_t vocab, uint32_t t,
                                               SharedStorage& s) {
  float m = 0.f;
  for_each_chunk(row, vocab, [&](const float(&x)[kElemsPerThread], uint32_t, uint32_t) {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) m += key_of(x[i]) >= t ? x[i] : 0.f;
  });
  return block_all_reduce(m, Sum{}, s.float_partials);
}

// Largest key t in [0, max_key] with keep(t), for keep monotone (true at 0, false past some t).
template <typename Keep>
__device__ __forceinline__ uint32_t largest_key_where(uint32_t max_key, Keep&& keep) {
  uint32_t lo = 0, hi = max_key + 1;  // keep(lo) holds; keep(hi) is not known to
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (keep(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

// The threshold key of the filters of output row `out_row` on `row`; *kept_mass the mass kept.
__device__ __forceinline__ uint32_t filter_threshold(const SamplingParams& p, uint32_t out_row,
                                                     const float* row, SharedStorage& s,
                                                     float* kept_mass) {
  const uint32_t vocab = p.vocab_size;
  float row_max = 0.f;
  for_each_chunk(row, vocab, [&](const float(&x)[kElemsPerThread], uint32_t, uint32_t) {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) row_max = fmaxf(row_max, x[i]);
  });
  row_max = block_all_reduce(row_max, Max{}, s.float_partials);
  const uint32_t max_key = key_of(row_max);

  uint32_t threshold = 0;
  if (p.use_top_k) {
    const int32_t k = p.top_k_arr != nullptr ? p.top_k_arr[out_row] : p.top_k;
    if (k > 0 && uint32_t(k) < vocab)
      threshold = largest_key_where(
          max_key, [&](uint32_t t) { return count_at_least(row, vocab, t, s) >= uint32_t(k); });
  }
  if (p.use_top_p) {
    const float top_p = p.top_p_arr != nullptr ? p.top_p_arr[out_row] : p.top_p;
    if (top_p < 1.f) {  // false for NaN: keep all
      const uint32_t base = p.top_k_first ? threshold : 0u;
      const float target = fmaxf(top_p, 0.f) * mass_at_least(row, vocab, base, s);
      const uint32_t t = largest_key_where(
          max_key, [&](uint32_t t) { return mass_at_least(row, vocab, t, s) >= target; });
      threshold = max(threshold, t);
    }
  }
  if (p.use_min_p) {
    const float min_p = p.min_p_arr != nullptr ? p.min_p_arr[out_row] : p.min_p;
    if (min_p > 0.f) threshold = max(threshold, key_of(fminf(min_p, 1.f) * row_max));
  }
  *kept_mass = mass_at_least(row, vocab, threshold, s);
  return threshold;
}

// Index of the first kept token whose running kept mass reaches target; the last kept token if
// rounding leaves the running sum short of it. The CTA minimum over "running sum >= target" (not
// "crosses target") also holds where the scanned prefix of a thread rounds differently from the
// running sum of the thread before it.
__device__ __forceinline__ uint32_t inverse_transform(const float* row, uint32_t vocab,
                                                      uint32_t threshold, float target,
                                                      SharedStorage& s) {
  constexpr uint32_t kNone = 0xffffffffu;
  float running = 0.f;
  uint32_t last_kept = 0;
  for (uint32_t base = 0; base < vocab; base += kChunk) {
    const uint32_t first = base + threadIdx.x * kElemsPerThread;
    const uint32_t n = first < vocab ? min(kElemsPerThread, vocab - first) : 0u;
    float x[kElemsPerThread];
    load_upto8_as_float(row + first, n, x);
    float local = 0.f;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      x[i] = sanitize(x[i]);
      x[i] = key_of(x[i]) >= threshold ? x[i] : 0.f;
      local += x[i];
    }
    float before, chunk_mass;
    __syncthreads();  // the scan storage may still be in use by the previous chunk
    cub::BlockScan<float, kSamplingThreads>(s.scan).ExclusiveSum(local, before, chunk_mass);
    before += running;
    uint32_t claim = kNone;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      const float after = before + x[i];
      if (x[i] > 0.f) {
        last_kept = first + i;
        if (claim == kNone && target <= after) claim = first + i;
      }
      before = after;
    }
    claim = block_all_reduce(claim, Min{}, s.uint_partials);
    if (claim != kNone) return claim;
    running += chunk_mass;
  }
  return block_all_reduce(last_kept, Max{}, s.uint_partials);
}

template <typename Unused = void>
__global__ void __launch_bounds__(kSamplingThreads) sampling_kernel(const SamplingParams p) {
  __shared__ SharedStorage s;
  const uint32_t out_row = blockIdx.x;
  int64_t prob_row = out_row;
  if (p.indices != nullptr)
    prob_row = p.indices_int64 ? static_cast<const int64_t*>(p.indices)[out_row]
                               : static_cast<const int32_t*>(p.indices)[out_row];
  if (prob_row < 0 || prob_row >= int64_t(p.num_prob_rows)) {  // uniform across the CTA
    if (p.samples != nullptr && threadIdx.x == 0) p.samples[out_row] = 0;
    return;
  }
  const float* row = p.probs + prob_row * p.probs_stride;
  float kept_mass;
  const uint32_t threshold = filter_threshold(p, out_row, row, s, &kept_mass);

  if (p.samples == nullptr) {  // renormalize instead of sampling
    float* out = p.renormed + int64_t(out_row) * p.renormed_stride;
    const float scale = kept_mass > 0.f ? 1.f / kept_mass : 0.f;
    for_each_chunk(row, p.vocab_size, [&](float(&x)[kElemsPerThread], uint32_t first, uint32_t n) {
#pragma unroll
      for (uint32_t i = 0; i < kElemsPerThread; ++i)
        x[i] = key_of(x[i]) >= threshold ? x[i] * scale : 0.f;
      store_upto8_from_float(out + first, n, x);
    });
    return;
  }

  uint32_t token = 0;
  if (kept_mass > 0.f) {
    const float u = uniform_open_closed(p.seed, p.offset, out_row);
    token = inverse_transform(row, p.vocab_size, threshold, u * kept_mass, s);
  }
  if (threadIdx.x == 0) p.samples[out_row] = int32_t(min(token, p.vocab_size - 1));
}

inline cudaError_t SampleOrRenorm(const SamplingParams& p, cudaStream_t stream) {
  if (p.batch_size == 0 || p.vocab_size == 0) return cudaSuccess;
  sampling_kernel<<<p.batch_size, kSamplingThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sampling
}  // namespace flashinfer

// Rotary position embedding (RoPE) of the query and key heads of a batch of tokens, out of place or
// in place, FlashInfer's conventions:
//  - pairs: NeoX / LLaMA "rotate half" (dims i and i + rotary_dim/2) or GPT-J interleaved
//    (dims 2i and 2i + 1); only the first rotary_dim dims of a head rotate, the rest pass through;
//  - angle of pair i at position m: m * freq[i] formed in fp32, freq[i] = theta^(-2i/rotary_dim)
//    / rope_scale (Llama 3.1 blends scaled and unscaled frequencies by wavelength), or read
//    from a precomputed cos/sin cache;
//  - positions per token (pos_ids), or per request as offsets[b] + index within the request
//    (indptr / offsets).
//
// A thread owns whole rotation pairs (8 of them for NeoX, 4 for interleaved: 16-byte accesses
// either way) of one token and walks a slab of that token's heads, a few heads' loads in flight
// at a time, so it computes its sines and cosines once per slab (while the first loads fly) and
// reads and writes every element itself: in place needs no barrier.
// Tokens whose position is unknown (outside indptr) or outside the cos/sin cache get NaN in their
// rotated dims instead of an out-of-bounds read: positions live on the GPU, where the host cannot
// check them without a synchronization.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "math.cuh"
#include "rows.cuh"
#include "vec_dtypes.cuh"

namespace flashinfer {
namespace rope {

constexpr uint32_t kRopeMaxRotaryDim = 512;
constexpr uint32_t kRopeCtaThreads = 128;
// Heads whose loads a thread issues before it computes any: 64 bytes of each of its spans.
template <typename T>
constexpr uint32_t kRopeHeadsInFlight = kVec8sInFlight<T>;
// With many tokens, a (token, slab) work item has at most this many rounds of heads in flight:
// small items keep the SMs evenly busy to the end of the grid, and each still reuses its sines
// and cosines across a few rounds.
constexpr uint32_t kRopeRoundsPerSlab = 2;

template <typename T, typename IdType>
struct RopeParams {
  const T* q;   // [nnz, num_q_heads, head_dim] with strides (q_stride_n, q_stride_h, 1)
  const T* k;   // [nnz, num_k_heads, head_dim]
  T* q_rope;    // like q; may be q itself (in place)
  T* k_rope;    // like k; may be k itself
  int64_t q_stride_n, q_stride_h, k_stride_n, k_stride_h;
  int64_t q_rope_stride_n, q_rope_stride_h, k_rope_stride_n, k_rope_stride_h;
  uint32_t nnz, num_q_heads, num_k_heads, head_dim, rotary_dim;
  // Positions: pos_ids[token] when set, else offsets[b] + (token - indptr[b]) for the request b
  // with indptr[b] <= token < indptr[b + 1] (batch_size requests).
  const IdType* pos_ids;
  const IdType* indptr;
  const IdType* offsets;
  uint32_t batch_size;
  // Angles: read from cos_sin_cache when set (float32 rows [cos of the rotary_dim/2 pairs | their
  // sin], cache_len rows cache_stride apart), else position * freq[pair].
  const float* cos_sin_cache;
  int64_t cache_stride, cache_len;
  float freq[kRopeMaxRotaryDim / 2];
};

struct Llama31Scaling {
  float low_freq_factor, high_freq_factor, old_context_len;
};

// freq[i] for i < rotary_dim / 2, computed in double and rounded once. Llama 3.1 keeps the
// frequencies of wavelengths below old_context_len / high_freq_factor, divides those of
// wavelengths above old_context_len / low_freq_factor by rope_scale, and blends in between.
inline void rope_frequencies(uint32_t rotary_dim, float rope_scale, float rope_theta,
                             const Llama31Scaling* llama31, float* freq) {
  const double kTwoPi = 6.283185307179586;
  for (uint32_t i = 0; i < rotary_dim / 2; ++i) {
    const double f = std::pow(double(rope_theta), -2.0 * i / rotary_dim);
    double smooth = 0.0;  // weight of the unscaled frequency
    if (llama31 != nullptr) {
      const double low = llama31->low_freq_factor, high = llama31->high_freq_factor;
      smooth = (double(llama31->old_context_len) * f / kTwoPi - low) / (high - low);
      smooth = std::min(1.0, std::max(0.0, smooth));
    }
    freq[i] = float((1.0 - smooth) * f / rope_scale + smooth * f);
  }
}

// How threads map onto the work: per head row, rotary_units threads own the rotation pairs and
// copy_units threads copy the dims past rotary_dim (out of place only); a (token, slab of
// heads) item per row of threads.
struct RopeSchedule {
  uint32_t rotary_units, copy_units;
  uint32_t slabs, heads_per_slab;
  bool copy_q, copy_k;  // pass-through dims to write for q / k (false when in place)
};

// One token's head rows, input and output: heads [0, num_q_heads) of q, then those of k.
template <typename T, typename IdType>
struct RopeRows {
  const RopeParams<T, IdType>& p;
  uint32_t token;

  __device__ __forceinline__ bool is_q(uint32_t head) const { return head < p.num_q_heads; }
  __device__ __forceinline__ const T* in(uint32_t head) const {
    return is_q(head) ? p.q + token * p.q_stride_n + head * p.q_stride_h
                      : p.k + token * p.k_stride_n + (head - p.num_q_heads) * p.k_stride_h;
  }
  __device__ __forceinline__ T* out(uint32_t head) const {
    return is_q(head) ? p.q_rope + token * p.q_rope_stride_n + head * p.q_rope_stride_h
                      : p.k_rope + token * p.k_rope_stride_n +
                            (head - p.num_q_heads) * p.k_rope_stride_h;
  }
};

// The token's position; false when no request of indptr holds the token.
template <typename T, typename IdType>
__device__ __forceinline__ bool token_position(const RopeParams<T, IdType>& p, uint32_t token,
                                               int64_t* pos) {
  if (p.pos_ids != nullptr) {
    *pos = int64_t(p.pos_ids[token]);
    return true;
  }
  if (p.batch_size == 0) return false;
  uint32_t lo = 0, hi = p.batch_size;  // the last request starting at or before the token
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (int64_t(p.indptr[mid]) <= int64_t(token)) lo = mid;
    else hi = mid;
  }
  const int64_t begin = p.indptr[lo], end = p.indptr[lo + 1];
  *pos = int64_t(p.offsets[lo]) + (int64_t(token) - begin);
  return begin <= int64_t(token) && int64_t(token) < end;
}

// cos and sin of pairs [pair0, pair0 + n) at the token's position (NaN if it has none).
template <typename T, typename IdType>
__device__ __forceinline__ void rotation(const RopeParams<T, IdType>& p, uint32_t token,
                                         uint32_t pair0, uint32_t n, float (&c)[8], float (&s)[8]) {
  int64_t pos = 0;
  bool valid = token_position(p, token, &pos);
  if (p.cos_sin_cache != nullptr) {
    valid = valid && pos >= 0 && pos < p.cache_len;
    const float* row = p.cos_sin_cache + (valid ? pos * p.cache_stride : 0) + pair0;
    load_upto8_as_float(row, valid ? n : 0, c);
    load_upto8_as_float(row + p.rotary_dim / 2, valid ? n : 0, s);
  } else {
#pragma unroll
    for (uint32_t i = 0; i < 8; ++i) {
      c[i] = 1.f, s[i] = 0.f;
      if (i < n) sincosf(float(pos) * p.freq[pair0 + i], &s[i], &c[i]);
    }
  }
  if (!valid) {
#pragma unroll
    for (uint32_t i = 0; i < 8; ++i) c[i] = s[i] = __int_as_float(0x7fffffff);
  }
}

// Rotates the pairs that thread `unit` owns in heads [head_begin, head_end) of the token. WHOLE:
// all head rows 16-byte aligned and every span whole (ApplyRope checks): vector accesses without
// run-time tests.
template <bool INTERLEAVE, bool WHOLE, typename T, typename IdType>
__device__ __forceinline__ void rotate_heads(const RopeParams<T, IdType>& p, uint32_t token,
                                             uint32_t unit, uint32_t head_begin, uint32_t head_end) {
  constexpr uint32_t K = kRopeHeadsInFlight<T>;
  const RopeRows<T, IdType> rows{p, token};
  // NeoX: pairs (i, i + half) for i in [8 unit, 8 unit + n): two spans of n elements.
  // Interleaved: elements [8 unit, 8 unit + n), n/2 adjacent pairs.
  const uint32_t half = p.rotary_dim / 2;
  const uint32_t first = unit * 8;
  const uint32_t n = WHOLE ? 8u : min(8u, (INTERLEAVE ? p.rotary_dim : half) - first);
  Vec8<T> x[K], y[K];  // NeoX: x first halves of the pairs, y second halves
  auto load = [&](uint32_t h0) {
#pragma unroll
    for (uint32_t j = 0; j < K; ++j) {
      if (h0 + j >= head_end) continue;
      x[j].template load<WHOLE>(rows.in(h0 + j) + first, n);
      if (!INTERLEAVE) y[j].template load<WHOLE>(rows.in(h0 + j) + half + first, n);
    }
  };
  load(head_begin);
  float c[8], s[8];  // computed while the first heads' loads are in flight
  rotation(p, token, INTERLEAVE ? first / 2 : first, INTERLEAVE ? n / 2 : n, c, s);

  for (uint32_t h0 = head_begin;;) {
#pragma unroll
    for (uint32_t j = 0; j < K; ++j) {
      if (h0 + j >= head_end) continue;
      T* out = rows.out(h0 + j) + first;
      float a[8], b[8];
      x[j].to_float(a);
      if (INTERLEAVE) {
#pragma unroll
        for (uint32_t i = 0; i < 4; ++i) {
          const float u = a[2 * i], v = a[2 * i + 1];
          a[2 * i] = u * c[i] - v * s[i];
          a[2 * i + 1] = v * c[i] + u * s[i];
        }
      } else {
        y[j].to_float(b);
#pragma unroll
        for (uint32_t i = 0; i < 8; ++i) {
          const float u = a[i], v = b[i];
          a[i] = u * c[i] - v * s[i];
          b[i] = v * c[i] + u * s[i];
        }
        y[j].from_float(b);
        y[j].template store<WHOLE>(out + half, n);
      }
      x[j].from_float(a);
      x[j].template store<WHOLE>(out, n);
    }
    h0 += K;
    if (h0 >= head_end) break;
    load(h0);
  }
}

// Copies dims [rotary_dim + 8 unit, + 8) of the heads whose output is not their input.
template <bool WHOLE, typename T, typename IdType>
__device__ __forceinline__ void copy_heads(const RopeParams<T, IdType>& p, const RopeSchedule& s,
                                           uint32_t token, uint32_t unit, uint32_t head_begin,
                                           uint32_t head_end) {
  constexpr uint32_t K = kRopeHeadsInFlight<T>;
  const RopeRows<T, IdType> rows{p, token};
  const uint32_t first = p.rotary_dim + unit * 8;
  const uint32_t n = WHOLE ? 8u : min(8u, p.head_dim - first);
  auto moves = [&](uint32_t h) { return h < head_end && (rows.is_q(h) ? s.copy_q : s.copy_k); };
  for (uint32_t h0 = head_begin; h0 < head_end; h0 += K) {
    Vec8<T> x[K];
#pragma unroll
    for (uint32_t j = 0; j < K; ++j)
      if (moves(h0 + j)) x[j].template load<WHOLE>(rows.in(h0 + j) + first, n);
#pragma unroll
    for (uint32_t j = 0; j < K; ++j)
      if (moves(h0 + j)) x[j].template store<WHOLE>(rows.out(h0 + j) + first, n);
  }
}

template <bool INTERLEAVE, bool WHOLE, typename T, typename IdType>
__global__ void __launch_bounds__(kRopeCtaThreads)
    apply_rope_kernel(const __grid_constant__ RopeParams<T, IdType> p, const RopeSchedule s) {
  const uint64_t item = uint64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  if (item >= uint64_t(p.nnz) * s.slabs) return;
  const uint32_t token = uint32_t(item / s.slabs);
  const uint32_t head_begin = uint32_t(item % s.slabs) * s.heads_per_slab;
  const uint32_t head_end = min(head_begin + s.heads_per_slab, p.num_q_heads + p.num_k_heads);
  if (threadIdx.x < s.rotary_units)
    rotate_heads<INTERLEAVE, WHOLE>(p, token, threadIdx.x, head_begin, head_end);
  else
    copy_heads<WHOLE>(p, s, token, threadIdx.x - s.rotary_units, head_begin, head_end);
}

// Host side: pick the schedule for the device's SM count and launch.
template <typename T, typename IdType>
struct ApplyRope {
  using Params = RopeParams<T, IdType>;

  static RopeSchedule schedule(const Params& p, bool interleave, uint32_t num_sms,
                               uint32_t* lanes_per_cta) {
    RopeSchedule s{};
    const uint32_t pass_dims = p.head_dim - p.rotary_dim;
    s.rotary_units = math::ceil_div(interleave ? p.rotary_dim : p.rotary_dim / 2, 8u);
    s.copy_q = !(p.q_rope == p.q && p.q_rope_stride_n == p.q_stride_n &&
                 p.q_rope_stride_h == p.q_stride_h);
    s.copy_k = !(p.k_rope == p.k && p.k_rope_stride_n == p.k_stride_n &&
                 p.k_rope_stride_h == p.k_stride_h);
    s.copy_units = (s.copy_q || s.copy_k) ? math::ceil_div(pass_dims, 8u) : 0;
    const uint32_t units = s.rotary_units + s.copy_units;
    const uint32_t full_lanes = std::max(1u, kRopeCtaThreads / units);
    // Many tokens: slabs of kRopeRoundsPerSlab rounds of heads. Few tokens (decode): thinner
    // slabs, down to one head, until about four full CTAs per SM have work.
    const uint32_t total_heads = p.num_q_heads + p.num_k_heads;
    const uint64_t wanted_items = uint64_t(num_sms) * full_lanes * 4;
    const uint64_t slabs = std::min<uint64_t>(
        total_heads,
        std::max(math::ceil_div<uint64_t>(total_heads, kRopeRoundsPerSlab * kRopeHeadsInFlight<T>),
                 math::ceil_div<uint64_t>(wanted_items, p.nnz)));
    s.heads_per_slab = math::ceil_div<uint32_t>(total_heads, uint32_t(slabs));
    s.slabs = math::ceil_div(total_heads, s.heads_per_slab);
    const uint64_t items = uint64_t(p.nnz) * s.slabs;
    *lanes_per_cta = uint32_t(std::min<uint64_t>(
        full_lanes, std::max<uint64_t>(1, math::ceil_div<uint64_t>(items, num_sms))));
    return s;
  }

  static cudaError_t run(const Params& p, bool interleave, cudaStream_t stream) {
    if (p.nnz == 0 || p.num_q_heads + p.num_k_heads == 0) return cudaSuccess;
    int device = 0, num_sms = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return err;
    uint32_t lanes = 1;
    const RopeSchedule s = schedule(p, interleave, uint32_t(std::max(num_sms, 1)), &lanes);
    const uint64_t items = uint64_t(p.nnz) * s.slabs;
    const dim3 grid(uint32_t(math::ceil_div<uint64_t>(items, lanes)));
    const dim3 block(s.rotary_units + s.copy_units, lanes);
    if (whole(p, interleave)) launch<true>(p, interleave, s, grid, block, stream);
    else launch<false>(p, interleave, s, grid, block, stream);
    return cudaGetLastError();
  }

  // Every head row of q, k and their outputs 16-byte aligned, and every span a thread moves
  // whole: 8 pairs (NeoX) or 8 elements (interleaved) of the rotated dims, 8 passed through.
  static bool whole(const Params& p, bool interleave) {
    return p.rotary_dim % (interleave ? 8 : 16) == 0 && p.head_dim % 8 == 0 &&
           rows_aligned16(p.q, RowStrides{p.q_stride_n, p.q_stride_h}) &&
           rows_aligned16(p.k, RowStrides{p.k_stride_n, p.k_stride_h}) &&
           rows_aligned16(p.q_rope, RowStrides{p.q_rope_stride_n, p.q_rope_stride_h}) &&
           rows_aligned16(p.k_rope, RowStrides{p.k_rope_stride_n, p.k_rope_stride_h});
  }

  template <bool WHOLE>
  static void launch(const Params& p, bool interleave, const RopeSchedule& s, dim3 grid, dim3 block,
                     cudaStream_t stream) {
    if (interleave) apply_rope_kernel<true, WHOLE><<<grid, block, 0, stream>>>(p, s);
    else apply_rope_kernel<false, WHOLE><<<grid, block, 0, stream>>>(p, s);
  }
};

}  // namespace rope
}  // namespace flashinfer

// RMSNorm, optionally fused with the residual add that precedes it, and with Gemma's (1 + weight)
// scaling: y = x / sqrt(mean(x^2) + eps) * (weight_offset + weight), accumulated in float32.
//
// One pass over memory: a thread issues the loads of its whole share of a row (64 bytes of each
// array, the weight included) before it computes anything, so a CTA has its row in flight at
// once and the weight is not waited for after the reduction; the share stays in registers as
// value * weight until the scaled row is written. Rows too long for the registers of one CTA
// take several rounds and read their input a second time (from L2, mostly).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "math.cuh"
#include "rows.cuh"
#include "vec_dtypes.cuh"

namespace flashinfer {
namespace norm {

// Threads a row may take: rows up to kVec8sInFlight * 8 times this many elements stay in
// registers (32768 for 16-bit types). A fused row has a third array in flight, the residual:
// 512 threads leave each of them the ~80 registers that needs (16384 elements in registers).
template <bool FUSED>
constexpr uint32_t kNormMaxThreads = FUSED ? 512 : 1024;
// Rows of at most 32 threads share a CTA of this many threads, a power-of-two group per row.
constexpr uint32_t kNormSmallRowCtaThreads = 128;

template <typename T>
struct RMSNormParams {
  const T* input;
  T* residual;  // fused add: residual += input first, then the norm of the sum; else nullptr
  const T* weight;  // [hidden], contiguous
  T* output;        // may be input itself
  RowStrides input_strides, residual_strides, output_strides;
  uint32_t num_rows, inner_rows, hidden;
  float eps;
  float weight_offset;  // 0, or 1 for Gemma's (1 + weight)
};

// Sum of v over the blockDim.x threads of a row. Rows of <= 32 threads are power-of-two lane
// groups inside a warp (several rows per CTA); longer rows are whole warps, one row per CTA.
__device__ __forceinline__ float row_sum(float v, float* warp_sums) {
  const uint32_t threads = blockDim.x;
  for (uint32_t offset = min(threads, 32u) / 2; offset >= 1; offset /= 2) v += math::shfl_xor(v, offset);
  if (threads <= 32) return v;
  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < threads / 32 ? warp_sums[lane] : 0.f;
  for (uint32_t offset = 16; offset >= 1; offset /= 2) v += math::shfl_xor(v, offset);
  return v;
}

// Thread t of a row holds vectors (round * VECS + v) * blockDim.x + t, v < VECS: consecutive
// threads read consecutive 16-byte pieces. FUSED: residual += input, then the norm of the sum.
// WHOLE: every row 16-byte aligned and hidden a multiple of 8 (RMSNorm checks), so every access
// is an unconditional vector access. LONG_ROWS: rows too long for registers, in `rounds` rounds;
// otherwise the row is held in registers (one round, known to the compiler: its registers are
// then allocated for that case alone).
template <bool FUSED, bool WHOLE, bool LONG_ROWS, typename T>
__global__ void __launch_bounds__(kNormMaxThreads<FUSED>)
    rmsnorm_kernel(const RMSNormParams<T> p, const uint32_t num_rounds) {
  constexpr uint32_t VECS = kVec8sInFlight<T>;
  const uint32_t rounds = LONG_ROWS ? num_rounds : 1;
  __shared__ float warp_sums[kNormMaxThreads<false> / 32];
  const uint32_t row = blockIdx.x * blockDim.y + threadIdx.y;
  // Threads past the last row still take part in the row reductions; they touch no memory.
  const bool active = row < p.num_rows;
  const uint32_t num_vecs = active ? math::ceil_div(p.hidden, 8u) : 0;
  const T* in = p.input + (active ? row_offset(row, p.inner_rows, p.input_strides) : 0);
  T* res = FUSED ? p.residual + (active ? row_offset(row, p.inner_rows, p.residual_strides) : 0)
                 : nullptr;
  T* out = p.output + (active ? row_offset(row, p.inner_rows, p.output_strides) : 0);
  auto vec_index = [&](uint32_t round, uint32_t v) {
    return (round * VECS + v) * blockDim.x + threadIdx.x;
  };
  auto span = [&](uint32_t i) {  // elements of vector i in the row
    return i < num_vecs ? (WHOLE ? 8u : min(8u, p.hidden - i * 8)) : 0u;
  };
  // y = value * (weight_offset + weight) in float32, times 1/rms once the reduction is done:
  // computed as soon as the loads land, so that only these 8 floats a vector (what a fused
  // row's float32 sum needs anyway) stay live across the reduction.
  float y[VECS][8];
  auto scale = [&](uint32_t v, const float (&value)[8], const Vec8<T>& weight) {
    float w[8];
    weight.to_float(w);
#pragma unroll
    for (int k = 0; k < 8; ++k) y[v][k] = value[k] * (p.weight_offset + w[k]);
  };

  float sum_sq = 0.f;
  for (uint32_t round = 0; round < rounds; ++round) {
    Vec8<T> x[VECS], r[VECS], w[VECS];
#pragma unroll
    for (uint32_t v = 0; v < VECS; ++v) {
      const uint32_t i = vec_index(round, v), n = span(i);
      x[v].template load<WHOLE>(in + i * 8, n);
      if constexpr (FUSED) r[v].template load<WHOLE>(res + i * 8, n);
      // A row held in registers reads its weight now: it arrives while the row is reduced.
      if constexpr (!LONG_ROWS) w[v].template load<WHOLE>(p.weight + i * 8, n);
    }
#pragma unroll
    for (uint32_t v = 0; v < VECS; ++v) {
      float f[8];
      x[v].to_float(f);
      if constexpr (FUSED) {
        float g[8];
        r[v].to_float(g);
#pragma unroll
        for (int k = 0; k < 8; ++k) f[k] += g[k];
        const uint32_t i = vec_index(round, v);
        Vec8<T> sum;
        sum.from_float(f);
        sum.template store<WHOLE>(res + i * 8, span(i));
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) sum_sq = fmaf(f[k], f[k], sum_sq);
      if constexpr (!LONG_ROWS) scale(v, f, w[v]);
    }
  }
  // Times 1/hidden rather than a division, whose slow path costs registers: exact for powers of
  // two, within an ulp of the mean otherwise.
  const float rms_rcp = rsqrtf(row_sum(sum_sq, warp_sums) * (1.f / float(p.hidden)) + p.eps);

  for (uint32_t round = 0; round < rounds; ++round) {
    if constexpr (LONG_ROWS) {
      // Re-read what this same thread read (or, fused, wrote) in the first pass: the rounded
      // sum in `residual`, where a row in registers keeps the float32 sum.
      Vec8<T> x[VECS], w[VECS];
#pragma unroll
      for (uint32_t v = 0; v < VECS; ++v) {
        const uint32_t i = vec_index(round, v), n = span(i);
        x[v].template load<WHOLE>((FUSED ? res : in) + i * 8, n);
        w[v].template load<WHOLE>(p.weight + i * 8, n);
      }
#pragma unroll
      for (uint32_t v = 0; v < VECS; ++v) {
        float f[8];
        x[v].to_float(f);
        scale(v, f, w[v]);
      }
    }
#pragma unroll
    for (uint32_t v = 0; v < VECS; ++v) {
#pragma unroll
      for (int k = 0; k < 8; ++k) y[v][k] *= rms_rcp;
      const uint32_t i = vec_index(round, v);
      Vec8<T> o;
      o.from_float(y[v]);
      o.template store<WHOLE>(out + i * 8, span(i));
    }
  }
}

// The launch shape for a hidden size: threads per row, rows per CTA, rounds.
struct RMSNormLaunch {
  uint32_t threads_per_row = 1, rows_per_cta = 1, rounds = 1;

  static RMSNormLaunch make(uint32_t hidden, uint32_t vecs_per_thread, uint32_t max_threads) {
    RMSNormLaunch l;
    const uint32_t num_vecs = std::max(math::ceil_div(hidden, 8u), 1u);
    const uint32_t threads = math::ceil_div(num_vecs, vecs_per_thread);
    if (threads <= 32) {
      while (l.threads_per_row < threads) l.threads_per_row *= 2;
      l.rows_per_cta = kNormSmallRowCtaThreads / l.threads_per_row;
    } else {
      l.threads_per_row = std::min(max_threads, math::round_up(threads, 32u));
    }
    l.rounds = math::ceil_div(num_vecs, vecs_per_thread * l.threads_per_row);
    return l;
  }
};

template <typename T>
cudaError_t RMSNorm(const RMSNormParams<T>& p, cudaStream_t stream) {
  if (p.num_rows == 0 || p.hidden == 0) return cudaSuccess;
  const bool fused = p.residual != nullptr;
  const uint32_t max_threads = fused ? kNormMaxThreads<true> : kNormMaxThreads<false>;
  const RMSNormLaunch l = RMSNormLaunch::make(p.hidden, kVec8sInFlight<T>, max_threads);
  const bool whole = p.hidden % 8 == 0 && rows_aligned16(p.input, p.input_strides) &&
                     rows_aligned16(p.output, p.output_strides) &&
                     (!fused || rows_aligned16(p.residual, p.residual_strides)) &&
                     rows_aligned16(p.weight, RowStrides{});
  const dim3 grid(math::ceil_div(p.num_rows, l.rows_per_cta));
  const dim3 block(l.threads_per_row, l.rows_per_cta);
  auto launch = [&](auto fused_tag) {
    constexpr bool FUSED = decltype(fused_tag)::value;
    // Long rows are rare: they take the general accesses rather than a kernel of their own.
    if (l.rounds > 1) rmsnorm_kernel<FUSED, false, true><<<grid, block, 0, stream>>>(p, l.rounds);
    else if (whole) rmsnorm_kernel<FUSED, true, false><<<grid, block, 0, stream>>>(p, 1);
    else rmsnorm_kernel<FUSED, false, false><<<grid, block, 0, stream>>>(p, 1);
  };
  if (fused) launch(std::true_type{});
  else launch(std::false_type{});
  return cudaGetLastError();
}

}  // namespace norm
}  // namespace flashinfer

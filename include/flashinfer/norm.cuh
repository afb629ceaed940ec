// RMSNorm, optionally fused with the residual add that precedes it, and with Gemma's (1 + weight)
// scaling: y = x / sqrt(mean(x^2) + eps) * (weight_offset + weight), accumulated in float32.
//
// One pass over memory: a row is read once into registers (8 elements per 16-byte access), its
// sum of squares reduced across the threads that hold it, and the scaled row written from the
// same registers. Rows of up to kNormMaxThreads * 4 * 8 elements stay in registers; longer rows
// take several rounds and read their input a second time (from L2, mostly).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "math.cuh"
#include "rows.cuh"
#include "vec_dtypes.cuh"

namespace flashinfer {
namespace norm {

constexpr uint32_t kNormMaxThreads = 1024;
// Rows of at most 32 vectors share a CTA of this many threads, a power-of-two group per row.
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
  v = 0.f;
  for (uint32_t w = 0; w < threads / 32; ++w) v += warp_sums[w];
  return v;
}

// Thread t of a row holds vectors (round * VECS + v) * blockDim.x + t, v < VECS: consecutive
// threads read consecutive 16-byte pieces. `rounds` > 1 only for rows too long for registers.
template <uint32_t VECS, typename T>
__global__ void __launch_bounds__(kNormMaxThreads)
    rmsnorm_kernel(const RMSNormParams<T> p, const uint32_t rounds) {
  __shared__ float warp_sums[kNormMaxThreads / 32];
  const uint32_t row = blockIdx.x * blockDim.y + threadIdx.y;
  // Threads past the last row still take part in the row reductions; they touch no memory.
  const bool active = row < p.num_rows;
  const uint32_t last = active ? p.hidden : 0;
  const T* in = p.input + (active ? row_offset(row, p.inner_rows, p.input_strides) : 0);
  T* res = p.residual + (active && p.residual ? row_offset(row, p.inner_rows, p.residual_strides) : 0);
  T* out = p.output + (active ? row_offset(row, p.inner_rows, p.output_strides) : 0);
  auto first_elem = [&](uint32_t round, uint32_t v) {
    return ((round * VECS + v) * blockDim.x + threadIdx.x) * 8;
  };
  auto span = [&](uint32_t e) { return e < last ? min(8u, last - e) : 0u; };

  float x[VECS][8];
  float sum_sq = 0.f;
  for (uint32_t round = 0; round < rounds; ++round) {
#pragma unroll
    for (uint32_t v = 0; v < VECS; ++v) {
      const uint32_t e = first_elem(round, v), n = span(e);
      load_upto8_as_float(in + e, n, x[v]);
      if (p.residual != nullptr) {
        float r[8];
        load_upto8_as_float(res + e, n, r);
#pragma unroll
        for (int i = 0; i < 8; ++i) x[v][i] += r[i];
        store_upto8_from_float(res + e, n, x[v]);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) sum_sq = fmaf(x[v][i], x[v][i], sum_sq);
    }
  }
  const float rms_rcp = rsqrtf(row_sum(sum_sq, warp_sums) / float(p.hidden) + p.eps);

  for (uint32_t round = 0; round < rounds; ++round) {
#pragma unroll
    for (uint32_t v = 0; v < VECS; ++v) {
      const uint32_t e = first_elem(round, v), n = span(e);
      // Long rows re-read what this same thread read (or, fused, wrote) in the first pass: the
      // rounded sum in `residual`, where a row in registers keeps the float32 sum.
      if (rounds > 1) load_upto8_as_float(p.residual != nullptr ? res + e : in + e, n, x[v]);
      float w[8];
      load_upto8_as_float(p.weight + e, n, w);
#pragma unroll
      for (int i = 0; i < 8; ++i) x[v][i] *= rms_rcp * (p.weight_offset + w[i]);
      store_upto8_from_float(out + e, n, x[v]);
    }
  }
}

// The launch shape for a hidden size: vectors per thread, threads per row, rows per CTA.
struct RMSNormLaunch {
  uint32_t vecs = 1, threads_per_row = 1, rows_per_cta = 1, rounds = 1;

  static RMSNormLaunch make(uint32_t hidden) {
    RMSNormLaunch l;
    const uint32_t num_vecs = std::max(math::ceil_div(hidden, 8u), 1u);
    if (num_vecs <= 32) {
      while (l.threads_per_row < num_vecs) l.threads_per_row *= 2;
      l.rows_per_cta = kNormSmallRowCtaThreads / l.threads_per_row;
    } else {
      // At most 512 threads while 4 vectors each hold the row: several CTAs share an SM.
      l.vecs = num_vecs <= 512 ? 1 : num_vecs <= 1024 ? 2 : 4;
      l.threads_per_row =
          std::min(kNormMaxThreads, math::round_up(math::ceil_div(num_vecs, l.vecs), 32u));
    }
    l.rounds = math::ceil_div(num_vecs, l.vecs * l.threads_per_row);
    return l;
  }
};

template <typename T>
cudaError_t RMSNorm(const RMSNormParams<T>& p, cudaStream_t stream) {
  if (p.num_rows == 0 || p.hidden == 0) return cudaSuccess;
  const RMSNormLaunch l = RMSNormLaunch::make(p.hidden);
  const dim3 grid(math::ceil_div(p.num_rows, l.rows_per_cta));
  const dim3 block(l.threads_per_row, l.rows_per_cta);
  switch (l.vecs) {
    case 1: rmsnorm_kernel<1><<<grid, block, 0, stream>>>(p, l.rounds); break;
    case 2: rmsnorm_kernel<2><<<grid, block, 0, stream>>>(p, l.rounds); break;
    default: rmsnorm_kernel<4><<<grid, block, 0, stream>>>(p, l.rounds); break;
  }
  return cudaGetLastError();
}

}  // namespace norm
}  // namespace flashinfer

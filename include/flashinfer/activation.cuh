// Gated activations: out[..., i] = act(input[..., i]) * input[..., d + i] for input [..., 2d],
// computed in float32. One kernel, templated on the activation functor.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "math.cuh"
#include "rows.cuh"
#include "vec_dtypes.cuh"

namespace flashinfer {
namespace activation {

struct Silu {
  __device__ __forceinline__ float operator()(float x) const { return x / (1.f + expf(-x)); }
};

struct Gelu {  // exact (erf) GELU
  __device__ __forceinline__ float operator()(float x) const {
    return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
  }
};

struct GeluTanh {  // tanh approximation of GELU
  __device__ __forceinline__ float operator()(float x) const {
    const float inner = 0.79788456080286536f * fmaf(0.044715f * x, x * x, x);
    return 0.5f * x * (1.f + tanhf(inner));
  }
};

template <typename T>
struct ActAndMulParams {
  const T* input;  // rows of 2 * d: the gate half, then the up half
  T* output;       // rows of d
  RowStrides input_strides, output_strides;
  uint32_t num_rows, inner_rows, d;
};

constexpr uint32_t kActMaxThreads = 256;

// Each thread owns 8 consecutive outputs of one row at a time: two 16-byte reads (gate and up)
// and one 16-byte write when aligned. blockDim.x threads cover a slice of a row, blockDim.y rows
// share a CTA when rows are short; blockIdx.y walks the slices of long rows.
template <typename Act, typename T>
__global__ void __launch_bounds__(kActMaxThreads) act_and_mul_kernel(const ActAndMulParams<T> p) {
  const uint32_t row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= p.num_rows) return;
  const T* in = p.input + row_offset(row, p.inner_rows, p.input_strides);
  T* out = p.output + row_offset(row, p.inner_rows, p.output_strides);
  const Act act;
  for (uint32_t e = (blockIdx.y * blockDim.x + threadIdx.x) * 8; e < p.d;
       e += gridDim.y * blockDim.x * 8) {
    const uint32_t n = min(8u, p.d - e);
    float gate[8], up[8];
    load_upto8_as_float(in + e, n, gate);
    load_upto8_as_float(in + p.d + e, n, up);
#pragma unroll
    for (int i = 0; i < 8; ++i) gate[i] = act(gate[i]) * up[i];
    store_upto8_from_float(out + e, n, gate);
  }
}

template <typename Act, typename T>
cudaError_t ActAndMul(const ActAndMulParams<T>& p, cudaStream_t stream) {
  if (p.num_rows == 0 || p.d == 0) return cudaSuccess;
  const uint32_t num_vecs = math::ceil_div(p.d, 8u);
  uint32_t threads = 1;
  while (threads < num_vecs && threads < kActMaxThreads) threads *= 2;
  const uint32_t rows_per_cta = kActMaxThreads / threads;
  const dim3 grid(math::ceil_div(p.num_rows, rows_per_cta),
                  std::min(math::ceil_div(num_vecs, threads), 65535u));
  act_and_mul_kernel<Act><<<grid, dim3(threads, rows_per_cta), 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace activation
}  // namespace flashinfer

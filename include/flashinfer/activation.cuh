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

// Silu through the SFU exponential and a correctly rounded reciprocal (about 1e-7 relative error):
// the accurate expf and IEEE division cost enough issue slots to hold the kernel below the copy
// bandwidth. Very negative x gives -0 once exp(-x) overflows (the true value is below 1e-36).
struct Silu {
  __device__ __forceinline__ float operator()(float x) const { return x * __frcp_rn(1.f + __expf(-x)); }
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

constexpr uint32_t kActCtaThreads = 256;
// Resident CTAs per SM the kernel is compiled for (at most 64 registers a thread): with every
// thread's loads in flight at once, 4 x 256 threads x 128 bytes a thread per SM.
constexpr uint32_t kActMinCtasPerSm = 4;

// A slice is blockDim.x * VECS vectors (8 outputs each) of one row; thread t owns vectors
// slice_start + v * blockDim.x + t, v < VECS, so consecutive threads read consecutive 16-byte
// pieces of the gate half and of the up half, and issues all 2 * VECS loads before it computes.
// blockDim.y rows share a CTA when rows are short. Work items are (row group, slice) pairs with
// the slice varying fastest, so the CTAs resident at one time read whole rows front to back
// rather than the same slice of many rows (strided by the row pitch); the grid walks them.
// WHOLE: all rows 16-byte aligned and d a multiple of 8 (ActAndMul checks): vector accesses
// without run-time tests.
template <typename Act, bool WHOLE, typename T>
__global__ void __launch_bounds__(kActCtaThreads, kActMinCtasPerSm)
    act_and_mul_kernel(const ActAndMulParams<T> p, const uint32_t num_slices) {
  constexpr uint32_t VECS = kVec8sInFlight<T>;
  const uint32_t num_vecs = math::ceil_div(p.d, 8u);
  const uint64_t num_items = uint64_t(math::ceil_div(p.num_rows, blockDim.y)) * num_slices;
  const Act act;
  for (uint64_t item = blockIdx.x; item < num_items; item += gridDim.x) {
    const uint32_t slice = uint32_t(item % num_slices);
    const uint32_t row = uint32_t(item / num_slices) * blockDim.y + threadIdx.y;
    if (row >= p.num_rows) continue;
    const T* in = p.input + row_offset(row, p.inner_rows, p.input_strides);
    T* out = p.output + row_offset(row, p.inner_rows, p.output_strides);
    auto vec_index = [&](uint32_t v) { return (slice * VECS + v) * blockDim.x + threadIdx.x; };
    auto span = [&](uint32_t i) {  // outputs of vector i in the row
      return i < num_vecs ? (WHOLE ? 8u : min(8u, p.d - i * 8)) : 0u;
    };
    Vec8<T> gate[VECS], up[VECS];
#pragma unroll
    for (uint32_t v = 0; v < VECS; ++v) {
      const uint32_t i = vec_index(v), n = span(i);
      gate[v].template load<WHOLE>(in + i * 8, n);
      up[v].template load<WHOLE>(in + p.d + i * 8, n);
    }
#pragma unroll
    for (uint32_t v = 0; v < VECS; ++v) {
      float g[8], u[8];
      gate[v].to_float(g);
      up[v].to_float(u);
#pragma unroll
      for (int k = 0; k < 8; ++k) g[k] = act(g[k]) * u[k];
      const uint32_t i = vec_index(v);
      Vec8<T> y;
      y.from_float(g);
      y.template store<WHOLE>(out + i * 8, span(i));
    }
  }
}

template <typename Act, typename T>
cudaError_t ActAndMul(const ActAndMulParams<T>& p, cudaStream_t stream) {
  if (p.num_rows == 0 || p.d == 0) return cudaSuccess;
  constexpr uint32_t VECS = kVec8sInFlight<T>;
  const uint32_t num_vecs = math::ceil_div(p.d, 8u);
  uint32_t threads = 1;
  while (threads * VECS < num_vecs && threads < kActCtaThreads) threads *= 2;
  const uint32_t rows_per_cta = kActCtaThreads / threads;
  const uint32_t num_slices = math::ceil_div(num_vecs, threads * VECS);
  const uint64_t num_items = uint64_t(math::ceil_div(p.num_rows, rows_per_cta)) * num_slices;
  const dim3 grid(uint32_t(std::min<uint64_t>(num_items, 1u << 30)));
  const dim3 block(threads, rows_per_cta);
  const bool whole = p.d % 8 == 0 && rows_aligned16(p.input, p.input_strides) &&
                     rows_aligned16(p.output, p.output_strides);
  if (whole) act_and_mul_kernel<Act, true><<<grid, block, 0, stream>>>(p, num_slices);
  else act_and_mul_kernel<Act, false><<<grid, block, 0, stream>>>(p, num_slices);
  return cudaGetLastError();
}

}  // namespace activation
}  // namespace flashinfer

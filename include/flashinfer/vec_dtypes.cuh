// Loads of eight consecutive elements converted to float, for every storage type the
// kernels read (fp16, bf16, fp8 e4m3/e5m2, fp32), and the matching stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

namespace flashinfer {

namespace detail {

__device__ __forceinline__ void to_float2(__half2 x, float& a, float& b) {
  float2 f = __half22float2(x);
  a = f.x;
  b = f.y;
}

__device__ __forceinline__ void to_float2(__nv_bfloat162 x, float& a, float& b) {
  float2 f = __bfloat1622float2(x);
  a = f.x;
  b = f.y;
}

// fp8 pairs widen to fp16 pairs first (one cvt instruction on sm_89+; exact for both formats).
template <__nv_fp8_interpretation_t kInterp>
__device__ __forceinline__ void fp8x2_to_float2(__nv_fp8x2_storage_t x, float& a, float& b) {
  __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(x, kInterp);
  to_float2(*reinterpret_cast<__half2*>(&h), a, b);
}

}  // namespace detail

// Reads 8 consecutive elements starting at `ptr` (aligned to the bundle size) as floats.
template <typename T>
__device__ __forceinline__ void load8_as_float(const T* ptr, float (&out)[8]);

template <>
__device__ __forceinline__ void load8_as_float<half>(const half* ptr, float (&out)[8]) {
  uint4 raw = *reinterpret_cast<const uint4*>(ptr);
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) detail::to_float2(h[i], out[2 * i], out[2 * i + 1]);
}

template <>
__device__ __forceinline__ void load8_as_float<__nv_bfloat16>(const __nv_bfloat16* ptr,
                                                              float (&out)[8]) {
  uint4 raw = *reinterpret_cast<const uint4*>(ptr);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) detail::to_float2(h[i], out[2 * i], out[2 * i + 1]);
}

template <>
__device__ __forceinline__ void load8_as_float<__nv_fp8_e4m3>(const __nv_fp8_e4m3* ptr,
                                                              float (&out)[8]) {
  uint2 raw = *reinterpret_cast<const uint2*>(ptr);
  const __nv_fp8x2_storage_t* p = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) detail::fp8x2_to_float2<__NV_E4M3>(p[i], out[2 * i], out[2 * i + 1]);
}

template <>
__device__ __forceinline__ void load8_as_float<__nv_fp8_e5m2>(const __nv_fp8_e5m2* ptr,
                                                              float (&out)[8]) {
  uint2 raw = *reinterpret_cast<const uint2*>(ptr);
  const __nv_fp8x2_storage_t* p = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) detail::fp8x2_to_float2<__NV_E5M2>(p[i], out[2 * i], out[2 * i + 1]);
}

template <>
__device__ __forceinline__ void load8_as_float<float>(const float* ptr, float (&out)[8]) {
  float4 a = reinterpret_cast<const float4*>(ptr)[0];
  float4 b = reinterpret_cast<const float4*>(ptr)[1];
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
  out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

// Raw (unconverted) 8-element bundle of a 16-bit or 8-bit type, so that a kernel can move bytes
// (cp.async into shared memory, then registers) before converting any.
template <typename T>
struct RawVec8 {
  static_assert(sizeof(T) <= 2, "RawVec8 holds 8-bit or 16-bit elements");
  using Storage = typename std::conditional<sizeof(T) == 1, uint2, uint4>::type;
  Storage bits[1];

  __device__ __forceinline__ void to_float(float (&out)[8]) const {
    load8_as_float<T>(reinterpret_cast<const T*>(bits), out);
  }
};

// Writes 8 floats as T to an aligned destination.
template <typename T>
__device__ __forceinline__ void store8_from_float(T* ptr, const float (&in)[8]);

template <>
__device__ __forceinline__ void store8_from_float<half>(half* ptr, const float (&in)[8]) {
  uint4 raw;
  __half2* h = reinterpret_cast<__half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<uint4*>(ptr) = raw;
}

template <>
__device__ __forceinline__ void store8_from_float<__nv_bfloat16>(__nv_bfloat16* ptr,
                                                                 const float (&in)[8]) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<uint4*>(ptr) = raw;
}

template <>
__device__ __forceinline__ void store8_from_float<float>(float* ptr, const float (&in)[8]) {
  reinterpret_cast<float4*>(ptr)[0] = make_float4(in[0], in[1], in[2], in[3]);
  reinterpret_cast<float4*>(ptr)[1] = make_float4(in[4], in[5], in[6], in[7]);
}

// Element-wise conversions, for spans that cannot use a 16-byte access.
namespace detail {
__device__ __forceinline__ float to_float(half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(float x) { return x; }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ half from_float<half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
}  // namespace detail

// Reads the first n (<= 8) of 8 consecutive elements at any address as floats, zero-filling the
// rest: one vectorized access when the span is whole and 16-byte aligned, element accesses
// otherwise (row tails, rows whose stride breaks the alignment). n == 0 touches no memory.
template <typename T>
__device__ __forceinline__ void load_upto8_as_float(const T* ptr, uint32_t n, float (&out)[8]) {
  if (n == 8 && reinterpret_cast<uintptr_t>(ptr) % 16 == 0) {
    load8_as_float(ptr, out);
    return;
  }
#pragma unroll
  for (uint32_t i = 0; i < 8; ++i) out[i] = i < n ? detail::to_float(ptr[i]) : 0.f;
}

// Writes the first n (<= 8) values as T, vectorized under the same condition as the load.
template <typename T>
__device__ __forceinline__ void store_upto8_from_float(T* ptr, uint32_t n, const float (&in)[8]) {
  if (n == 8 && reinterpret_cast<uintptr_t>(ptr) % 16 == 0) {
    store8_from_float(ptr, in);
    return;
  }
#pragma unroll
  for (uint32_t i = 0; i < 8; ++i)
    if (i < n) ptr[i] = detail::from_float<T>(in[i]);
}

}  // namespace flashinfer

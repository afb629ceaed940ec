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

namespace detail {
// One 32-bit word of packed elements (two of fp16/bf16, one fp32) to and from floats, and one
// element to and from its bits. Vec8 keeps its storage in whole words: element-sized accesses
// would make the compiler split it into a register per 16-bit element.
__device__ __forceinline__ void unpack_word(uint32_t w, float* f, const half*) {
  to_float2(*reinterpret_cast<const __half2*>(&w), f[0], f[1]);
}
// bf16 is the top half of a float: two bit operations, which leave the compiler no 16-bit
// temporaries to keep (__bfloat1622float2 costs the norm kernel 7 registers).
__device__ __forceinline__ void unpack_word(uint32_t w, float* f, const __nv_bfloat16*) {
  f[0] = __uint_as_float(w << 16), f[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack_word(uint32_t w, float* f, const float*) {
  f[0] = __uint_as_float(w);
}
__device__ __forceinline__ uint32_t pack_word(const float* f, const half*) {
  __half2 h = __floats2half2_rn(f[0], f[1]);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack_word(const float* f, const __nv_bfloat16*) {
  __nv_bfloat162 h = __floats2bfloat162_rn(f[0], f[1]);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack_word(const float* f, const float*) {
  return __float_as_uint(f[0]);
}
__device__ __forceinline__ uint32_t bits_of(half x) { return __half_as_ushort(x); }
__device__ __forceinline__ uint32_t bits_of(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ uint32_t bits_of(float x) { return __float_as_uint(x); }
__device__ __forceinline__ void from_bits(uint32_t b, half* x) {
  *x = __ushort_as_half(uint16_t(b));
}
__device__ __forceinline__ void from_bits(uint32_t b, __nv_bfloat16* x) {
  *x = __ushort_as_bfloat16(uint16_t(b));
}
__device__ __forceinline__ void from_bits(uint32_t b, float* x) { *x = __uint_as_float(b); }
}  // namespace detail

// Eight consecutive elements of T (fp16, bf16 or fp32) kept unconverted in registers, with the
// global loads and stores of the streaming kernels (norms, gated activations, RoPE): a thread
// issues all of its loads before it converts anything. (RawVec8 is decode's staging slot.)
template <typename T>
struct Vec8 {
  static constexpr uint32_t kPerWord = 4 / sizeof(T);  // elements per 32-bit word: 2 or 1
  static constexpr uint32_t kWords = 8 / kPerWord;
  uint32_t word[kWords];

  // Loads the first n (<= 8) elements at ptr and zeroes the rest; n == 0 touches no memory.
  // WHOLE: the launch guarantees that n is 0 or 8 and ptr 16-byte aligned (checked once on the
  // host for all rows), so an access is unconditional 16-byte loads. Otherwise the span is
  // tested here: vectorized when whole and aligned, element accesses else (row tails, rows whose
  // stride breaks the alignment).
  template <bool WHOLE>
  __device__ __forceinline__ void load(const T* ptr, uint32_t n) {
    if (WHOLE ? n != 0 : (n == 8 && reinterpret_cast<uintptr_t>(ptr) % 16 == 0)) {
#pragma unroll
      for (uint32_t q = 0; q < kWords / 4; ++q) {
        const uint4 u = reinterpret_cast<const uint4*>(ptr)[q];
        word[4 * q] = u.x, word[4 * q + 1] = u.y, word[4 * q + 2] = u.z, word[4 * q + 3] = u.w;
      }
      return;
    }
#pragma unroll
    for (uint32_t k = 0; k < kWords; ++k) word[k] = 0;
    if constexpr (!WHOLE) {
#pragma unroll
      for (uint32_t i = 0; i < 8; ++i)
        if (i < n) word[i / kPerWord] |= detail::bits_of(ptr[i]) << (16 * (i % kPerWord));
    }
  }

  // Writes the first n (<= 8) elements to ptr, under the same rules as load.
  template <bool WHOLE>
  __device__ __forceinline__ void store(T* ptr, uint32_t n) const {
    if (WHOLE ? n != 0 : (n == 8 && reinterpret_cast<uintptr_t>(ptr) % 16 == 0)) {
#pragma unroll
      for (uint32_t q = 0; q < kWords / 4; ++q)
        reinterpret_cast<uint4*>(ptr)[q] =
            uint4{word[4 * q], word[4 * q + 1], word[4 * q + 2], word[4 * q + 3]};
      return;
    }
    if constexpr (!WHOLE) {
#pragma unroll
      for (uint32_t i = 0; i < 8; ++i)
        if (i < n) detail::from_bits(word[i / kPerWord] >> (16 * (i % kPerWord)), ptr + i);
    }
  }

  __device__ __forceinline__ void to_float(float (&out)[8]) const {
#pragma unroll
    for (uint32_t k = 0; k < kWords; ++k)
      detail::unpack_word(word[k], out + k * kPerWord, static_cast<const T*>(nullptr));
  }
  __device__ __forceinline__ void from_float(const float (&in)[8]) {
#pragma unroll
    for (uint32_t k = 0; k < kWords; ++k)
      word[k] = detail::pack_word(in + k * kPerWord, static_cast<const T*>(nullptr));
  }
};

// Vec8s a thread keeps in flight per array it streams: 64 bytes (4 for 16-bit types, 2 for
// fp32), so that a few hundred resident threads per SM cover the memory latency.
template <typename T>
constexpr uint32_t kVec8sInFlight = 64 / (8 * sizeof(T));

}  // namespace flashinfer

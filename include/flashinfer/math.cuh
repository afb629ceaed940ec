// Small device math helpers shared by the attention kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace flashinfer {
namespace math {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kInf = __builtin_huge_valf();

// 2^x through the SFU (ex2.approx): softmax runs in base 2 so each exponential is one instruction.
__device__ __forceinline__ float ptx_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float ptx_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float ptx_tanh(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float shfl_xor(float x, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, x, lane_mask);
}

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

template <typename T>
__host__ __device__ constexpr T round_up(T a, T b) {
  return ceil_div(a, b) * b;
}

// Division by a run-time constant (the page size) with a multiply-high and a shift instead of the
// ~20-instruction integer division: the round-up method of Granlund and Montgomery, exact for
// dividends below 2^31.
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 1, shift = 0;

  FastDivmod() = default;
  __host__ __device__ explicit FastDivmod(uint32_t d) : divisor(d) {
    while ((uint64_t(1) << shift) < d) ++shift;
    multiplier = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }

  __device__ __forceinline__ void divmod(uint32_t n, uint32_t& quotient, uint32_t& remainder) const {
    quotient = (__umulhi(n, multiplier) + n) >> shift;
    remainder = n - quotient * divisor;
  }
};

}  // namespace math
}  // namespace flashinfer

// Positional encodings applied inside attention kernels: RoPE (LLaMA / NeoX "rotate half"
// convention) and ALiBi slopes. Conventions follow FlashInfer.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "math.cuh"

namespace flashinfer {

enum class PosEncodingMode : int32_t {
  kNone = 0,
  kRoPELlama = 1,  // rotary embedding applied to q and k on the fly
  kALiBi = 2,      // linear bias slope * (kv_pos - q_pos) added to the logits
};

// RoPE frequency of dimension `dim` (0 <= dim < rotary_dim): dims i and i + rotary_dim/2 share
// frequency rcp_scale * rcp_theta^(2i / rotary_dim).
__device__ __forceinline__ float rope_frequency(uint32_t dim, uint32_t rotary_dim, float rcp_scale,
                                                float log2_rcp_theta) {
  const uint32_t pair = dim % (rotary_dim / 2);
  return rcp_scale * math::ptx_exp2(log2_rcp_theta * float(2 * pair) / float(rotary_dim));
}

// Rotates a thread's 8 consecutive elements [dim0, dim0 + 8) of a vector whose other half
// (dims shifted by head_dim / 2) lives in `partner`: x' = x cos(p f) + rotate_half(x) sin(p f).
// The angle is formed in fp32, as FlashInfer does.
__device__ __forceinline__ void apply_rope8(float (&x)[8], const float (&partner)[8], uint32_t dim0,
                                           uint32_t head_dim, float position, float rcp_scale,
                                           float log2_rcp_theta) {
  const float sign = dim0 < head_dim / 2 ? -1.f : 1.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    float s, c;
    sincosf(position * rope_frequency(dim0 + i, head_dim, rcp_scale, log2_rcp_theta), &s, &c);
    x[i] = x[i] * c + sign * partner[i] * s;
  }
}

// ALiBi slope of head `head` among `num_heads` (Press et al.; non-powers of two interleave the
// slopes of the next power of two).
__host__ __device__ inline float alibi_slope(uint32_t head, uint32_t num_heads) {
  uint32_t n = 1;
  while (n * 2 <= num_heads) n *= 2;
  const float exponent = head < n ? -8.f * float(head + 1) / float(n)
                                  : -4.f * float(2 * (head - n) + 1) / float(n);
  return exp2f(exponent);
}

}  // namespace flashinfer

// Online-softmax state of a partial attention result, and the rule that merges two of them.
// Everything is in base 2: m is a running max of base-2 logits, lse = m + log2(d).
#pragma once

#include <cuda_runtime.h>

#include "../math.cuh"

namespace flashinfer {
namespace attention {

template <int kSize>
struct SoftmaxState {
  float o[kSize];  // un-normalized sum of p * v over this thread's slice of head_dim
  float m;         // running max of the logits seen so far (-inf before any)
  float d;         // sum of exp2(logit - m)

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int i = 0; i < kSize; ++i) o[i] = 0.f;
    m = -math::kInf;
    d = 0.f;
  }

  // Subtracting a finite max keeps exp2 finite: an all-masked state (m = -inf) contributes 0.
  __device__ __forceinline__ static float safe_max(float m) { return m == -math::kInf ? 0.f : m; }

  // Folds another state (o2, m2, d2) into this one.
  __device__ __forceinline__ void merge(const float (&o2)[kSize], float m2, float d2) {
    const float m_new = fmaxf(m, m2);
    const float m_ref = safe_max(m_new);
    const float a = math::ptx_exp2(m - m_ref), b = math::ptx_exp2(m2 - m_ref);
    d = d * a + d2 * b;
#pragma unroll
    for (int i = 0; i < kSize; ++i) o[i] = o[i] * a + o2[i] * b;
    m = m_new;
  }

  // Folds in the state of the lane `lane_mask` away (xor) in the warp.
  __device__ __forceinline__ void merge_with_lane(int lane_mask) {
    float o2[kSize];
#pragma unroll
    for (int i = 0; i < kSize; ++i) o2[i] = math::shfl_xor(o[i], lane_mask);
    const float m2 = math::shfl_xor(m, lane_mask), d2 = math::shfl_xor(d, lane_mask);
    merge(o2, m2, d2);
  }

  // Normalized output o / d; an empty state (no visible key) yields 0, as FlashInfer does.
  __device__ __forceinline__ void normalized(float (&out)[kSize], float scale = 1.f) const {
    const float r = d > 0.f ? scale / d : 0.f;
#pragma unroll
    for (int i = 0; i < kSize; ++i) out[i] = o[i] * r;
  }

  // Base-2 log-sum-exp; -inf when nothing was visible.
  __device__ __forceinline__ float lse() const {
    return d > 0.f ? m + math::ptx_log2(d) : -math::kInf;
  }
};

}  // namespace attention
}  // namespace flashinfer

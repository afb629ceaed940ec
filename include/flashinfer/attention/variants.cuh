// Attention variants as one small functor: how a raw q.k product becomes a base-2 logit.
// Kernels fold `query_scale` into q once, then call `transform` on each product, so the default
// (no soft cap, no ALiBi) costs nothing per logit beyond two predictable branches.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../math.cuh"
#include "../pos_enc.cuh"

namespace flashinfer {
namespace attention {

struct LogitsVariant {
  // Multiplier folded into q: sm_scale * log2(e), or sm_scale / cap with a soft cap
  // (the cap's tanh wants natural units; its output is then scaled to base 2).
  float query_scale;
  // Converts an ALiBi bias from natural logit units to the units of q.k * query_scale.
  float bias_scale;
  // cap * log2(e); 0 = no soft cap.
  float soft_cap_log2;
  bool use_alibi;

  // logits = sm_scale * q.k [+ alibi bias], then cap * tanh(logits / cap) when capped (FlashInfer
  // order), returned in base 2 so that softmax uses exp2.
  static LogitsVariant make(float sm_scale, float logits_soft_cap, bool use_alibi) {
    LogitsVariant v;
    if (logits_soft_cap > 0.f) {
      v.query_scale = sm_scale / logits_soft_cap;
      v.bias_scale = 1.f / logits_soft_cap;
      v.soft_cap_log2 = logits_soft_cap * math::kLog2e;
    } else {
      v.query_scale = sm_scale * math::kLog2e;
      v.bias_scale = math::kLog2e;
      v.soft_cap_log2 = 0.f;
    }
    v.use_alibi = use_alibi;
    return v;
  }

  // `scaled_qk` = q.k * query_scale; `alibi_bias_slope` = slope * bias_scale (precomputed per head).
  __device__ __forceinline__ float transform(float scaled_qk, float alibi_bias_slope,
                                             int32_t kv_pos, int32_t q_pos) const {
    float s = scaled_qk;
    if (use_alibi) s += alibi_bias_slope * float(kv_pos - q_pos);
    if (soft_cap_log2 > 0.f) s = soft_cap_log2 * math::ptx_tanh(s);
    return s;
  }
};

}  // namespace attention
}  // namespace flashinfer

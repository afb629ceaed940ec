// The attention options of a prefill call, single or batch, as the host resolved them, and how
// they become the kernel's parameters (include/flashinfer/attention/prefill.cuh). One struct so
// that both problems, the batch plan and both kernel bridges carry and copy them the same way.
#pragma once

#include <cmath>
#include <cstdint>

namespace fi_core {
namespace detail {

struct PrefillVariant {
  bool causal = false;
  int32_t window_left = -1;
  // Bit-packed custom mask (little bit order), or nullptr for none. Batch prefill: request b's
  // bits start at byte schedule.mask_indptr[b].
  const uint8_t* custom_mask = nullptr;
  bool use_alibi = false, use_rope = false;
  float sm_scale = 0.f;  // resolved (1/sqrt(head_dim) by default); at run time times k_scale
  float logits_soft_cap = 0.f, rope_scale = 1.f, rope_theta = 1e4f;
  float v_scale = 1.f;  // multiplies the output
};

// Fills the variant fields of a prefill kernel's Params (single or batch).
template <typename Params>
void set_variant_params(Params& p, const PrefillVariant& v) {
  using Logits = decltype(Params::logits);
  p.causal = v.causal;
  p.window_left = v.window_left;
  p.custom_mask = v.custom_mask;
  p.logits = Logits::make(v.sm_scale, v.logits_soft_cap, v.use_alibi);
  p.apply_rope = v.use_rope;
  p.rope_rcp_scale = 1.f / v.rope_scale;
  p.rope_log2_rcp_theta = -std::log2(v.rope_theta);
  p.v_scale = v.v_scale;
}

}  // namespace detail
}  // namespace fi_core

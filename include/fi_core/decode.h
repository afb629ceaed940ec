// fi_core host API: decode attention.
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Single-request decode: one query token per head against a contiguous KV cache.
struct SingleDecodeArgs {
  TensorView q;    // [num_qo_heads, head_dim], fp16 or bf16
  TensorView k;    // [kv_len, num_kv_heads, head_dim] (NHD) or [num_kv_heads, kv_len, head_dim] (HND)
  TensorView v;    // like k; fp16, bf16, fp8 e4m3 or e5m2 (k and v alike)
  TensorView out;  // like q
  TensorView lse;  // optional float32 [num_qo_heads], base-2 log-sum-exp
  TensorView workspace;  // split-KV scratch of plan.workspace_bytes bytes (any dtype), if > 0
  KVLayout kv_layout = KVLayout::kNHD;
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  int32_t window_left = -1;      // -1: no sliding window
  float logits_soft_cap = 0.f;   // 0: off
  float sm_scale = 0.f;          // 0: 1 / sqrt(head_dim)
  float rope_scale = 1.f;
  float rope_theta = 1e4f;
  float q_scale = 1.f, k_scale = 1.f, v_scale = 1.f;  // fp8 dequantization scales
};

struct SingleDecodePlanInfo {
  uint32_t num_chunks = 1;   // KV splits merged at the end
  uint32_t chunk_len = 0;
  size_t workspace_bytes = 0;
};

// Validates `args` (workspace excepted) and sizes the split for the device that holds q.
Status plan_single_decode(const SingleDecodeArgs& args, SingleDecodePlanInfo* plan);
// Validates `args` and launches on `stream` (on q's device; the current device is restored).
Status single_decode(const SingleDecodeArgs& args, cudaStream_t stream);

}  // namespace fi_core

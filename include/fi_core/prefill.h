// fi_core host API: prefill / append attention.
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Single-request prefill: qo_len query tokens against kv_len >= qo_len keys of a contiguous
// (strided) KV cache; query row i sits at position i + kv_len - qo_len (append).
struct SinglePrefillArgs {
  TensorView q;    // [qo_len, num_qo_heads, head_dim], fp16 or bf16
  TensorView k;    // [kv_len, num_kv_heads, head_dim] (NHD) or [num_kv_heads, kv_len, head_dim] (HND), q's dtype
  TensorView v;    // like k
  TensorView out;  // like q
  TensorView lse;  // optional float32 [qo_len, num_qo_heads], base-2 log-sum-exp
  KVLayout kv_layout = KVLayout::kNHD;
  bool causal = false;  // bottom-right aligned: row i sees keys j <= i + kv_len - qo_len
  // kNone or kALiBi; RoPE on the fly (kRoPELlama) is not supported yet.
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  int32_t window_left = -1;     // -1: no sliding window
  float logits_soft_cap = 0.f;  // 0: off
  float sm_scale = 0.f;         // 0: 1 / sqrt(head_dim)
  float rope_scale = 1.f;
  float rope_theta = 1e4f;
};

// Validates `args` and launches on `stream` (on q's device; the current device is restored).
Status single_prefill(const SinglePrefillArgs& args, cudaStream_t stream);

}  // namespace fi_core

// fi_core host API: per-token operators (RMSNorm, gated activations, RoPE).
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Per-token operators: RMSNorm, gated activations, rotary embeddings. Arrays of rows need a
// contiguous last dimension; their leading dimensions may have any strides that merge into at
// most two strided levels (a [batch, heads, dim] view into a packed QKV buffer is fine). Every
// data array of one call has the same dtype: float16, bfloat16 or float32. Any row length works;
// 16-byte accesses are used wherever a row's address allows them.

// out = input / sqrt(mean(input^2) + eps) * weight, or * (1 + weight) with gemma; float32 math.
struct RMSNormArgs {
  TensorView input;   // [batch_size, hidden_size] or [batch_size, num_heads, hidden_size]
  TensorView weight;  // [hidden_size], contiguous
  TensorView out;     // like input; may be input itself
  float eps = 1e-6f;
  bool gemma = false;
};
Status rmsnorm(const RMSNormArgs& args, cudaStream_t stream);

// In place: residual += input; input = RMSNorm of that sum (taken in float32, before rounding).
struct FusedAddRMSNormArgs {
  TensorView input;     // [batch_size, hidden_size] or [batch_size, num_heads, hidden_size]
  TensorView residual;  // like input
  TensorView weight;    // [hidden_size], contiguous
  float eps = 1e-6f;
  bool gemma = false;
};
Status fused_add_rmsnorm(const FusedAddRMSNormArgs& args, cudaStream_t stream);

enum class Activation : int32_t { kSilu = 0, kGelu = 1, kGeluTanh = 2 };

// out[..., i] = act(input[..., i]) * input[..., d + i]; float32 math.
struct ActAndMulArgs {
  TensorView input;  // [..., 2 * d]
  TensorView out;    // [..., d]
  Activation activation = Activation::kSilu;
};
Status act_and_mul(const ActAndMulArgs& args, cudaStream_t stream);

// Rotary embedding of q and k (conventions: include/flashinfer/rope.cuh). A token whose position
// is unknown (no request of indptr holds it) or outside cos_sin_cache gets NaN in its rotated
// dims: positions are on the GPU, so the host cannot reject them without a synchronization.
struct RopeArgs {
  TensorView q;       // [nnz, num_q_heads, head_dim], or [nnz, num_q_heads * head_size]
  TensorView k;       // [nnz, num_k_heads, head_dim], or [nnz, num_k_heads * head_size]
  TensorView q_rope;  // like q; may be q itself (in place)
  TensorView k_rope;  // like k; may be k itself
  // Positions (int32 or int64): pos_ids [nnz], or indptr [batch_size + 1] with offsets
  // [batch_size], a request's tokens at offsets[b], offsets[b] + 1, ...
  TensorView pos_ids, indptr, offsets;
  // Optional float32 [max_position, rotary_dim]: cos of the rotary_dim / 2 pairs, then their sin.
  // It fixes rotary_dim and replaces rope_scale, rope_theta and the Llama 3.1 scaling.
  TensorView cos_sin_cache;
  int64_t head_size = 0;    // > 0: q and k are 2-D, heads of head_size packed in the last dimension
  int32_t rotary_dim = 0;   // dims that rotate, from the start of each head; 0: all
  bool interleave = false;  // GPT-J pairs (2i, 2i + 1), else NeoX halves (i, i + rotary_dim / 2)
  float rope_scale = 1.f, rope_theta = 1e4f;
  bool llama31 = false;  // Llama 3.1 frequency scaling with these three:
  float low_freq_factor = 1.f, high_freq_factor = 4.f, old_context_len = 8192.f;
};
Status apply_rope(const RopeArgs& args, cudaStream_t stream);

}  // namespace fi_core

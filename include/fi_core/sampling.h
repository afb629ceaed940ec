// fi_core host API: sorting-free sampling.
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Sorting-free sampling (conventions and odd-input behaviour: include/flashinfer/sampling.cuh).
// probs: float32 [num_rows, vocab_size] with a contiguous last dimension, rows need not sum to 1.
// Each filter is applied when its use_* flag is set, with one value per output row from its
// array (int32 top_k, float32 top_p / min_p, [batch_size]) or else the scalar.
struct SamplingArgs {
  TensorView probs;
  TensorView samples;  // int32 [batch_size], the sampled token ids
  TensorView indices;  // optional int32/int64 [batch_size]: samples[i] is drawn from probs[indices[i]];
                       // absent: batch_size = num_rows
  bool use_top_k = false, use_top_p = false, use_min_p = false;
  TensorView top_k, top_p, min_p;
  int32_t top_k_val = 0;    // scalar top-k: >= 1
  float top_p_val = 1.f;    // scalar top-p: in (0, 1]
  float min_p_val = 0.f;    // scalar min-p: in [0, 1]
  bool top_k_first = true;  // both top-k and top-p: top-p over the top-k set (else the joint filter)
  uint64_t seed = 0, offset = 0;  // Philox: row i uses (seed, subsequence i, offset)
};
Status sampling_from_probs(const SamplingArgs& args, cudaStream_t stream);

// out[i] = probs[i] restricted to its top-k or top-p set, divided by the kept mass.
struct RenormProbsArgs {
  TensorView probs;  // float32 [batch_size, vocab_size]
  TensorView out;    // like probs (may be probs itself)
  bool use_top_k = false, use_top_p = false;
  TensorView top_k, top_p;  // optional per-row values, as in SamplingArgs
  int32_t top_k_val = 0;
  float top_p_val = 1.f;
};
Status renorm_probs(const RenormProbsArgs& args, cudaStream_t stream);

}  // namespace fi_core

// fi_core host API: sorting-free sampling, renormalization, top-k masking of logits and chain
// speculative sampling.
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Sorting-free sampling (conventions and odd-input behaviour: include/flashinfer/sampling.cuh).
// input: float32 probabilities [num_rows, vocab_size] (rows need not sum to 1), or with
// from_logits float32 / float16 / bfloat16 logits sampled from their softmax; contiguous last
// dimension. Each filter is applied when its use_* flag is set, with one value per output row from
// its array (int32 top_k, float32 top_p / min_p, [batch_size]) or else the scalar.
struct SamplingArgs {
  TensorView input;
  bool from_logits = false;
  TensorView samples;  // int32 [batch_size], the sampled token ids
  TensorView indices;  // optional int32/int64 [batch_size]: samples[i] is drawn from input[indices[i]];
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

// out[i] = logits[i] on its top-k set (ties at the k-th largest kept), -inf elsewhere.
struct MaskLogitsArgs {
  TensorView logits;  // float32 / float16 / bfloat16 [batch_size, vocab_size]
  TensorView out;     // like logits (may be logits itself)
  TensorView top_k;   // optional int32 [batch_size]; else top_k_val (>= 1) for every row
  int32_t top_k_val = 0;
};
Status top_k_mask_logits(const MaskLogitsArgs& args, cudaStream_t stream);

// Chain speculative sampling (rules: chain_speculative_kernel in include/flashinfer/sampling.cuh).
struct SpeculativeArgs {
  TensorView draft_probs;       // float32 [batch_size, num_speculative_tokens, vocab_size]
  TensorView draft_token_ids;   // int32 [batch_size, num_speculative_tokens]
  TensorView target_probs;      // float32 [batch_size, num_speculative_tokens + 1, vocab_size]
  TensorView output_token_ids;  // int32 [batch_size, num_speculative_tokens + 1]
  TensorView accepted_token_num, emitted_draft_token_num;  // int32 [batch_size]
  // Add this call's counts to each array (FlashInfer's accumulation), else store them.
  bool add_to_accepted = true, add_to_emitted = true;
  uint64_t seed = 0, offset = 0;
};
Status chain_speculative_sampling(const SpeculativeArgs& args, cudaStream_t stream);

}  // namespace fi_core

// Parameters of the sampling kernels (sampling.cuh), in a plain C++ header so that host code
// compiled without nvcc can fill them directly.
#pragma once

#include <cstdint>

namespace flashinfer {
namespace sampling {

// What the row kernel produces for each output row.
enum class SamplingMode : uint8_t {
  kSample,      // samples[i]: a token drawn from the filtered row
  kRenorm,      // out[i]: the filtered probabilities divided by their mass (float32)
  kMaskLogits,  // out[i]: the logits of the top-k set, -inf elsewhere (the input's dtype)
};

struct SamplingParams {
  // [num_input_rows, vocab_size] with row stride `input_stride` elements: float32 probabilities,
  // or logits (float32 / float16 / bfloat16, as the launcher's element type says).
  const void* input;
  int64_t input_stride;
  uint32_t num_input_rows, vocab_size;
  uint32_t batch_size;  // rows of work (output rows)
  const void* indices;  // nullptr, or [batch_size] int32/int64: input row per output row (kSample)
  bool indices_int64;
  // Each filter is used when its flag is set; per-row values from the array when non-null.
  bool use_top_k, use_top_p, use_min_p;
  const int32_t* top_k_arr;
  int32_t top_k;
  const float* top_p_arr;
  float top_p;
  const float* min_p_arr;
  float min_p;
  bool top_k_first;  // with top-k and top-p: top-p over the top-k set (else over the whole row)
  uint64_t seed, offset;
  SamplingMode mode;
  int32_t* samples;  // kSample: [batch_size]
  void* out;         // kRenorm / kMaskLogits: [batch_size, vocab_size], row stride out_stride
  int64_t out_stride;
};

// Chain speculative sampling: draft tokens checked against the target model, one row of work per
// request. Strides count elements; the vocabulary dimension is contiguous everywhere.
struct SpeculativeParams {
  const float* draft_probs;   // [batch_size, num_speculative_tokens, vocab_size]
  int64_t draft_stride_batch, draft_stride_step;
  const int32_t* draft_token_ids;  // [batch_size, num_speculative_tokens]
  int64_t draft_ids_stride_batch, draft_ids_stride_step;
  const float* target_probs;  // [batch_size, num_speculative_tokens + 1, vocab_size]
  int64_t target_stride_batch, target_stride_step;
  uint32_t batch_size, num_speculative_tokens, vocab_size;
  int32_t* output_token_ids;  // [batch_size, num_speculative_tokens + 1]
  int64_t output_stride_batch, output_stride_step;
  int32_t* accepted_token_num;       // [batch_size] (stride 1)
  int32_t* emitted_draft_token_num;  // [batch_size] (stride 1)
  bool add_to_accepted, add_to_emitted;  // add to each count (else overwrite it)
  uint64_t seed, offset;
};

}  // namespace sampling
}  // namespace flashinfer

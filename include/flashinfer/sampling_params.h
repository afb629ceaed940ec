// Parameters of the sampling kernel (sampling.cuh), in a plain C++ header so that host code
// compiled without nvcc can fill them directly.
#pragma once

#include <cstdint>

namespace flashinfer {
namespace sampling {

struct SamplingParams {
  const float* probs;  // [num_prob_rows, vocab_size], row stride `probs_stride` elements
  int64_t probs_stride;
  uint32_t num_prob_rows, vocab_size;
  uint32_t batch_size;     // rows of work (output rows)
  const void* indices;     // nullptr, or [batch_size] int32/int64: row of probs per output row
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
  int32_t* samples;  // [batch_size]: sampling; or nullptr and:
  float* renormed;   // [batch_size, vocab_size] with row stride renormed_stride: kept p / kept mass
  int64_t renormed_stride;
};

}  // namespace sampling
}  // namespace flashinfer

// The validated form of a sampling / renormalization call, from the host entry points
// (sampling.cpp, plain C++) to the kernel instantiation (sampling_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fi_core {
namespace detail {

struct SamplingProblem {
  const float* probs;
  int64_t probs_stride;
  uint32_t num_prob_rows, vocab_size, batch_size;
  const void* indices;  // or nullptr
  bool indices_int64;
  bool use_top_k, use_top_p, use_min_p;
  const int32_t* top_k_arr;
  int32_t top_k;
  const float* top_p_arr;
  float top_p;
  const float* min_p_arr;
  float min_p;
  bool top_k_first;
  uint64_t seed, offset;
  int32_t* samples;  // sampling, or nullptr and renormed
  float* renormed;
  int64_t renormed_stride;
};

// Defined in sampling_kernels.cu.
cudaError_t run_sampling_kernel(const SamplingProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

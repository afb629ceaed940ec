// Bridges a SamplingProblem to flashinfer::sampling::SampleOrRenorm (float32 probabilities).
#include "flashinfer/sampling.cuh"
#include "sampling_problem.h"

namespace fi_core {
namespace detail {

cudaError_t run_sampling_kernel(const SamplingProblem& pr, cudaStream_t stream) {
  flashinfer::sampling::SamplingParams p{};
  p.probs = pr.probs;
  p.probs_stride = pr.probs_stride;
  p.num_prob_rows = pr.num_prob_rows;
  p.vocab_size = pr.vocab_size;
  p.batch_size = pr.batch_size;
  p.indices = pr.indices;
  p.indices_int64 = pr.indices_int64;
  p.use_top_k = pr.use_top_k;
  p.use_top_p = pr.use_top_p;
  p.use_min_p = pr.use_min_p;
  p.top_k_arr = pr.top_k_arr;
  p.top_k = pr.top_k;
  p.top_p_arr = pr.top_p_arr;
  p.top_p = pr.top_p;
  p.min_p_arr = pr.min_p_arr;
  p.min_p = pr.min_p;
  p.top_k_first = pr.top_k_first;
  p.seed = pr.seed;
  p.offset = pr.offset;
  p.samples = pr.samples;
  p.renormed = pr.renormed;
  p.renormed_stride = pr.renormed_stride;
  return flashinfer::sampling::SampleOrRenorm(p, stream);
}

}  // namespace detail
}  // namespace fi_core

// Instantiations of the sampling kernels over float32 probabilities: sampling, renormalization
// and chain speculative sampling.
#include "flashinfer/sampling.cuh"
#include "sampling_problem.h"

namespace fi_core {
namespace detail {

cudaError_t run_sampling_kernel(const flashinfer::sampling::SamplingParams& params, cudaStream_t stream) {
  return flashinfer::sampling::SampleOrRenorm(params, stream);
}

cudaError_t run_speculative_kernel(const flashinfer::sampling::SpeculativeParams& params, cudaStream_t stream) {
  return flashinfer::sampling::ChainSpeculativeSampling(params, stream);
}

}  // namespace detail
}  // namespace fi_core

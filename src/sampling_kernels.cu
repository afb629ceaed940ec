// The one instantiation of the sampling kernel (float32 probabilities).
#include "flashinfer/sampling.cuh"
#include "sampling_problem.h"

namespace fi_core {
namespace detail {

cudaError_t run_sampling_kernel(const flashinfer::sampling::SamplingParams& params, cudaStream_t stream) {
  return flashinfer::sampling::SampleOrRenorm(params, stream);
}

}  // namespace detail
}  // namespace fi_core

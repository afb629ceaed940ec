// The sampling launches, declared for the host entry points (sampling.cpp, plain C++) and defined
// with the kernel instantiations (sampling_kernels.cu, sampling_logits_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "fi_core/core.h"
#include "flashinfer/sampling_params.h"

namespace fi_core {
namespace detail {

// float32 probabilities: sampling or renormalization (params.mode).
cudaError_t run_sampling_kernel(const flashinfer::sampling::SamplingParams& params, cudaStream_t stream);
// Logits of `dtype` (float32, float16, bfloat16): sampling (kSample) or top-k masking (kMaskLogits).
cudaError_t run_logits_kernel(const flashinfer::sampling::SamplingParams& params, DType dtype,
                              cudaStream_t stream);
cudaError_t run_speculative_kernel(const flashinfer::sampling::SpeculativeParams& params, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

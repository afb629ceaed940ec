// The sampling launch, declared for the host entry points (sampling.cpp, plain C++) and defined
// with the kernel instantiation (sampling_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "flashinfer/sampling_params.h"

namespace fi_core {
namespace detail {

cudaError_t run_sampling_kernel(const flashinfer::sampling::SamplingParams& params, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

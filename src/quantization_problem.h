// The bit-packing launch, declared for the host entry points (quantization.cpp, plain C++) and
// defined with the kernel (quantization_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "flashinfer/quantization_params.h"

namespace fi_core {
namespace detail {

cudaError_t run_packbits_kernel(const flashinfer::quantization::PackbitsParams& params, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

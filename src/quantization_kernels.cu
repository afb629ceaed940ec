// The bit-packing kernel: one instantiation per element width (the nonzero test needs no dtype).
#include "flashinfer/quantization.cuh"
#include "quantization_problem.h"

namespace fi_core {
namespace detail {

cudaError_t run_packbits_kernel(const flashinfer::quantization::PackbitsParams& params, cudaStream_t stream) {
  return flashinfer::quantization::Packbits(params, stream);
}

}  // namespace detail
}  // namespace fi_core

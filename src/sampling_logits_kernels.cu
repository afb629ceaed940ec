// Instantiations of the sampling kernels over logits (float32, float16, bfloat16): sampling from
// their softmax and top-k masking.
#include "dispatch.h"
#include "dtype_map.cuh"
#include "flashinfer/sampling.cuh"
#include "sampling_problem.h"

namespace fi_core {
namespace detail {

cudaError_t run_logits_kernel(const flashinfer::sampling::SamplingParams& params, DType dtype,
                              cudaStream_t stream) {
  namespace smp = flashinfer::sampling;
  return dispatch_float_dtype(dtype, [&](auto d) {
    using T = cuda_type_t<decltype(d)::value>;
    return params.mode == smp::SamplingMode::kMaskLogits ? smp::TopKMaskLogits<T>(params, stream)
                                                          : smp::SampleFromLogits<T>(params, stream);
  });
}

}  // namespace detail
}  // namespace fi_core

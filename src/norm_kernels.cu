// Bridges a NormProblem to flashinfer::norm::RMSNorm, instantiated for float16, bfloat16, float32.
#include "dtype_map.cuh"
#include "flashinfer/norm.cuh"
#include "llm_ops_problem.h"

namespace fi_core {
namespace detail {

template <DType D>
cudaError_t run_rmsnorm_kernel(const NormProblem& pr, cudaStream_t stream) {
  using T = cuda_type_t<D>;
  flashinfer::norm::RMSNormParams<T> p{};
  p.input = static_cast<const T*>(pr.input);
  p.residual = static_cast<T*>(pr.residual);
  p.weight = static_cast<const T*>(pr.weight);
  p.output = static_cast<T*>(pr.out);
  p.input_strides = pr.input_strides;
  p.residual_strides = pr.residual_strides;
  p.output_strides = pr.out_strides;
  p.num_rows = pr.num_rows;
  p.inner_rows = pr.inner_rows;
  p.hidden = pr.hidden;
  p.eps = pr.eps;
  p.weight_offset = pr.weight_offset;
  return flashinfer::norm::RMSNorm(p, stream);
}

template cudaError_t run_rmsnorm_kernel<DType::kFloat16>(const NormProblem&, cudaStream_t);
template cudaError_t run_rmsnorm_kernel<DType::kBFloat16>(const NormProblem&, cudaStream_t);
template cudaError_t run_rmsnorm_kernel<DType::kFloat32>(const NormProblem&, cudaStream_t);

}  // namespace detail
}  // namespace fi_core

// Bridges an ActAndMulProblem to flashinfer::activation::ActAndMul, instantiated for float16,
// bfloat16 and float32 with each activation.
#include "dtype_map.cuh"
#include "flashinfer/activation.cuh"
#include "llm_ops_problem.h"

namespace fi_core {
namespace detail {

template <DType D>
cudaError_t run_act_and_mul_kernel(const ActAndMulProblem& pr, cudaStream_t stream) {
  using T = cuda_type_t<D>;
  namespace act = flashinfer::activation;
  act::ActAndMulParams<T> p{};
  p.input = static_cast<const T*>(pr.input);
  p.output = static_cast<T*>(pr.out);
  p.input_strides = pr.input_strides;
  p.output_strides = pr.out_strides;
  p.num_rows = pr.num_rows;
  p.inner_rows = pr.inner_rows;
  p.d = pr.d;
  switch (pr.activation) {
    case Activation::kSilu: return act::ActAndMul<act::Silu>(p, stream);
    case Activation::kGelu: return act::ActAndMul<act::Gelu>(p, stream);
    case Activation::kGeluTanh: return act::ActAndMul<act::GeluTanh>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

template cudaError_t run_act_and_mul_kernel<DType::kFloat16>(const ActAndMulProblem&, cudaStream_t);
template cudaError_t run_act_and_mul_kernel<DType::kBFloat16>(const ActAndMulProblem&, cudaStream_t);
template cudaError_t run_act_and_mul_kernel<DType::kFloat32>(const ActAndMulProblem&, cudaStream_t);

}  // namespace detail
}  // namespace fi_core

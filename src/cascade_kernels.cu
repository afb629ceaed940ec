// Bridges the merge problems to flashinfer::attention::MergeState (merge_state.cuh) and
// MergeStates (cascade.cuh, the kernel that also merges decode's split-KV results), instantiated
// for float16, bfloat16 and float32.
#include "cascade_problem.h"
#include "dtype_map.cuh"
#include "flashinfer/attention/cascade.cuh"
#include "flashinfer/attention/merge_state.cuh"

namespace fi_core {
namespace detail {

template <DType D>
cudaError_t run_merge_state_kernel(const flashinfer::attention::MergeStateParams& params, cudaStream_t stream) {
  return flashinfer::attention::MergeState<cuda_type_t<D>>(params, stream);
}

template <DType D>
cudaError_t run_merge_states_kernel(const MergeStatesProblem& pr, cudaStream_t stream) {
  using T = cuda_type_t<D>;
  flashinfer::attention::MergeStatesParams<T, T> p{};
  p.v = static_cast<const T*>(pr.v);
  p.s = pr.s;
  p.o = static_cast<T*>(pr.out);
  p.lse = pr.lse;
  p.num_rows = pr.num_rows;
  p.num_states = pr.num_states;
  p.num_heads = pr.num_heads;
  p.head_dim = pr.head_dim;
  p.v_stride_row = pr.v_stride_row;
  p.v_stride_state = pr.v_stride_state;
  p.v_stride_head = pr.v_stride_head;
  p.s_stride_row = pr.s_stride_row;
  p.s_stride_state = pr.s_stride_state;
  p.s_stride_head = pr.s_stride_head;
  p.o_stride_row = pr.out_stride_row;
  p.o_stride_head = pr.out_stride_head;
  p.lse_stride_row = pr.lse_stride_row;
  p.lse_stride_head = pr.lse_stride_head;
  p.output_scale = 1.f;
  return flashinfer::attention::MergeStates(p, stream);
}

#define FI_CORE_INSTANTIATE(D)                                                                   \
  template cudaError_t run_merge_state_kernel<D>(const flashinfer::attention::MergeStateParams&, \
                                                 cudaStream_t);                                    \
  template cudaError_t run_merge_states_kernel<D>(const MergeStatesProblem&, cudaStream_t);
FI_CORE_INSTANTIATE(DType::kFloat16)
FI_CORE_INSTANTIATE(DType::kBFloat16)
FI_CORE_INSTANTIATE(DType::kFloat32)
#undef FI_CORE_INSTANTIATE

}  // namespace detail
}  // namespace fi_core

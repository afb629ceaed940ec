// The state-merging launches, declared for the host entry points (cascade.cpp, plain C++) and
// defined with the kernel instantiations (cascade_kernels.cu: float16, bfloat16 and float32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fi_core/api.h"
#include "flashinfer/attention/merge_state_params.h"

namespace fi_core {
namespace detail {

// Every state of a row: flashinfer::attention::MergeStatesParams (cascade.cuh, templated on the
// element types), untyped.
struct MergeStatesProblem {
  const void* v;
  const float* s;
  void* out;
  float* lse;
  uint32_t num_rows, num_states, num_heads, head_dim;
  int64_t v_stride_row, v_stride_state, v_stride_head;
  int64_t s_stride_row, s_stride_state, s_stride_head;
  int64_t out_stride_row, out_stride_head, lse_stride_row, lse_stride_head;
};

// Defined and instantiated in cascade_kernels.cu.
template <DType D>
cudaError_t run_merge_state_kernel(const flashinfer::attention::MergeStateParams& params, cudaStream_t stream);
template <DType D>
cudaError_t run_merge_states_kernel(const MergeStatesProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

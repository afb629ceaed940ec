// The validated, normalized form of a single-prefill call that crosses from the dispatcher (plain
// C++) into the kernel instantiations (one generated .cu per head dim x 16-bit dtype).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fi_core/api.h"

namespace fi_core {
namespace detail {

struct SinglePrefillProblem {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // nullptr when not requested
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h, k_stride_n, k_stride_h, v_stride_n, v_stride_h;
  int64_t lse_stride_n;
  uint32_t qo_len, kv_len, num_qo_heads, num_kv_heads;
  bool causal;
  int32_t window_left;
  // Bit-packed [qo_len, kv_len] custom mask (little bit order), or nullptr for none.
  const uint8_t* custom_mask;
  bool use_alibi;
  float sm_scale, logits_soft_cap;
  int device;
};

// Defined in single_prefill_kernels.cuh, instantiated in the generated sources for q == KV dtype.
template <int HEAD_DIM, DType D>
cudaError_t run_single_prefill_kernel(const SinglePrefillProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

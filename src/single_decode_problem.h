// The validated, normalized form of a single-decode call that crosses from the dispatcher (plain
// C++) into the kernel instantiations (one generated .cu per head dim x q dtype x kv dtype).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fi_core/api.h"

namespace fi_core {
namespace detail {

struct SingleDecodeProblem {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // nullptr when not requested
  void* workspace;
  size_t workspace_bytes;
  int64_t q_stride_h, o_stride_h, k_stride_n, k_stride_h, v_stride_n, v_stride_h;
  uint32_t kv_len, num_qo_heads, num_kv_heads;
  int32_t window_left;
  PosEncodingMode pos_encoding_mode;
  float sm_scale;  // q_scale * k_scale folded in
  float logits_soft_cap, rope_scale, rope_theta, v_scale;
  int32_t use_tensor_cores;
  int device;
};

// Defined in single_decode_kernels.cuh, instantiated in the generated sources.
template <int HEAD_DIM, DType Q, DType KV>
cudaError_t plan_single_decode_kernel(const SingleDecodeProblem& problem, SingleDecodePlanInfo* plan);
template <int HEAD_DIM, DType Q, DType KV>
cudaError_t run_single_decode_kernel(const SingleDecodeProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

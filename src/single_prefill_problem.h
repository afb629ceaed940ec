// The validated, normalized form of a single-prefill call that crosses from the dispatcher (plain
// C++) into the kernel instantiations (one generated .cu per head dim x q dtype x KV dtype).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fi_core/api.h"
#include "prefill_variant.h"

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
  PrefillVariant variant;  // sm_scale times k_scale; the custom mask is [qo_len, kv_len]
  int device;
};

// The (q, KV) dtype pairs the prefill kernels are built for (single and batch): KV of q's 16-bit
// dtype, or fp8 KV with either.
constexpr bool prefill_dtypes_built(DType q, DType kv) {
  return q == kv || kv == DType::kFloat8E4M3 || kv == DType::kFloat8E5M2;
}

// Defined in single_prefill_kernels.cuh, instantiated in the generated sources for KV of q's dtype
// or fp8.
template <int HEAD_DIM, DType Q, DType KV>
cudaError_t run_single_prefill_kernel(const SinglePrefillProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

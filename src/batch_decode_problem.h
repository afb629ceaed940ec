// The validated form of a batch-decode run that crosses from the host API into the kernel
// instantiations (one generated .cu per head dim x q dtype x kv dtype).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "device_schedule.h"
#include "fi_core/api.h"

namespace fi_core {
namespace detail {

struct BatchDecodeProblem {
  const void* q;
  void* out;
  float* lse;  // nullptr when not requested
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h, lse_stride_n;
  const void* k;
  const void* v;
  int64_t k_stride_page, k_stride_n, k_stride_h, v_stride_page, v_stride_n, v_stride_h;
  DeviceSchedule schedule;  // the plan: grid columns (DecodeWork), partial rows per request, page table
  bool split;         // some request has partial states to merge
  bool tensor_cores;  // the tensor-core kernel (q and KV of one 16-bit type, no RoPE)
  uint32_t page_size, batch_size, grid_size, num_qo_heads, num_kv_heads;
  PosEncodingMode pos_encoding_mode;
  float sm_scale;  // q_scale * k_scale folded in
  float logits_soft_cap, rope_scale, rope_theta, v_scale;
};

// Defined in batch_decode_kernels.cuh, instantiated in the generated sources.
// Grid columns the keys are spread over, and the kernel step that chunk lengths are multiples of.
template <int HEAD_DIM, DType Q, DType KV>
cudaError_t batch_decode_capacity(uint32_t num_qo_heads, uint32_t num_kv_heads, bool rope, bool tensor_cores,
                                  int device, uint32_t* max_items, uint32_t* tokens_per_step);
template <int HEAD_DIM, DType Q, DType KV>
cudaError_t run_batch_decode_kernel(const BatchDecodeProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

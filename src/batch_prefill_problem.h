// The validated form of a batch-prefill run that crosses from the host API into the kernel
// instantiations (one generated .cu per KV form x head dim x q dtype x KV dtype).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "device_schedule.h"
#include "fi_core/api.h"
#include "prefill_variant.h"
#include "single_prefill_problem.h"  // prefill_dtypes_built

namespace fi_core {
namespace detail {

struct BatchPrefillProblem {
  const void* q;
  void* out;
  float* lse;  // nullptr when not requested
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h, lse_stride_n;
  const void* k;
  const void* v;
  // Paged: page, slot and head strides; ragged: row and head strides (page strides unused).
  int64_t k_stride_page, k_stride_n, k_stride_h, v_stride_page, v_stride_n, v_stride_h;
  uint32_t page_size;  // paged only
  DeviceSchedule schedule;  // the plan: grid columns (PrefillWork), partial states per token, page table
  bool split;  // some tile has partial states to merge (always in CUDA-graph mode)
  uint32_t query_rows, grid_size, merge_rows, num_qo_heads, num_kv_heads;
  PrefillVariant variant;  // sm_scale times k_scale
};

// Defined in batch_prefill_kernels.cuh, instantiated in the generated sources (prefill_dtypes_built
// pairs) for the paged (PAGED) and the ragged KV form. Grid columns that fill one wave for a query
// tile:
template <int HEAD_DIM, DType Q, DType KV, bool PAGED>
cudaError_t batch_prefill_capacity(uint32_t query_rows, uint32_t num_kv_heads, int device, uint32_t* max_items);
template <int HEAD_DIM, DType Q, DType KV, bool PAGED>
cudaError_t run_batch_prefill_kernel(const BatchPrefillProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

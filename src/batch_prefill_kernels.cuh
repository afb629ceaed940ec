// Bridges a BatchPrefillProblem to the header template flashinfer::attention::BatchPrefill, for
// the paged (BatchPrefillPagedParams) or the ragged (BatchPrefillRaggedParams) KV form.
#pragma once

#include <type_traits>

#include "batch_prefill_problem.h"
#include "dtype_map.cuh"
#include "flashinfer/attention/batch_prefill.cuh"

namespace fi_core {
namespace detail {

template <int HEAD_DIM, DType Q, DType KV, bool PAGED>
struct BatchPrefillInstance {
  using T = cuda_type_t<Q>;
  using TKV = cuda_type_t<KV>;
  using Params = std::conditional_t<PAGED, flashinfer::attention::BatchPrefillPagedParams<T, TKV>,
                                    flashinfer::attention::BatchPrefillRaggedParams<T, TKV>>;
  using Kernel = flashinfer::attention::BatchPrefill<HEAD_DIM, Params>;
};

template <int HEAD_DIM, DType Q, DType KV, bool PAGED>
cudaError_t batch_prefill_capacity(uint32_t query_rows, uint32_t num_kv_heads, int device, uint32_t* max_items) {
  return BatchPrefillInstance<HEAD_DIM, Q, KV, PAGED>::Kernel::capacity(query_rows, num_kv_heads, device, max_items);
}

template <int HEAD_DIM, DType Q, DType KV, bool PAGED>
cudaError_t run_batch_prefill_kernel(const BatchPrefillProblem& pr, cudaStream_t stream) {
  using Instance = BatchPrefillInstance<HEAD_DIM, Q, KV, PAGED>;
  using T = typename Instance::T;
  using TKV = typename Instance::TKV;
  typename Instance::Params p{};
  p.q = static_cast<const T*>(pr.q);
  p.o = static_cast<T*>(pr.out);
  p.lse = pr.lse;
  p.q_stride_n = pr.q_stride_n;
  p.q_stride_h = pr.q_stride_h;
  p.o_stride_n = pr.o_stride_n;
  p.o_stride_h = pr.o_stride_h;
  p.lse_stride_n = pr.lse_stride_n;
  p.num_qo_heads = pr.num_qo_heads;
  p.num_kv_heads = pr.num_kv_heads;
  p.group_size = flashinfer::math::FastDivmod(pr.num_qo_heads / pr.num_kv_heads);
  set_variant_params(p, pr.variant);
  p.mask_indptr = pr.schedule.mask_indptr;
  p.partial_o = pr.schedule.partial_o;
  p.partial_lse = pr.schedule.partial_lse;
  p.k = static_cast<const TKV*>(pr.k);
  p.v = static_cast<const TKV*>(pr.v);
  p.k_stride_n = pr.k_stride_n;
  p.k_stride_h = pr.k_stride_h;
  p.v_stride_n = pr.v_stride_n;
  p.v_stride_h = pr.v_stride_h;
  if constexpr (PAGED) {
    p.k_stride_page = pr.k_stride_page;
    p.v_stride_page = pr.v_stride_page;
    p.page_table = pr.schedule.page_table;
    p.page_size = flashinfer::math::FastDivmod(pr.page_size);
  }
  p.work_items = static_cast<const flashinfer::attention::PrefillWork*>(pr.schedule.work);
  return Instance::Kernel::run(p, pr.query_rows, pr.grid_size, pr.merge_rows, pr.schedule.state_indptr, pr.split, stream);
}

}  // namespace detail
}  // namespace fi_core

// Bridges a SinglePrefillProblem to the header template flashinfer::attention::SinglePrefill.
#pragma once


#include "dtype_map.cuh"
#include "flashinfer/attention/prefill.cuh"
#include "single_prefill_problem.h"

namespace fi_core {
namespace detail {

template <int HEAD_DIM, DType Q, DType KV>
cudaError_t run_single_prefill_kernel(const SinglePrefillProblem& pr, cudaStream_t stream) {
  using T = cuda_type_t<Q>;
  using TKV = cuda_type_t<KV>;
  using Kernel = flashinfer::attention::SinglePrefill<HEAD_DIM, T, TKV>;
  typename Kernel::Params p{};
  p.q = static_cast<const T*>(pr.q);
  p.k = static_cast<const TKV*>(pr.k);
  p.v = static_cast<const TKV*>(pr.v);
  p.o = static_cast<T*>(pr.out);
  p.lse = pr.lse;
  p.q_stride_n = pr.q_stride_n;
  p.q_stride_h = pr.q_stride_h;
  p.o_stride_n = pr.o_stride_n;
  p.o_stride_h = pr.o_stride_h;
  p.k_stride_n = pr.k_stride_n;
  p.k_stride_h = pr.k_stride_h;
  p.v_stride_n = pr.v_stride_n;
  p.v_stride_h = pr.v_stride_h;
  p.lse_stride_n = pr.lse_stride_n;
  p.qo_len = pr.qo_len;
  p.kv_len = pr.kv_len;
  p.num_qo_heads = pr.num_qo_heads;
  p.num_kv_heads = pr.num_kv_heads;
  set_variant_params(p, pr.variant);
  p.mask_indptr = nullptr;  // one request: its mask starts at byte 0
  return Kernel::run(p, stream);
}

}  // namespace detail
}  // namespace fi_core

// Bridges a BatchDecodeProblem to the header template flashinfer::attention::BatchDecode.
#pragma once

#include <cmath>

#include "batch_decode_problem.h"
#include "dtype_map.cuh"
#include "flashinfer/attention/batch_decode.cuh"

namespace fi_core {
namespace detail {

template <int HEAD_DIM, DType Q, DType KV>
struct BatchDecodeInstance {
  using DTypeQ = cuda_type_t<Q>;
  using DTypeKV = cuda_type_t<KV>;
  using Kernel = flashinfer::attention::BatchDecode<HEAD_DIM, DTypeQ, DTypeKV, DTypeQ>;
};

template <int HEAD_DIM, DType Q, DType KV>
cudaError_t batch_decode_capacity(uint32_t num_qo_heads, uint32_t num_kv_heads, bool rope, bool tensor_cores,
                                  int device, uint32_t* max_items, uint32_t* tokens_per_step) {
  return BatchDecodeInstance<HEAD_DIM, Q, KV>::Kernel::capacity(num_qo_heads, num_kv_heads, rope, tensor_cores,
                                                                 device, max_items, tokens_per_step);
}

template <int HEAD_DIM, DType Q, DType KV>
cudaError_t run_batch_decode_kernel(const BatchDecodeProblem& pr, cudaStream_t stream) {
  using Instance = BatchDecodeInstance<HEAD_DIM, Q, KV>;
  using DTypeQ = typename Instance::DTypeQ;
  using DTypeKV = typename Instance::DTypeKV;
  typename Instance::Kernel::Params p{};
  p.q = static_cast<const DTypeQ*>(pr.q);
  p.o = static_cast<DTypeQ*>(pr.out);
  p.lse = pr.lse;
  p.q_stride_n = pr.q_stride_n;
  p.q_stride_h = pr.q_stride_h;
  p.o_stride_n = pr.o_stride_n;
  p.o_stride_h = pr.o_stride_h;
  p.lse_stride_n = pr.lse_stride_n;
  p.num_qo_heads = pr.num_qo_heads;
  p.num_kv_heads = pr.num_kv_heads;
  p.logits = flashinfer::attention::LogitsVariant::make(
      pr.sm_scale, pr.logits_soft_cap, pr.pos_encoding_mode == PosEncodingMode::kALiBi);
  p.apply_rope = pr.pos_encoding_mode == PosEncodingMode::kRoPELlama;
  p.rope_rcp_scale = 1.f / pr.rope_scale;
  p.rope_log2_rcp_theta = -std::log2(pr.rope_theta);
  p.v_scale = pr.v_scale;
  p.partial_o = pr.schedule.partial_o;
  p.partial_lse = pr.schedule.partial_lse;
  p.k = static_cast<const DTypeKV*>(pr.k);
  p.v = static_cast<const DTypeKV*>(pr.v);
  p.k_stride_page = pr.k_stride_page;
  p.k_stride_n = pr.k_stride_n;
  p.k_stride_h = pr.k_stride_h;
  p.v_stride_page = pr.v_stride_page;
  p.v_stride_n = pr.v_stride_n;
  p.v_stride_h = pr.v_stride_h;
  p.page_table = pr.schedule.page_table;
  p.page_size = flashinfer::math::FastDivmod(pr.page_size);
  p.work_items = static_cast<const flashinfer::attention::DecodeWork*>(pr.schedule.work);
  return Instance::Kernel::run(p, pr.grid_size, pr.batch_size, pr.schedule.state_indptr, pr.split, pr.tensor_cores,
                               stream);
}

}  // namespace detail
}  // namespace fi_core

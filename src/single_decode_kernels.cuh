// Bridges a SingleDecodeProblem to the header template flashinfer::attention::SingleDecode.
#pragma once

#include <cmath>

#include "dtype_map.cuh"
#include "flashinfer/attention/single_decode.cuh"
#include "single_decode_problem.h"

namespace fi_core {
namespace detail {

template <int HEAD_DIM, DType Q, DType KV>
struct SingleDecodeInstance {
  using DTypeQ = cuda_type_t<Q>;
  using DTypeKV = cuda_type_t<KV>;
  using Kernel = flashinfer::attention::SingleDecode<HEAD_DIM, DTypeQ, DTypeKV, DTypeQ>;

  static typename Kernel::Params params(const SingleDecodeProblem& pr) {
    typename Kernel::Params p{};
    p.q = static_cast<const DTypeQ*>(pr.q);
    p.k = static_cast<const DTypeKV*>(pr.k);
    p.v = static_cast<const DTypeKV*>(pr.v);
    p.o = static_cast<DTypeQ*>(pr.out);
    p.lse = pr.lse;
    p.q_stride_h = pr.q_stride_h;
    p.o_stride_h = pr.o_stride_h;
    p.k_stride_n = pr.k_stride_n;
    p.k_stride_h = pr.k_stride_h;
    p.v_stride_n = pr.v_stride_n;
    p.v_stride_h = pr.v_stride_h;
    p.kv_len = pr.kv_len;
    p.num_qo_heads = pr.num_qo_heads;
    p.num_kv_heads = pr.num_kv_heads;
    p.window_left = pr.window_left;
    p.logits = flashinfer::attention::LogitsVariant::make(
        pr.sm_scale, pr.logits_soft_cap, pr.pos_encoding_mode == PosEncodingMode::kALiBi);
    p.apply_rope = pr.pos_encoding_mode == PosEncodingMode::kRoPELlama;
    p.rope_rcp_scale = 1.f / pr.rope_scale;
    p.rope_log2_rcp_theta = -std::log2(pr.rope_theta);
    p.v_scale = pr.v_scale;
    return p;
  }
};

template <int HEAD_DIM, DType Q, DType KV>
cudaError_t plan_single_decode_kernel(const SingleDecodeProblem& problem, SingleDecodePlanInfo* info) {
  using Instance = SingleDecodeInstance<HEAD_DIM, Q, KV>;
  typename Instance::Kernel::Plan plan;
  cudaError_t err =
      Instance::Kernel::plan(Instance::params(problem), problem.device, problem.use_tensor_cores, &plan);
  info->tensor_cores = plan.tensor_cores;
  info->num_chunks = plan.num_chunks;
  info->chunk_len = plan.chunk_len;
  info->workspace_bytes = plan.workspace_bytes;
  return err;
}

template <int HEAD_DIM, DType Q, DType KV>
cudaError_t run_single_decode_kernel(const SingleDecodeProblem& problem, cudaStream_t stream) {
  using Instance = SingleDecodeInstance<HEAD_DIM, Q, KV>;
  const auto params = Instance::params(problem);
  typename Instance::Kernel::Plan plan;
  cudaError_t err = Instance::Kernel::plan(params, problem.device, problem.use_tensor_cores, &plan);
  if (err != cudaSuccess) return err;
  if (plan.workspace_bytes > problem.workspace_bytes) return cudaErrorInvalidValue;
  return Instance::Kernel::run(params, plan, problem.workspace, stream);
}

}  // namespace detail
}  // namespace fi_core

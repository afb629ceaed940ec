// The validated, normalized forms of the per-token operators (norms, gated activations, RoPE)
// that cross from the host entry points (plain C++) into the kernel instantiations (*_kernels.cu,
// one per operator family, each instantiated for float16, bfloat16 and float32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fi_core/api.h"
#include "flashinfer/rows.cuh"

namespace fi_core {
namespace detail {

using flashinfer::RowStrides;

struct NormProblem {
  const void* input;
  void* residual;  // fused add, else nullptr
  const void* weight;
  void* out;
  RowStrides input_strides, residual_strides, out_strides;
  uint32_t num_rows, inner_rows, hidden;
  float eps, weight_offset;
};

struct ActAndMulProblem {
  const void* input;
  void* out;
  RowStrides input_strides, out_strides;
  uint32_t num_rows, inner_rows, d;
  Activation activation;
};

struct RopeProblem {
  const void* q;
  const void* k;
  void* q_rope;
  void* k_rope;
  int64_t q_stride_n, q_stride_h, k_stride_n, k_stride_h;
  int64_t q_rope_stride_n, q_rope_stride_h, k_rope_stride_n, k_rope_stride_h;
  uint32_t nnz, num_q_heads, num_k_heads, head_dim, rotary_dim;
  const void* pos_ids;  // or nullptr: indptr and offsets
  const void* indptr;
  const void* offsets;
  uint32_t batch_size;
  DType index_dtype;           // of pos_ids / indptr / offsets: kInt32 or kInt64
  const float* cos_sin_cache;  // or nullptr: angles from the frequencies below
  int64_t cache_stride, cache_len;
  bool interleave;
  float rope_scale, rope_theta;
  bool llama31;
  float low_freq_factor, high_freq_factor, old_context_len;
};

// Defined and instantiated in norm_kernels.cu, activation_kernels.cu, rope_kernels.cu.
template <DType D>
cudaError_t run_rmsnorm_kernel(const NormProblem& problem, cudaStream_t stream);
template <DType D>
cudaError_t run_act_and_mul_kernel(const ActAndMulProblem& problem, cudaStream_t stream);
template <DType D>
cudaError_t run_rope_kernel(const RopeProblem& problem, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

// Bridges a RopeProblem to flashinfer::rope::ApplyRope, instantiated for float16, bfloat16 and
// float32 with int32 and int64 positions.
#include <cstdint>

#include "dtype_map.cuh"
#include "flashinfer/rope.cuh"
#include "llm_ops_problem.h"

namespace fi_core {
namespace detail {

template <DType D, typename IdType>
cudaError_t run_rope(const RopeProblem& pr, cudaStream_t stream) {
  using T = cuda_type_t<D>;
  namespace rope = flashinfer::rope;
  rope::RopeParams<T, IdType> p{};
  p.q = static_cast<const T*>(pr.q);
  p.k = static_cast<const T*>(pr.k);
  p.q_rope = static_cast<T*>(pr.q_rope);
  p.k_rope = static_cast<T*>(pr.k_rope);
  p.q_stride_n = pr.q_stride_n, p.q_stride_h = pr.q_stride_h;
  p.k_stride_n = pr.k_stride_n, p.k_stride_h = pr.k_stride_h;
  p.q_rope_stride_n = pr.q_rope_stride_n, p.q_rope_stride_h = pr.q_rope_stride_h;
  p.k_rope_stride_n = pr.k_rope_stride_n, p.k_rope_stride_h = pr.k_rope_stride_h;
  p.nnz = pr.nnz;
  p.num_q_heads = pr.num_q_heads;
  p.num_k_heads = pr.num_k_heads;
  p.head_dim = pr.head_dim;
  p.rotary_dim = pr.rotary_dim;
  p.pos_ids = static_cast<const IdType*>(pr.pos_ids);
  p.indptr = static_cast<const IdType*>(pr.indptr);
  p.offsets = static_cast<const IdType*>(pr.offsets);
  p.batch_size = pr.batch_size;
  p.cos_sin_cache = pr.cos_sin_cache;
  p.cache_stride = pr.cache_stride;
  p.cache_len = pr.cache_len;
  if (pr.cos_sin_cache == nullptr) {
    const rope::Llama31Scaling llama31{pr.low_freq_factor, pr.high_freq_factor, pr.old_context_len};
    rope::rope_frequencies(pr.rotary_dim, pr.rope_scale, pr.rope_theta,
                           pr.llama31 ? &llama31 : nullptr, p.freq);
  }
  return rope::ApplyRope<T, IdType>::run(p, pr.interleave, stream);
}

template <DType D>
cudaError_t run_rope_kernel(const RopeProblem& pr, cudaStream_t stream) {
  return pr.index_dtype == DType::kInt64 ? run_rope<D, int64_t>(pr, stream)
                                         : run_rope<D, int32_t>(pr, stream);
}

template cudaError_t run_rope_kernel<DType::kFloat16>(const RopeProblem&, cudaStream_t);
template cudaError_t run_rope_kernel<DType::kBFloat16>(const RopeProblem&, cudaStream_t);
template cudaError_t run_rope_kernel<DType::kFloat32>(const RopeProblem&, cudaStream_t);

}  // namespace detail
}  // namespace fi_core

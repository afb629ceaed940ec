// The paged KV-cache kernels: one instantiation each (appending copies bytes, whatever the dtype).
#include "flashinfer/page.cuh"
#include "page_problem.h"

namespace fi_core {
namespace detail {

cudaError_t run_append_paged_kv_cache_kernel(const flashinfer::page::AppendPagedKVCacheParams& params,
                                             cudaStream_t stream) {
  return flashinfer::page::AppendPagedKVCache(params, stream);
}

cudaError_t run_batch_indices_positions_kernel(const flashinfer::page::BatchIndicesPositionsParams& params,
                                               cudaStream_t stream) {
  return flashinfer::page::BatchIndicesPositions(params, stream);
}

cudaError_t run_seq_lens_kernel(const flashinfer::page::SeqLensParams& params, cudaStream_t stream) {
  return flashinfer::page::SeqLens(params, stream);
}

}  // namespace detail
}  // namespace fi_core

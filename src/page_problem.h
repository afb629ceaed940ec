// The paged KV-cache launches, declared for the host entry points (page.cpp, plain C++) and
// defined with the kernels (page_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "flashinfer/page_params.h"

namespace fi_core {
namespace detail {

cudaError_t run_append_paged_kv_cache_kernel(const flashinfer::page::AppendPagedKVCacheParams& params,
                                             cudaStream_t stream);
cudaError_t run_batch_indices_positions_kernel(const flashinfer::page::BatchIndicesPositionsParams& params,
                                               cudaStream_t stream);
cudaError_t run_seq_lens_kernel(const flashinfer::page::SeqLensParams& params, cudaStream_t stream);

}  // namespace detail
}  // namespace fi_core

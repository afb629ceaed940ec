// Single-request decode: one query token per head against a contiguous (strided) KV cache; the
// KV range is split so the grid fills the GPU in one wave, and the chunks' states are merged.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../math.cuh"
#include "cascade.cuh"
#include "decode.cuh"
#include "decode_tc.cuh"

namespace flashinfer {
namespace attention {

// Host side of single decode: plan the split for a device, then launch the decode kernel (CUDA
// cores, or tensor cores for q and KV of one 16-bit type) and the merge.
template <uint32_t HEAD_DIM, typename DTypeQ, typename DTypeKV, typename DTypeO>
struct SingleDecode {
  using Params = SingleDecodeParams<DTypeQ, DTypeKV, DTypeO>;

  struct Plan {
    bool tensor_cores = false;
    uint32_t kv_begin = 0;  // first visible key (sliding window)
    uint32_t chunk_len = 0;
    uint32_t num_chunks = 1;
    size_t workspace_bytes = 0;  // split-KV scratch the run needs
  };

  // use_tensor_cores: 1 / 0, or -1 for the default (choose_tensor_cores).
  static cudaError_t plan(const Params& p, int device, int use_tensor_cores, Plan* plan) {
    const uint32_t group_size = p.num_qo_heads / p.num_kv_heads;
    plan->tensor_cores =
        choose_tensor_cores(kHasTensorCoreDecode<Params>, p.apply_rope, use_tensor_cores, group_size);
    plan->kv_begin = visible_begin(p.kv_len, p.window_left);
    const uint32_t visible = p.kv_len - plan->kv_begin;
    uint32_t wave = 0, head_tiles = 0, tokens_per_step = 0;
    cudaError_t err = decode_launch_shape<HEAD_DIM, Params>(group_size, p.apply_rope, plan->tensor_cores, device,
                                                            &wave, &head_tiles, &tokens_per_step);
    if (err != cudaSuccess) return err;

    // The keys spread evenly over the CTAs of a split plan (decode_launch_shape), as batch decode
    // spreads a batch's.
    const uint32_t max_chunks = wave / (p.num_kv_heads * head_tiles);
    plan->chunk_len = decode_chunk_len(visible, visible, max_chunks, tokens_per_step,
                                       decode_min_chunk_len(plan->tensor_cores, tokens_per_step));
    plan->num_chunks = std::max(1u, math::ceil_div(visible, plan->chunk_len));
    plan->workspace_bytes =
        plan->num_chunks > 1 ? size_t(plan->num_chunks) * p.num_qo_heads * (HEAD_DIM + 1) * sizeof(float)
                             : 0;
    return cudaSuccess;
  }

  // `workspace` must hold plan.workspace_bytes (16-byte aligned) when the plan splits the KV.
  static cudaError_t run(Params p, const Plan& plan, void* workspace, cudaStream_t stream) {
    p.kv_begin = plan.kv_begin;
    p.chunk_len = plan.chunk_len;
    if (plan.num_chunks > 1) {
      p.partial_o = static_cast<float*>(workspace);
      p.partial_lse = p.partial_o + size_t(plan.num_chunks) * p.num_qo_heads * HEAD_DIM;
    }
    cudaError_t err = launch_decode<HEAD_DIM>(p, plan.tensor_cores, plan.num_chunks, stream);
    if (err != cudaSuccess || plan.num_chunks == 1) return err;
    auto merge = split_kv_merge<HEAD_DIM>(p);
    merge.num_rows = 1;
    merge.num_states = plan.num_chunks;
    return MergeStates(merge, stream, /*after_producer=*/true);
  }
};

}  // namespace attention
}  // namespace flashinfer

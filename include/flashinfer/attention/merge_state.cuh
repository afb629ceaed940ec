// Merging two attention states (v, s) row by row: the public merge_state and merge_state_in_place.
// Many states per row go through MergeStates (cascade.cuh) instead.
//
// A state is a partial output v, normalized over its own keys, and s, the base-2 log-sum-exp of
// their logits. As a SoftmaxState it is (o = v, m = s, d = 1): SoftmaxState::merge then gives
// the state of both key sets, with its rule for a state that saw no key (s = -inf adds nothing;
// two such states give v = 0, s = -inf).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../math.cuh"
#include "../rows.cuh"
#include "../vec_dtypes.cuh"
#include "merge_state_params.h"
#include "state.cuh"

namespace flashinfer {
namespace attention {

constexpr uint32_t kMergeStateThreads = 128;

// A CTA holds blockDim.y (row, head) pairs, blockDim.x threads each; a thread takes every
// blockDim.x-th 8-element slice of the pair's head_dim. The pair's first thread is the only one
// that touches its s in global memory: it reads s_a and s_b into shared memory for the others and
// writes s_out, so s_out may be s_a even though other warps still need the old value.
template <typename T>
__global__ void __launch_bounds__(kMergeStateThreads) merge_state_kernel(const MergeStateParams p) {
  __shared__ float shared_s[2][kMergeStateThreads];
  const uint32_t pair = blockIdx.x * blockDim.y + threadIdx.y;
  const uint32_t row = pair / p.num_heads;
  const bool merge = pair < p.num_pairs && (p.mask == nullptr || p.mask[row * p.mask_stride] != 0);
  if (merge && threadIdx.x == 0) {
    shared_s[0][threadIdx.y] = p.s_a[row_offset(pair, p.num_heads, p.s_a_strides)];
    shared_s[1][threadIdx.y] = p.s_b[row_offset(pair, p.num_heads, p.s_b_strides)];
  }
  __syncthreads();
  if (!merge) return;

  const float s_a = shared_s[0][threadIdx.y], s_b = shared_s[1][threadIdx.y];
  const T* v_a = static_cast<const T*>(p.v_a) + row_offset(pair, p.num_heads, p.v_a_strides);
  const T* v_b = static_cast<const T*>(p.v_b) + row_offset(pair, p.num_heads, p.v_b_strides);
  T* v_out = static_cast<T*>(p.v_out) + row_offset(pair, p.num_heads, p.v_out_strides);
  for (uint32_t e = threadIdx.x * 8; e < p.head_dim; e += blockDim.x * 8) {
    const uint32_t n = min(8u, p.head_dim - e);
    SoftmaxState<8> state;
    load_upto8_as_float(v_a + e, n, state.o);
    state.m = s_a;
    state.d = 1.f;
    float other[8];
    load_upto8_as_float(v_b + e, n, other);
    state.merge(other, s_b, 1.f);
    float merged[8];
    state.normalized(merged);
    // Each element is read and written by the same thread: v_out may be v_a or v_b.
    store_upto8_from_float(v_out + e, n, merged);
    if (e == 0) p.s_out[row_offset(pair, p.num_heads, p.s_out_strides)] = state.lse();
  }
}

// T: the element type of the v arrays (half, __nv_bfloat16 or float).
template <typename T>
cudaError_t MergeState(const MergeStateParams& p, cudaStream_t stream) {
  if (p.num_pairs == 0 || p.head_dim == 0) return cudaSuccess;
  const uint32_t slices = math::ceil_div(p.head_dim, 8u);
  uint32_t threads = 1;  // per pair: a power of two, so that short heads share a CTA
  while (threads < slices && threads < kMergeStateThreads) threads *= 2;
  const dim3 block(threads, kMergeStateThreads / threads);
  merge_state_kernel<T><<<math::ceil_div(p.num_pairs, block.y), block, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace attention
}  // namespace flashinfer

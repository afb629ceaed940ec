// Merging of attention states (o, lse) computed over disjoint KV ranges: the split-KV reduction
// of the decode kernels and the public merge_state(s) operators share this one kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../math.cuh"
#include "../vec_dtypes.cuh"
#include "state.cuh"

namespace flashinfer {
namespace attention {

// States are addressed as [row][state][head][dim] through strides (in elements), so that both
// merge_states' [seq, num_states, heads, dim] tensors and the split-KV scratch fit.
template <typename DTypeIn, typename DTypeOut>
struct MergeStatesParams {
  const DTypeIn* v;  // partial outputs, normalized per state
  const float* s;    // their base-2 lse
  DTypeOut* o;
  float* lse;  // optional (nullptr)
  uint32_t num_rows, num_states, num_heads, head_dim;
  int64_t v_stride_row, v_stride_state, v_stride_head;
  int64_t s_stride_row, s_stride_state, s_stride_head;
  int64_t o_stride_row, o_stride_head;
  int64_t lse_stride_row, lse_stride_head;
  float output_scale;  // multiplies the merged output (fp8 v_scale); 1 otherwise
};

constexpr uint32_t kMergeWarpsPerBlock = 4;

// One warp per (row, head); each lane owns 8-element bundles of head_dim.
template <typename DTypeIn, typename DTypeOut>
__global__ void __launch_bounds__(kMergeWarpsPerBlock * 32)
    merge_states_kernel(const MergeStatesParams<DTypeIn, DTypeOut> p) {
  const uint32_t warp_global = blockIdx.x * kMergeWarpsPerBlock + threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (warp_global >= p.num_rows * p.num_heads) return;
  const uint32_t row = warp_global / p.num_heads, head = warp_global % p.num_heads;

  const float* s = p.s + row * p.s_stride_row + head * p.s_stride_head;
  float m = -math::kInf;
  for (uint32_t i = 0; i < p.num_states; ++i) m = fmaxf(m, s[i * p.s_stride_state]);
  const float m_ref = SoftmaxState<1>::safe_max(m);
  float denom = 0.f;
  for (uint32_t i = 0; i < p.num_states; ++i) denom += math::ptx_exp2(s[i * p.s_stride_state] - m_ref);
  const float out_scale = denom > 0.f ? p.output_scale / denom : 0.f;

  const DTypeIn* v = p.v + row * p.v_stride_row + head * p.v_stride_head;
  DTypeOut* o = p.o + row * p.o_stride_row + head * p.o_stride_head;
  for (uint32_t dim = lane * 8; dim < p.head_dim; dim += 32 * 8) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (uint32_t i = 0; i < p.num_states; ++i) {
      const float w = math::ptx_exp2(s[i * p.s_stride_state] - m_ref);
      float x[8];
      load8_as_float(v + i * p.v_stride_state + dim, x);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += w * x[j];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j] *= out_scale;
    store8_from_float(o + dim, acc);
  }
  if (p.lse != nullptr && lane == 0) {
    p.lse[row * p.lse_stride_row + head * p.lse_stride_head] =
        denom > 0.f ? m_ref + math::ptx_log2(denom) : -math::kInf;
  }
}

template <typename DTypeIn, typename DTypeOut>
cudaError_t MergeStates(const MergeStatesParams<DTypeIn, DTypeOut>& params, cudaStream_t stream) {
  const uint32_t warps = params.num_rows * params.num_heads;
  if (warps == 0) return cudaSuccess;
  const dim3 grid(math::ceil_div(warps, kMergeWarpsPerBlock));
  merge_states_kernel<DTypeIn, DTypeOut><<<grid, kMergeWarpsPerBlock * 32, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace attention
}  // namespace flashinfer

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
  // Optional [num_rows + 1]: row r merges states state_indptr[r] .. state_indptr[r + 1] - 1 (the
  // split-KV scratch of a batch, where requests have different numbers of chunks; v_stride_row
  // and s_stride_row are then unused). A row without states is left alone: its output was
  // written directly.
  const int32_t* state_indptr;
  uint32_t num_rows, num_states, num_heads, head_dim;
  int64_t v_stride_row, v_stride_state, v_stride_head;
  int64_t s_stride_row, s_stride_state, s_stride_head;
  int64_t o_stride_row, o_stride_head;
  int64_t lse_stride_row, lse_stride_head;
  float output_scale;  // multiplies the merged output (fp8 v_scale); 1 otherwise
};

constexpr uint32_t kMergeThreads = 128;

// Programmatic dependent launch (sm_90): a kernel that produces states lets the merge launch
// before it finishes (the merge's CTAs are scheduled while the producer's last CTAs run), and the
// merge waits for the producer's results and memory before it reads any. Both are no-ops when the
// merge was launched the ordinary way, and on earlier GPUs.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_producer() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// One CTA per (row, head). Each thread takes an 8-element slice of head_dim and every
// `groups`-th state, folding them into its own online-softmax state as their lse and values
// arrive (no reduction over the lse first: the merge runs after the producer, on the critical
// path, and one round of independent loads is its whole latency); the group states of a slice
// are then merged through shared memory.
template <typename DTypeIn, typename DTypeOut>
__global__ void __launch_bounds__(kMergeThreads)
    merge_states_kernel(const MergeStatesParams<DTypeIn, DTypeOut> p) {
  __shared__ float partial_o[kMergeThreads][8];
  __shared__ float partial_m[kMergeThreads], partial_d[kMergeThreads];
  wait_for_producer();
  const uint32_t row = blockIdx.x / p.num_heads, head = blockIdx.x % p.num_heads;
  const uint32_t tid = threadIdx.x;

  uint32_t num_states = p.num_states;
  int64_t v_row = row * p.v_stride_row, s_row = row * p.s_stride_row;
  if (p.state_indptr != nullptr) {
    const int32_t first = p.state_indptr[row];
    num_states = uint32_t(p.state_indptr[row + 1] - first);
    if (num_states == 0) return;
    v_row = first * p.v_stride_state;
    s_row = first * p.s_stride_state;
  }
  const uint32_t slices = p.head_dim / 8;  // a power of two <= kMergeThreads (checked by MergeStates)
  const uint32_t slice = tid % slices, group = tid / slices, groups = kMergeThreads / slices;
  const float* s = p.s + s_row + head * p.s_stride_head;
  const DTypeIn* v = p.v + v_row + head * p.v_stride_head + slice * 8;
  SoftmaxState<8> state;
  state.init();
#pragma unroll 4
  for (uint32_t i = group; i < num_states; i += groups) {
    float x[8];
    load8_as_float(v + i * p.v_stride_state, x);
    state.merge(x, s[i * p.s_stride_state], 1.f);  // a normalized state: d = 1 at m = its lse
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) partial_o[tid][j] = state.o[j];
  partial_m[tid] = state.m;
  partial_d[tid] = state.d;
  __syncthreads();
  if (group != 0) return;

  for (uint32_t g = 1; g < groups; ++g) {
    const uint32_t t = g * slices + slice;
    state.merge(partial_o[t], partial_m[t], partial_d[t]);
  }
  float out[8];
  state.normalized(out, p.output_scale);
  store8_from_float(p.o + row * p.o_stride_row + head * p.o_stride_head + slice * 8, out);
  if (p.lse != nullptr && tid == 0) p.lse[row * p.lse_stride_row + head * p.lse_stride_head] = state.lse();
}

// `after_producer`: launched right after the kernel that wrote the states, which calls
// allow_dependent_launch(), so the two overlap (programmatic dependent launch).
template <typename DTypeIn, typename DTypeOut>
cudaError_t MergeStates(const MergeStatesParams<DTypeIn, DTypeOut>& params, cudaStream_t stream,
                        bool after_producer = false) {
  const uint32_t slices = params.head_dim / 8;
  if (params.head_dim % 8 != 0 || slices == 0 || slices > kMergeThreads || (slices & (slices - 1)) != 0)
    return cudaErrorInvalidValue;  // head_dim must be 8 x a power of two, at most 1024
  const uint32_t blocks = params.num_rows * params.num_heads;
  if (blocks == 0) return cudaSuccess;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(kMergeThreads);
  config.stream = stream;
  cudaLaunchAttribute overlap[1];
  overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = overlap;
  config.numAttrs = after_producer ? 1 : 0;
  return cudaLaunchKernelEx(&config, merge_states_kernel<DTypeIn, DTypeOut>, params);
}

}  // namespace attention
}  // namespace flashinfer

// Decode attention on CUDA cores: one query token per head against a request's KV cache, which
// is either contiguous/strided (single decode) or paged (batch decode, batch_decode.cuh). One CTA
// owns one KV head (with up to kMaxHeadsPerCta of its query heads, so K and V are read from memory
// once for the whole GQA group) and one range of one request's keys; long ranges are split over
// several CTAs so the grid fills the GPU in a single wave, and their partial states are merged by
// the shared merge kernel (cascade.cuh).
//
// Thread layout: a token's head_dim is spread over kThreadsPerToken lanes, 8 elements each (one
// 16-byte load for fp16/bf16, 8 bytes for fp8); a warp covers kTokensPerWarp tokens at a time, and
// every lane keeps kUnroll tokens' loads in flight before it uses any.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../cp_async.cuh"
#include "../device_cache.cuh"
#include "../math.cuh"
#include "../pos_enc.cuh"
#include "../vec_dtypes.cuh"
#include "cascade.cuh"
#include "state.cuh"
#include "variants.cuh"

namespace flashinfer {
namespace attention {

// What one CTA computes: keys [begin, end) of one request, for that request's query, which sits
// at position kv_len - 1. Written by the batch planner on the host (32 bytes: two vector loads).
struct alignas(16) DecodeWork {
  int32_t request;      // < 0: nothing to do (padding of a grid sized for the largest plan)
  int32_t partial_row;  // < 0: the CTA covers the whole visible range and writes the output;
                        // else the row of the split-KV scratch that receives its partial state
  uint32_t begin, end;
  uint32_t kv_len;
  int32_t page_begin;   // paged KV: the request's first entry in the page table
  uint32_t reserved[2];
};

// Query, output and variant: what every decode problem shares. Rows of q, o and lse are indexed
// by request (a single decode has one) and query head.
template <typename DTypeQ_, typename DTypeKV_, typename DTypeO_>
struct DecodeCommonParams {
  using DTypeQ = DTypeQ_;
  using DTypeKV = DTypeKV_;
  using DTypeO = DTypeO_;
  const DTypeQ* q;
  DTypeO* o;
  float* lse;  // base-2 log-sum-exp, or nullptr
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h, lse_stride_n;
  uint32_t num_qo_heads, num_kv_heads;
  int32_t window_left;  // keys at positions >= kv_len - 1 - window_left are visible; -1 = all
  LogitsVariant logits;
  bool apply_rope;
  float rope_rcp_scale, rope_log2_rcp_theta;
  float v_scale;  // multiplies the output (scale of fp8 V); 1 otherwise
  // Split-KV scratch: normalized partial outputs [rows, num_qo_heads, head_dim] and their lse
  // [rows, num_qo_heads].
  float* partial_o;
  float* partial_lse;
};

// A request's keys and values in one strided array each: token n of the CTA's KV head at
// k + n * stride_n.
template <typename DTypeKV>
struct StridedSequence {
  using Location = uint32_t;
  const DTypeKV* k;
  const DTypeKV* v;
  int64_t k_stride_n, v_stride_n;

  __device__ __forceinline__ Location locate(uint32_t pos) const { return pos; }
  __device__ __forceinline__ const DTypeKV* k_at(Location pos) const { return k + pos * k_stride_n; }
  __device__ __forceinline__ const DTypeKV* v_at(Location pos) const { return v + pos * v_stride_n; }
};

// The first visible key when the last window_left + 1 keys are kept.
__host__ __device__ __forceinline__ uint32_t visible_begin(uint32_t kv_len, int32_t window_left) {
  return window_left >= 0 && uint32_t(window_left) + 1 < kv_len ? kv_len - 1 - uint32_t(window_left) : 0;
}

// Single decode: one request, its visible keys cut into gridDim.x chunks of chunk_len.
template <typename DTypeQ, typename DTypeKV, typename DTypeO>
struct SingleDecodeParams : DecodeCommonParams<DTypeQ, DTypeKV, DTypeO> {
  using Sequence = StridedSequence<DTypeKV>;
  const DTypeKV* k;  // token n of kv head h at n * k_stride_n + h * k_stride_h (NHD or HND)
  const DTypeKV* v;
  int64_t k_stride_n, k_stride_h, v_stride_n, v_stride_h;
  uint32_t kv_len;
  uint32_t kv_begin, chunk_len;  // set from the plan

  __device__ __forceinline__ DecodeWork work() const {
    DecodeWork w{};
    w.request = 0;
    w.partial_row = gridDim.x == 1 ? -1 : int32_t(blockIdx.x);
    w.begin = kv_begin + blockIdx.x * chunk_len;
    w.end = min(w.begin + chunk_len, kv_len);
    w.kv_len = kv_len;
    return w;
  }
  __device__ __forceinline__ Sequence sequence(const DecodeWork&, uint32_t kv_head) const {
    return {k + kv_head * k_stride_h, v + kv_head * v_stride_h, k_stride_n, v_stride_n};
  }
};

constexpr uint32_t kDecodeWarps = 4;
constexpr uint32_t kDecodeThreads = kDecodeWarps * 32;
constexpr uint32_t kMaxHeadsPerCta = 8;
// Below this many keys per chunk the CUDA-core kernel's merge costs more than the parallelism
// gains. (The tensor-core kernel's chunks may be one step: decode_min_chunk_len.)
constexpr uint32_t kMinDecodeChunkLen = 128;

template <uint32_t HEAD_DIM, uint32_t HEADS_PER_CTA>
struct DecodeTraits {
  static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM / 8 <= 32 && 32 % (HEAD_DIM / 8) == 0,
                "head_dim must be 8 x a power of two, at most 256");
  static constexpr uint32_t kThreadsPerToken = HEAD_DIM / 8;
  static constexpr uint32_t kTokensPerWarp = 32 / kThreadsPerToken;
  // Tokens per lane per step, and steps in flight: 3 x 2 tokens x (K + V) = 192 bytes per lane
  // outstanding (96 for fp8), enough to cover memory latency at a few CTAs per SM.
  static constexpr uint32_t kUnroll = 2;
  static constexpr uint32_t kStages = 4;
  static constexpr uint32_t kTokensPerStep = kDecodeWarps * kTokensPerWarp * kUnroll;
};

// The kernel, for any Problem with work() (this CTA's DecodeWork) and sequence(work, kv_head)
// (where its keys are: a Problem::Sequence, StridedSequence or PagedSequence). ROPE is a template flag, not a run-time
// branch: its sincos code would otherwise inflate the register footprint (and so cut the
// occupancy) of every call.
template <uint32_t HEAD_DIM, uint32_t HEADS_PER_CTA, bool ROPE, typename Problem>
__global__ void __launch_bounds__(kDecodeThreads) decode_kernel(const Problem p) {
  using DTypeQ = typename Problem::DTypeQ;
  using DTypeKV = typename Problem::DTypeKV;
  using Traits = DecodeTraits<HEAD_DIM, HEADS_PER_CTA>;
  constexpr uint32_t kTPT = Traits::kThreadsPerToken;
  constexpr uint32_t kUnroll = Traits::kUnroll;
  constexpr uint32_t kStepTokens = Traits::kTokensPerStep;
  constexpr uint32_t H = HEADS_PER_CTA;

  allow_dependent_launch();  // the merge of split-KV states may start launching now
  const DecodeWork w = p.work();
  if (w.request < 0) return;

  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const uint32_t tx = lane % kTPT;  // which 8 dims of the token
  const uint32_t ty = lane / kTPT;  // which token of the warp's group
  const uint32_t dim0 = tx * 8;

  const uint32_t group_size = p.num_qo_heads / p.num_kv_heads;
  const uint32_t head_tiles = math::ceil_div(group_size, H);
  const uint32_t kv_head = blockIdx.y / head_tiles;
  const uint32_t first_qo_head = kv_head * group_size + (blockIdx.y % head_tiles) * H;
  const uint32_t heads_here = min(H, (kv_head + 1) * group_size - first_qo_head);
  const int32_t q_pos = int32_t(w.kv_len) - 1;
  const uint32_t begin = w.begin, end = w.end;
  const auto seq = p.sequence(w, kv_head);

  // Each thread streams its own tokens through a private ring of kStages shared-memory slots:
  // cp.async keeps kStages - 1 steps of K and V in flight while the current step is computed.
  // A thread reads back only what it copied itself, so the loop needs no barrier. After the loop
  // the same memory holds the cross-warp merge.
  using Slot = typename RawVec8<DTypeKV>::Storage;
  constexpr uint32_t kStages = Traits::kStages;
  constexpr size_t kRingBytes = sizeof(Slot) * kStages * kUnroll * 2 * kDecodeThreads;
  constexpr size_t kMergeBytes = sizeof(float) * kDecodeWarps * H * (HEAD_DIM + 2);
  __shared__ alignas(16) uint8_t smem[kRingBytes > kMergeBytes ? kRingBytes : kMergeBytes];
  auto ring = reinterpret_cast<Slot(*)[kUnroll][2][kDecodeThreads]>(smem);

  auto token = [&](uint32_t step, uint32_t u) {
    return step + (u * kDecodeWarps + warp) * Traits::kTokensPerWarp + ty;
  };
  // Where the tokens of the next step to issue are. Locating a paged token reads the page table,
  // so it is done one step ahead of the copy that needs it: the load's latency hides behind a
  // step of compute instead of stalling the copy. Tokens past the end are located at the last
  // key (valid memory) and then zero-filled.
  typename decltype(seq)::Location next[kUnroll];
  auto locate = [&](uint32_t step) {
    if (step < end) {
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) next[u] = seq.locate(min(token(step, u), end - 1));
    }
  };
  auto issue = [&](uint32_t step, uint32_t stage) {
    if (step < end) {
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) {
        const bool valid = token(step, u) < end;  // past the end: p = 0 for those slots
        cp_async::copy<sizeof(Slot)>(&ring[stage][u][0][threadIdx.x], seq.k_at(next[u]) + dim0, valid);
        cp_async::copy<sizeof(Slot)>(&ring[stage][u][1][threadIdx.x], seq.v_at(next[u]) + dim0, valid);
      }
    }
    cp_async::commit_group();  // also when empty, so that group counts stay uniform
  };

  const uint32_t num_steps = end > begin ? math::ceil_div(end - begin, kStepTokens) : 0;
#pragma unroll
  for (uint32_t stage = 0; stage + 1 < kStages; ++stage) {
    locate(begin + stage * kStepTokens);
    issue(begin + stage * kStepTokens, stage);
  }
  locate(begin + (kStages - 1) * kStepTokens);

  // Query slices, rotated and pre-scaled so that q.k is already a base-2 logit (variants.cuh);
  // loaded while the first KV steps are in flight.
  float q[H][8];
  float alibi_bias_slope[H];
#pragma unroll
  for (uint32_t h = 0; h < H; ++h) {
    const uint32_t qo_head = first_qo_head + min(h, heads_here - 1);
    const DTypeQ* q_row = p.q + w.request * p.q_stride_n + qo_head * p.q_stride_h;
    load8_as_float(q_row + dim0, q[h]);
    if constexpr (ROPE) {
      float partner[8];
      load8_as_float(q_row + (dim0 + HEAD_DIM / 2) % HEAD_DIM, partner);
      apply_rope8(q[h], partner, dim0, HEAD_DIM, float(q_pos), p.rope_rcp_scale,
                  p.rope_log2_rcp_theta);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) q[h][i] *= p.logits.query_scale;
    alibi_bias_slope[h] =
        p.logits.use_alibi ? alibi_slope(qo_head, p.num_qo_heads) * p.logits.bias_scale : 0.f;
  }

  SoftmaxState<8> state[H];
#pragma unroll
  for (uint32_t h = 0; h < H; ++h) state[h].init();

  for (uint32_t i = 0; i < num_steps; ++i) {
    cp_async::wait_group<kStages - 2>();
    const uint32_t step = begin + i * kStepTokens;
    uint32_t pos[kUnroll];
    RawVec8<DTypeKV> k_raw[kUnroll], v_raw[kUnroll];
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      pos[u] = token(step, u);
      k_raw[u].bits[0] = ring[i % kStages][u][0][threadIdx.x];
      v_raw[u].bits[0] = ring[i % kStages][u][1][threadIdx.x];
    }
    // Refill the slot consumed in the previous step (its data already sits in registers).
    issue(step + (kStages - 1) * kStepTokens, (i + kStages - 1) % kStages);
    locate(step + kStages * kStepTokens);

    float s[H][kUnroll];
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      float k[8];
      k_raw[u].to_float(k);
      if constexpr (ROPE) {
        float partner[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) partner[i] = math::shfl_xor(k[i], kTPT / 2);
        apply_rope8(k, partner, dim0, HEAD_DIM, float(pos[u]), p.rope_rcp_scale,
                    p.rope_log2_rcp_theta);
      }
#pragma unroll
      for (uint32_t h = 0; h < H; ++h) {
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc = fmaf(q[h][i], k[i], acc);
        s[h][u] = acc;
      }
    }
    // Sum the partial dot products over the lanes that share a token.
#pragma unroll
    for (uint32_t h = 0; h < H; ++h) {
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (uint32_t offset = kTPT / 2; offset >= 1; offset /= 2)
          s[h][u] += math::shfl_xor(s[h][u], offset);
        s[h][u] = pos[u] < end ? p.logits.transform(s[h][u], alibi_bias_slope[h], pos[u], q_pos)
                               : -math::kInf;
      }
    }

    float v[kUnroll][8];
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) v_raw[u].to_float(v[u]);
#pragma unroll
    for (uint32_t h = 0; h < H; ++h) {
      float m_new = state[h].m;
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) m_new = fmaxf(m_new, s[h][u]);
      const float m_ref = SoftmaxState<8>::safe_max(m_new);
      const float rescale = math::ptx_exp2(state[h].m - m_ref);
      state[h].d *= rescale;
#pragma unroll
      for (int i = 0; i < 8; ++i) state[h].o[i] *= rescale;
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) {
        const float prob = math::ptx_exp2(s[h][u] - m_ref);
        state[h].d += prob;
#pragma unroll
        for (int i = 0; i < 8; ++i) state[h].o[i] = fmaf(prob, v[u][i], state[h].o[i]);
      }
      state[h].m = m_new;
    }
  }

  // Merge the token groups of each warp, then the warps through shared memory.
#pragma unroll
  for (uint32_t offset = kTPT; offset < 32; offset *= 2) {
#pragma unroll
    for (uint32_t h = 0; h < H; ++h) state[h].merge_with_lane(offset);
  }
  cp_async::wait_group<0>();
  __syncthreads();  // every thread's copies have landed before the ring becomes the merge buffer
  auto smem_o = reinterpret_cast<float(*)[H][HEAD_DIM]>(smem);
  auto smem_md = reinterpret_cast<float(*)[H][2]>(smem + sizeof(float) * kDecodeWarps * H * HEAD_DIM);
  if (ty == 0 && warp > 0) {
#pragma unroll
    for (uint32_t h = 0; h < H; ++h) {
#pragma unroll
      for (int i = 0; i < 8; ++i) smem_o[warp][h][dim0 + i] = state[h].o[i];
      if (tx == 0) {
        smem_md[warp][h][0] = state[h].m;
        smem_md[warp][h][1] = state[h].d;
      }
    }
  }
  __syncthreads();
  if (warp != 0 || ty != 0) return;

#pragma unroll
  for (uint32_t h = 0; h < H; ++h) {
#pragma unroll
    for (uint32_t w_other = 1; w_other < kDecodeWarps; ++w_other) {
      float o_other[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) o_other[i] = smem_o[w_other][h][dim0 + i];
      state[h].merge(o_other, smem_md[w_other][h][0], smem_md[w_other][h][1]);
    }
    if (h >= heads_here) continue;
    const uint32_t qo_head = first_qo_head + h;
    float out[8];
    if (w.partial_row < 0) {
      state[h].normalized(out, p.v_scale);
      store8_from_float(p.o + w.request * p.o_stride_n + qo_head * p.o_stride_h + dim0, out);
      if (p.lse != nullptr && tx == 0) p.lse[w.request * p.lse_stride_n + qo_head] = state[h].lse();
    } else {
      state[h].normalized(out);
      const size_t row = size_t(w.partial_row) * p.num_qo_heads + qo_head;
      store8_from_float(p.partial_o + row * HEAD_DIM + dim0, out);
      if (tx == 0) p.partial_lse[row] = state[h].lse();
    }
  }
}

// Launch configurations shared by the single and batch decode hosts: heads per CTA and RoPE as
// compile-time constants, and how many CTAs of each stay resident on an SM.
template <uint32_t HEAD_DIM, typename Problem>
struct DecodeKernels {
  // Heads of a GQA group that one CTA serves: the group rounded up to a power of two, at most 8;
  // larger groups take several CTAs per KV head.
  static uint32_t heads_per_cta(uint32_t group_size) {
    uint32_t h = 1;
    while (h < group_size && h < kMaxHeadsPerCta) h *= 2;
    return h;
  }

  template <uint32_t H, bool ROPE>
  static auto kernel() {
    return decode_kernel<HEAD_DIM, H, ROPE, Problem>;
  }

  // Calls fn(heads_per_cta, rope) with both as std::integral_constant.
  template <typename Fn>
  static cudaError_t with_config(uint32_t heads, bool rope, Fn&& fn) {
    if (rope) return with_heads<true>(heads, fn);
    return with_heads<false>(heads, fn);
  }
  template <bool ROPE, typename Fn>
  static cudaError_t with_heads(uint32_t heads, Fn& fn) {
    using Rope = std::integral_constant<bool, ROPE>;
    switch (heads) {
      case 1: return fn(std::integral_constant<uint32_t, 1>{}, Rope{});
      case 2: return fn(std::integral_constant<uint32_t, 2>{}, Rope{});
      case 4: return fn(std::integral_constant<uint32_t, 4>{}, Rope{});
      default: return fn(std::integral_constant<uint32_t, 8>{}, Rope{});
    }
  }

  // CTAs of one instantiation resident per SM, cached per device (the occupancy query costs
  // microseconds, and plans are made on every step), and the tokens one CTA step covers.
  static cudaError_t occupancy(uint32_t heads, bool rope, int device, int* ctas_per_sm,
                               uint32_t* tokens_per_step) {
    return with_config(heads, rope, [&](auto h, auto r) {
      constexpr uint32_t H = decltype(h)::value;
      constexpr bool ROPE = decltype(r)::value;
      *tokens_per_step = DecodeTraits<HEAD_DIM, H>::kTokensPerStep;
      static PerDeviceValue resident;
      return resident.get(device, ctas_per_sm, [](int* value) {
        return cudaOccupancyMaxActiveBlocksPerMultiprocessor(value, kernel<H, ROPE>(), kDecodeThreads, 0);
      });
    });
  }

  // CTAs that fit on the whole device at once: a split plan spreads the keys over all of them
  // (one CTA keeps too few loads in flight to hold an SM's share of the bandwidth alone).
  static cudaError_t wave_ctas(uint32_t heads, bool rope, int device, uint32_t* ctas,
                               uint32_t* tokens_per_step) {
    int num_sms = 0, ctas_per_sm = 0;
    cudaError_t err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess) err = occupancy(heads, rope, device, &ctas_per_sm, tokens_per_step);
    *ctas = uint32_t(num_sms) * uint32_t(std::max(ctas_per_sm, 1));
    return err;
  }

  static cudaError_t launch(const Problem& p, uint32_t heads, uint32_t grid_x, cudaStream_t stream) {
    const uint32_t group_size = p.num_qo_heads / p.num_kv_heads;
    const dim3 grid(grid_x, p.num_kv_heads * math::ceil_div(group_size, heads));
    return with_config(heads, p.apply_rope, [&](auto h, auto r) {
      kernel<decltype(h)::value, decltype(r)::value>()<<<grid, kDecodeThreads, 0, stream>>>(p);
      return cudaGetLastError();
    });
  }
};

}  // namespace attention
}  // namespace flashinfer

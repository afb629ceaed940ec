// Single-request decode attention on CUDA cores: one query token per head against a contiguous
// KV cache. One CTA owns one KV head (with up to kMaxHeadsPerCta of its query heads, so K and V are
// read from memory once for the whole GQA group) and one chunk of the KV sequence; chunks are
// sized so the grid fills the GPU in a single wave, and their partial states are merged by the
// shared merge kernel (cascade.cuh).
//
// Thread layout: a token's head_dim is spread over kThreadsPerToken lanes, 8 elements each (one
// 16-byte load for fp16/bf16, 8 bytes for fp8); a warp covers kTokensPerWarp tokens at a time, and
// every lane keeps kUnroll tokens' loads in flight before it uses any.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "../cp_async.cuh"
#include "../math.cuh"
#include "../pos_enc.cuh"
#include "../vec_dtypes.cuh"
#include "cascade.cuh"
#include "state.cuh"
#include "variants.cuh"

namespace flashinfer {
namespace attention {

template <typename DTypeQ, typename DTypeKV, typename DTypeO>
struct SingleDecodeParams {
  const DTypeQ* q;   // [num_qo_heads, head_dim], row stride q_stride_h
  const DTypeKV* k;  // token n of kv head h at n * k_stride_n + h * k_stride_h (NHD or HND)
  const DTypeKV* v;
  DTypeO* o;   // [num_qo_heads, head_dim], row stride o_stride_h
  float* lse;  // [num_qo_heads] base-2 log-sum-exp, or nullptr
  int64_t q_stride_h, o_stride_h;
  int64_t k_stride_n, k_stride_h, v_stride_n, v_stride_h;
  uint32_t kv_len, num_qo_heads, num_kv_heads;
  int32_t window_left;  // keys at positions >= kv_len - 1 - window_left are visible; -1 = all
  LogitsVariant logits;
  bool apply_rope;
  float rope_rcp_scale, rope_log2_rcp_theta;
  float v_scale;  // multiplies the output (scale of fp8 V); 1 otherwise
  // Split-KV scratch: normalized partial outputs [num_chunks, num_qo_heads, head_dim] and their
  // lse [num_chunks, num_qo_heads]. Unused when the plan has one chunk.
  float* partial_o;
  float* partial_lse;
};

// How the KV range is split; computed on the host for a given device.
struct SingleDecodePlan {
  uint32_t heads_per_cta = 1;
  uint32_t kv_begin = 0;  // first visible key (sliding window)
  uint32_t chunk_len = 0;
  uint32_t num_chunks = 1;
  size_t workspace_bytes = 0;  // split-KV scratch the run needs
};

constexpr uint32_t kDecodeWarps = 4;
constexpr uint32_t kDecodeThreads = kDecodeWarps * 32;
constexpr uint32_t kMaxHeadsPerCta = 8;
// Below this many keys per chunk the merge costs more than the parallelism gains.
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

// ROPE is a template flag, not a run-time branch: its sincos code would otherwise inflate the
// register footprint (and so cut the occupancy) of every call.
template <uint32_t HEAD_DIM, uint32_t HEADS_PER_CTA, bool ROPE, typename DTypeQ, typename DTypeKV,
          typename DTypeO>
__global__ void __launch_bounds__(kDecodeThreads)
    single_decode_kernel(const SingleDecodeParams<DTypeQ, DTypeKV, DTypeO> p, const uint32_t kv_begin,
                         const uint32_t chunk_len) {
  using Traits = DecodeTraits<HEAD_DIM, HEADS_PER_CTA>;
  constexpr uint32_t kTPT = Traits::kThreadsPerToken;
  constexpr uint32_t kUnroll = Traits::kUnroll;
  constexpr uint32_t H = HEADS_PER_CTA;

  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const uint32_t tx = lane % kTPT;  // which 8 dims of the token
  const uint32_t ty = lane / kTPT;  // which token of the warp's group
  const uint32_t dim0 = tx * 8;

  const uint32_t group_size = p.num_qo_heads / p.num_kv_heads;
  const uint32_t head_tiles = math::ceil_div(group_size, H);
  const uint32_t kv_head = blockIdx.y / head_tiles;
  const uint32_t first_qo_head = kv_head * group_size + (blockIdx.y % head_tiles) * H;
  const uint32_t heads_here = min(H, (kv_head + 1) * group_size - first_qo_head);
  const int32_t q_pos = int32_t(p.kv_len) - 1;

  const uint32_t begin = kv_begin + blockIdx.x * chunk_len;
  const uint32_t end = min(begin + chunk_len, p.kv_len);
  const DTypeKV* k_head = p.k + kv_head * p.k_stride_h + dim0;
  const DTypeKV* v_head = p.v + kv_head * p.v_stride_h + dim0;

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
  auto issue = [&](uint32_t step, uint32_t stage) {
    if (step < end) {
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) {
        const uint32_t pos = token(step, u);
        const bool valid = pos < end;  // past the end: zero-filled, p = 0 for those slots
        cp_async::copy<sizeof(Slot)>(&ring[stage][u][0][threadIdx.x],
                                     valid ? k_head + pos * p.k_stride_n : k_head, valid);
        cp_async::copy<sizeof(Slot)>(&ring[stage][u][1][threadIdx.x],
                                     valid ? v_head + pos * p.v_stride_n : v_head, valid);
      }
    }
    cp_async::commit_group();  // also when empty, so that group counts stay uniform
  };

  const uint32_t num_steps = end > begin ? math::ceil_div(end - begin, Traits::kTokensPerStep) : 0;
#pragma unroll
  for (uint32_t stage = 0; stage + 1 < kStages; ++stage)
    issue(begin + stage * Traits::kTokensPerStep, stage);

  // Query slices, rotated and pre-scaled so that q.k is already a base-2 logit (variants.cuh);
  // loaded while the first KV steps are in flight.
  float q[H][8];
  float alibi_bias_slope[H];
#pragma unroll
  for (uint32_t h = 0; h < H; ++h) {
    const uint32_t qo_head = first_qo_head + min(h, heads_here - 1);
    const DTypeQ* q_row = p.q + qo_head * p.q_stride_h;
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
    const uint32_t step = begin + i * Traits::kTokensPerStep;
    uint32_t pos[kUnroll];
    RawVec8<DTypeKV> k_raw[kUnroll], v_raw[kUnroll];
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      pos[u] = token(step, u);
      k_raw[u].bits[0] = ring[i % kStages][u][0][threadIdx.x];
      v_raw[u].bits[0] = ring[i % kStages][u][1][threadIdx.x];
    }
    // Refill the slot consumed in the previous step (its data already sits in registers).
    issue(step + (kStages - 1) * Traits::kTokensPerStep, (i + kStages - 1) % kStages);

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
    for (uint32_t w = 1; w < kDecodeWarps; ++w) {
      float o_other[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) o_other[i] = smem_o[w][h][dim0 + i];
      state[h].merge(o_other, smem_md[w][h][0], smem_md[w][h][1]);
    }
    if (h >= heads_here) continue;
    const uint32_t qo_head = first_qo_head + h;
    float out[8];
    if (gridDim.x == 1) {
      state[h].normalized(out, p.v_scale);
      store8_from_float(p.o + qo_head * p.o_stride_h + dim0, out);
      if (p.lse != nullptr && tx == 0) p.lse[qo_head] = state[h].lse();
    } else {
      state[h].normalized(out);
      const size_t row = size_t(blockIdx.x) * p.num_qo_heads + qo_head;
      store8_from_float(p.partial_o + row * HEAD_DIM + dim0, out);
      if (tx == 0) p.partial_lse[row] = state[h].lse();
    }
  }
}

// Host side: plan the split for a device, then launch the decode kernel and the merge.
template <uint32_t HEAD_DIM, typename DTypeQ, typename DTypeKV, typename DTypeO>
struct SingleDecode {
  using Params = SingleDecodeParams<DTypeQ, DTypeKV, DTypeO>;

  // Heads of a GQA group that one CTA serves: the group rounded up to a power of two, at most 8;
  // larger groups take several CTAs per KV head.
  static uint32_t heads_per_cta(uint32_t group_size) {
    uint32_t h = 1;
    while (h < group_size && h < kMaxHeadsPerCta) h *= 2;
    return h;
  }

  template <uint32_t H, bool ROPE>
  static auto kernel() {
    return single_decode_kernel<HEAD_DIM, H, ROPE, DTypeQ, DTypeKV, DTypeO>;
  }

  // CTAs of one instantiation resident per SM, cached per device: the occupancy query costs
  // microseconds, and plan() runs on every call.
  template <uint32_t H, bool ROPE>
  static cudaError_t resident_ctas_per_sm(int device, int* ctas) {
    constexpr int kMaxDevices = 64;
    static std::atomic<int> cache[kMaxDevices] = {};
    if (device >= 0 && device < kMaxDevices && (*ctas = cache[device].load()) > 0) return cudaSuccess;
    cudaError_t err =
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(ctas, kernel<H, ROPE>(), kDecodeThreads, 0);
    if (err == cudaSuccess && device >= 0 && device < kMaxDevices) cache[device].store(*ctas);
    return err;
  }

  // Calls fn(heads_per_cta, rope) with both as compile-time constants.
  template <typename Fn>
  static cudaError_t with_kernel_config(uint32_t heads, bool rope, Fn&& fn) {
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

  static cudaError_t plan(const Params& p, int device, SingleDecodePlan* plan) {
    const uint32_t group_size = p.num_qo_heads / p.num_kv_heads;
    plan->heads_per_cta = heads_per_cta(group_size);
    const bool windowed = p.window_left >= 0 && uint32_t(p.window_left) + 1 < p.kv_len;
    plan->kv_begin = windowed ? p.kv_len - 1 - uint32_t(p.window_left) : 0;
    const uint32_t visible = p.kv_len - plan->kv_begin;

    int num_sms = 0, blocks_per_sm = 0;
    cudaError_t err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return err;
    uint32_t tokens_per_step = 0;
    err = with_kernel_config(plan->heads_per_cta, p.apply_rope, [&](auto h, auto rope) {
      tokens_per_step = DecodeTraits<HEAD_DIM, decltype(h)::value>::kTokensPerStep;
      return resident_ctas_per_sm<decltype(h)::value, decltype(rope)::value>(device, &blocks_per_sm);
    });
    if (err != cudaSuccess) return err;

    // One full wave: as many chunks as leave every resident CTA slot busy, no more.
    const uint32_t ctas_per_chunk =
        p.num_kv_heads * math::ceil_div(group_size, plan->heads_per_cta);
    const uint32_t max_chunks =
        std::max<uint32_t>(1, uint32_t(num_sms * std::max(blocks_per_sm, 1)) / ctas_per_chunk);
    plan->chunk_len = std::max(
        math::round_up(math::ceil_div(std::max(visible, 1u), max_chunks), tokens_per_step),
        kMinDecodeChunkLen);
    plan->num_chunks = std::max(1u, math::ceil_div(visible, plan->chunk_len));
    plan->workspace_bytes =
        plan->num_chunks > 1 ? size_t(plan->num_chunks) * p.num_qo_heads * (HEAD_DIM + 1) * sizeof(float)
                             : 0;
    return cudaSuccess;
  }

  // `workspace` must hold plan.workspace_bytes (16-byte aligned) when the plan splits the KV.
  static cudaError_t run(Params p, const SingleDecodePlan& plan, void* workspace, cudaStream_t stream) {
    if (plan.num_chunks > 1) {
      p.partial_o = static_cast<float*>(workspace);
      p.partial_lse = p.partial_o + size_t(plan.num_chunks) * p.num_qo_heads * HEAD_DIM;
    }
    const uint32_t group_size = p.num_qo_heads / p.num_kv_heads;
    const dim3 grid(plan.num_chunks,
                    p.num_kv_heads * math::ceil_div(group_size, plan.heads_per_cta));
    cudaError_t err = with_kernel_config(plan.heads_per_cta, p.apply_rope, [&](auto h, auto rope) {
      kernel<decltype(h)::value, decltype(rope)::value>()<<<grid, kDecodeThreads, 0, stream>>>(
          p, plan.kv_begin, plan.chunk_len);
      return cudaGetLastError();
    });
    if (err != cudaSuccess || plan.num_chunks == 1) return err;

    MergeStatesParams<float, DTypeO> merge{};
    merge.v = p.partial_o;
    merge.s = p.partial_lse;
    merge.o = p.o;
    merge.lse = p.lse;
    merge.num_rows = 1;
    merge.num_states = plan.num_chunks;
    merge.num_heads = p.num_qo_heads;
    merge.head_dim = HEAD_DIM;
    merge.v_stride_state = int64_t(p.num_qo_heads) * HEAD_DIM;
    merge.v_stride_head = HEAD_DIM;
    merge.s_stride_state = p.num_qo_heads;
    merge.s_stride_head = 1;
    merge.o_stride_head = p.o_stride_h;
    merge.lse_stride_head = 1;
    merge.output_scale = p.v_scale;
    return MergeStates(merge, stream);
  }
};

}  // namespace attention
}  // namespace flashinfer

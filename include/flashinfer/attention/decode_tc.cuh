// Decode attention on tensor cores, for GQA groups. The query heads of a group are the M rows of
// m16n8k16 mma tiles (up to 16 heads per CTA), so q.K^T and P.V become mma work instead of the
// per-head CUDA-core dot products of decode.cuh, whose cost grows with the group. The CTA still
// reads each key and value once for all of its heads, and takes the same work items (DecodeWork)
// and KV addressing (StridedSequence, PagedSequence) as the CUDA-core kernel, so the two paths
// share the planners and the merge.
//
// Step: the CTA copies kStepTokens keys and values (cp.async, kStages deep, swizzled rows so that
// ldmatrix is free of bank conflicts); each of its 4 warps takes 16 of those keys: S = Q K^T
// (16 heads x 16 keys), online softmax per head row, O += P V with P rounded to the input type
// (as FlashAttention-2 does). The warps' states are merged through shared memory at the end.
// Inputs: q and KV of the same 16-bit type. RoPE is not fused here (the CUDA-core kernel has it).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../cp_async.cuh"
#include "../device_cache.cuh"
#include "../math.cuh"
#include "../mma.cuh"
#include "../pos_enc.cuh"
#include "decode.cuh"
#include "state.cuh"

namespace flashinfer {
namespace attention {

template <uint32_t HEAD_DIM>
struct DecodeTensorCoreTraits {
  static_assert(HEAD_DIM % 64 == 0 && HEAD_DIM <= 256, "head_dim must be 64, 128 or 256");
  static constexpr uint32_t kWarps = 4;
  static constexpr uint32_t kThreads = kWarps * 32;
  static constexpr uint32_t kRows = 16;        // query heads per CTA: the mma's M
  static constexpr uint32_t kWarpTokens = 16;  // keys per warp and step: one k16 slice of P.V
  static constexpr uint32_t kStepTokens = kWarps * kWarpTokens;
  static constexpr uint32_t kChunks = HEAD_DIM / 8;  // 16-byte chunks in a row
  static constexpr uint32_t kRowsPerPass = kThreads / kChunks;
  // Stages in flight, chosen to keep 2 CTAs per SM at head_dim <= 128 (3 at 64).
  static constexpr uint32_t kStages = HEAD_DIM <= 64 ? 4 : HEAD_DIM <= 128 ? 3 : 2;
  static constexpr size_t kTileBytes = size_t(kStepTokens) * HEAD_DIM * 2;
  static constexpr size_t kPipeBytes = kStages * 2 * kTileBytes;
  static constexpr size_t kMergeBytes = sizeof(float) * kWarps * kRows * (HEAD_DIM + 2);
  static constexpr size_t kQOffset = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
  static constexpr size_t kLocOffset = kQOffset + size_t(kRows) * HEAD_DIM * 2;
  template <typename Location>
  static constexpr size_t smem_bytes() {
    return kLocOffset + sizeof(Location) * kStages * kStepTokens;
  }

  // 16-byte chunk `chunk` of row `row` in a tile: XOR-swizzled by the row, so the 8 rows an
  // ldmatrix reads at one column fall in 8 different bank groups.
  __device__ __forceinline__ static uint32_t swizzle(uint32_t row, uint32_t chunk) {
    return row * kChunks + (chunk ^ (row % 8));
  }
};

template <uint32_t HEAD_DIM, typename Problem>
__global__ void __launch_bounds__(DecodeTensorCoreTraits<HEAD_DIM>::kThreads)
    decode_tc_kernel(const Problem p) {
  using T = typename Problem::DTypeKV;
  static_assert(std::is_same_v<T, typename Problem::DTypeQ> && sizeof(T) == 2,
                "tensor-core decode takes q and KV of one 16-bit type");
  using Traits = DecodeTensorCoreTraits<HEAD_DIM>;
  constexpr uint32_t kStages = Traits::kStages, kStepTokens = Traits::kStepTokens;
  constexpr uint32_t kChunks = Traits::kChunks, kRows = Traits::kRows;

  allow_dependent_launch();  // the merge of split-KV states may start launching now
  const DecodeWork w = p.work();
  if (w.request < 0) return;

  const uint32_t tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const uint32_t group_size = p.num_qo_heads / p.num_kv_heads;
  const uint32_t head_tiles = math::ceil_div(group_size, kRows);
  const uint32_t kv_head = blockIdx.y / head_tiles;
  const uint32_t first_qo_head = kv_head * group_size + (blockIdx.y % head_tiles) * kRows;
  const uint32_t heads_here = min(kRows, (kv_head + 1) * group_size - first_qo_head);
  const int32_t q_pos = int32_t(w.kv_len) - 1;
  const uint32_t begin = w.begin, end = w.end;
  const auto seq = p.sequence(w, kv_head);
  using Location = typename decltype(seq)::Location;

  extern __shared__ __align__(16) uint8_t smem[];
  uint4* pipe = reinterpret_cast<uint4*>(smem);
  uint4* q_tile = reinterpret_cast<uint4*>(smem + Traits::kQOffset);
  Location* locations = reinterpret_cast<Location*>(smem + Traits::kLocOffset);  // [kStages][kStepTokens]
  auto k_tile = [&](uint32_t stage) { return pipe + stage * 2 * kStepTokens * kChunks; };
  auto v_tile = [&](uint32_t stage) { return k_tile(stage) + kStepTokens * kChunks; };

  // Locating a paged key reads the page table. One thread per key does it two steps before the
  // copy that needs it: the read lands in a register during one step and goes to shared memory
  // (the stage's slot, published by the next barrier) in the next, so its latency never stalls a
  // step. Keys past the end are located at the last key and zero-filled.
  Location pending{};
  auto locate = [&](uint32_t step) {
    if (step < end && tid < kStepTokens) pending = seq.locate(min(step + tid, end - 1));
  };
  auto publish = [&](uint32_t step, uint32_t slot) {
    if (step < end && tid < kStepTokens) locations[slot * kStepTokens + tid] = pending;
  };
  auto issue = [&](uint32_t step, uint32_t stage) {
    if (step < end) {
      const uint32_t chunk = tid % kChunks;
#pragma unroll
      for (uint32_t pass = 0; pass < kStepTokens / Traits::kRowsPerPass; ++pass) {
        const uint32_t row = pass * Traits::kRowsPerPass + tid / kChunks;
        const bool valid = step + row < end;
        const Location l = locations[stage * kStepTokens + row];
        cp_async::copy<16>(k_tile(stage) + Traits::swizzle(row, chunk), seq.k_at(l) + chunk * 8, valid);
        cp_async::copy<16>(v_tile(stage) + Traits::swizzle(row, chunk), seq.v_at(l) + chunk * 8, valid);
      }
    }
    cp_async::commit_group();  // also when empty, so that group counts stay uniform
  };

  const uint32_t num_steps = end > begin ? math::ceil_div(end - begin, kStepTokens) : 0;
#pragma unroll
  for (uint32_t stage = 0; stage < kStages; ++stage) {
    locate(begin + stage * kStepTokens);
    publish(begin + stage * kStepTokens, stage);
  }
  __syncthreads();
#pragma unroll
  for (uint32_t stage = 0; stage + 1 < kStages; ++stage) issue(begin + stage * kStepTokens, stage);
  locate(begin + kStages * kStepTokens);

  // The CTA's query heads, one per tile row (rows past the group are zeros, never written out).
  for (uint32_t i = tid; i < kRows * kChunks; i += Traits::kThreads) {
    const uint32_t row = i / kChunks, chunk = i % kChunks;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row < heads_here)
      value = *reinterpret_cast<const uint4*>(p.q + w.request * p.q_stride_n +
                                              (first_qo_head + row) * p.q_stride_h + chunk * 8);
    q_tile[Traits::swizzle(row, chunk)] = value;
  }

  // Lane l holds accumulator rows l / 4 and l / 4 + 8 (two heads), columns 2 (l % 4) + {0, 1}.
  const uint32_t row_of[2] = {lane / 4, lane / 4 + 8};
  float alibi_bias_slope[2];
#pragma unroll
  for (uint32_t r = 0; r < 2; ++r) {
    const uint32_t qo_head = first_qo_head + min(row_of[r], heads_here - 1);
    alibi_bias_slope[r] =
        p.logits.use_alibi ? alibi_slope(qo_head, p.num_qo_heads) * p.logits.bias_scale : 0.f;
  }
  float o[kChunks][4];
#pragma unroll
  for (uint32_t t = 0; t < kChunks; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
  float m[2] = {-math::kInf, -math::kInf}, d[2] = {0.f, 0.f};

  for (uint32_t i = 0; i < num_steps; ++i) {
    cp_async::wait_group<kStages - 2>();
    __syncthreads();  // stage i landed for every thread; stage i - 1 is no longer read
    const uint32_t step = begin + i * kStepTokens;
    issue(step + (kStages - 1) * kStepTokens, (i + kStages - 1) % kStages);
    publish(step + kStages * kStepTokens, i % kStages);
    locate(step + (kStages + 1) * kStepTokens);
    const uint4* kt = k_tile(i % kStages);
    const uint4* vt = v_tile(i % kStages);

    // S = Q K^T over this warp's 16 keys: two n8 tiles of 16 heads x 8 keys.
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (uint32_t kk = 0; kk < HEAD_DIM / 16; ++kk) {
      uint32_t a[4], b[4];
      mma::ldmatrix_x4(a, q_tile + Traits::swizzle(lane % 16, 2 * kk + lane / 16));
      mma::ldmatrix_x4(b, kt + Traits::swizzle(warp * 16 + (lane / 16) * 8 + lane % 8, 2 * kk + (lane / 8) % 2));
      mma::mma_m16n8k16<T>(s[0], a, b[0], b[1]);
      mma::mma_m16n8k16<T>(s[1], a, b[2], b[3]);
    }

    // Logits in base 2, masked past the end; online softmax per head row.
#pragma unroll
    for (uint32_t r = 0; r < 2; ++r) {
      float row_max = -math::kInf;
#pragma unroll
      for (uint32_t j = 0; j < 2; ++j) {
#pragma unroll
        for (uint32_t e = 0; e < 2; ++e) {
          const uint32_t pos = step + warp * 16 + j * 8 + 2 * (lane % 4) + e;
          float& x = s[j][2 * r + e];
          x = pos < end ? p.logits.transform(x * p.logits.query_scale, alibi_bias_slope[r], pos, q_pos)
                        : -math::kInf;
          row_max = fmaxf(row_max, x);
        }
      }
      row_max = fmaxf(row_max, math::shfl_xor(row_max, 1));
      row_max = fmaxf(row_max, math::shfl_xor(row_max, 2));
      const float m_new = fmaxf(m[r], row_max);
      const float m_ref = SoftmaxState<1>::safe_max(m_new);
      const float rescale = math::ptx_exp2(m[r] - m_ref);
      m[r] = m_new;
      d[r] *= rescale;
#pragma unroll
      for (uint32_t t = 0; t < kChunks; ++t) {
        o[t][2 * r] *= rescale;
        o[t][2 * r + 1] *= rescale;
      }
#pragma unroll
      for (uint32_t j = 0; j < 2; ++j) {
#pragma unroll
        for (uint32_t e = 0; e < 2; ++e) {
          float& x = s[j][2 * r + e];
          x = math::ptx_exp2(x - m_ref);
          d[r] += x;
        }
      }
    }

    // O += P V: P's accumulator tiles are the A fragment of a 16 x 16 (keys) tile.
    const uint32_t a[4] = {mma::pack2<T>(s[0][0], s[0][1]), mma::pack2<T>(s[0][2], s[0][3]),
                           mma::pack2<T>(s[1][0], s[1][1]), mma::pack2<T>(s[1][2], s[1][3])};
#pragma unroll
    for (uint32_t dt = 0; dt < kChunks / 2; ++dt) {
      uint32_t b[4];
      mma::ldmatrix_x4_trans(b, vt + Traits::swizzle(warp * 16 + ((lane / 8) % 2) * 8 + lane % 8, 2 * dt + lane / 16));
      mma::mma_m16n8k16<T>(o[2 * dt], a, b[0], b[1]);
      mma::mma_m16n8k16<T>(o[2 * dt + 1], a, b[2], b[3]);
    }
  }

  // Row sums were kept per lane; add the four lanes of each row, then merge the warps.
#pragma unroll
  for (uint32_t r = 0; r < 2; ++r) {
    d[r] += math::shfl_xor(d[r], 1);
    d[r] += math::shfl_xor(d[r], 2);
  }
  cp_async::wait_group<0>();
  __syncthreads();  // the pipeline's memory becomes the merge buffer
  auto merge_o = reinterpret_cast<float(*)[kRows][HEAD_DIM]>(smem);
  auto merge_md = reinterpret_cast<float(*)[kRows][2]>(smem + sizeof(float) * Traits::kWarps * kRows * HEAD_DIM);
#pragma unroll
  for (uint32_t t = 0; t < kChunks; ++t) {
#pragma unroll
    for (uint32_t e = 0; e < 4; ++e) merge_o[warp][row_of[e / 2]][t * 8 + 2 * (lane % 4) + e % 2] = o[t][e];
  }
  if (lane % 4 == 0) {
#pragma unroll
    for (uint32_t r = 0; r < 2; ++r) {
      merge_md[warp][row_of[r]][0] = m[r];
      merge_md[warp][row_of[r]][1] = d[r];
    }
  }
  __syncthreads();

  for (uint32_t i = tid; i < kRows * kChunks; i += Traits::kThreads) {
    const uint32_t row = i / kChunks, dim0 = (i % kChunks) * 8;
    if (row >= heads_here) continue;
    SoftmaxState<8> state;
    state.init();
#pragma unroll
    for (uint32_t wi = 0; wi < Traits::kWarps; ++wi) {
      float part[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) part[e] = merge_o[wi][row][dim0 + e];
      state.merge(part, merge_md[wi][row][0], merge_md[wi][row][1]);
    }
    const uint32_t qo_head = first_qo_head + row;
    float out[8];
    if (w.partial_row < 0) {
      state.normalized(out, p.v_scale);
      store8_from_float(p.o + w.request * p.o_stride_n + qo_head * p.o_stride_h + dim0, out);
      if (p.lse != nullptr && dim0 == 0) p.lse[w.request * p.lse_stride_n + qo_head] = state.lse();
    } else {
      state.normalized(out);
      const size_t partial = size_t(w.partial_row) * p.num_qo_heads + qo_head;
      store8_from_float(p.partial_o + partial * HEAD_DIM + dim0, out);
      if (dim0 == 0) p.partial_lse[partial] = state.lse();
    }
  }
}

// Launch side of the tensor-core kernel: occupancy, one wave, launch with its dynamic shared memory.
template <uint32_t HEAD_DIM, typename Problem>
struct DecodeTensorCoreKernels {
  using Traits = DecodeTensorCoreTraits<HEAD_DIM>;
  using Location = typename Problem::Sequence::Location;
  static constexpr size_t kSmemBytes = Traits::template smem_bytes<Location>();

  static cudaError_t allow_smem() {
    static PerDeviceValue opted_in;
    return allow_dynamic_smem(opted_in, decode_tc_kernel<HEAD_DIM, Problem>, kSmemBytes);
  }

  static uint32_t head_tiles(uint32_t group_size) { return math::ceil_div(group_size, Traits::kRows); }

  // CTAs a split plan spreads the keys over, one per SM, and the kernel's step. One CTA's
  // cp.async pipeline (kPipeBytes: 96 KB at d = 128) holds enough loads in flight for its SM's
  // share of the bandwidth, so filling the second resident slot only adds partial states to
  // merge: on an H100 (2026-12-08, 32/8 heads, d 128) one CTA per SM was up to 14% faster than
  // two for batches of 1-16 requests and never more than 4% slower.
  static cudaError_t wave_ctas(int device, uint32_t* ctas, uint32_t* tokens_per_step) {
    *tokens_per_step = Traits::kStepTokens;
    int num_sms = 0;
    const cudaError_t err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
    *ctas = uint32_t(std::max(num_sms, 1));
    return err;
  }

  static cudaError_t launch(const Problem& p, uint32_t grid_x, cudaStream_t stream) {
    cudaError_t err = allow_smem();
    if (err != cudaSuccess) return err;
    const dim3 grid(grid_x, p.num_kv_heads * head_tiles(p.num_qo_heads / p.num_kv_heads));
    decode_tc_kernel<HEAD_DIM, Problem><<<grid, Traits::kThreads, kSmemBytes, stream>>>(p);
    return cudaGetLastError();
  }
};

// What single and batch decode share on the host: which kernel runs, its launch shape, the
// launch, and the merge of split-KV partial states (rows [partial_row][qo_head][dim]) into o and
// lse.

// The tensor-core kernel exists for q and KV of one 16-bit type.
template <typename Problem>
constexpr bool kHasTensorCoreDecode =
    std::is_same_v<typename Problem::DTypeQ, typename Problem::DTypeKV> && sizeof(typename Problem::DTypeKV) == 2;

// Tensor cores where they exist (`available`) and RoPE is not fused, when asked for
// (use_tensor_cores 1) or by default (-1) for groups of 4 or more query heads, whose per-key
// CUDA-core work would otherwise hold the kernel below the memory bandwidth.
inline bool choose_tensor_cores(bool available, bool rope, int use_tensor_cores, uint32_t group_size) {
  return available && !rope && (use_tensor_cores > 0 || (use_tensor_cores < 0 && group_size >= 4));
}

// CTAs of the chosen kernel that a split plan spreads the keys over on `device` (`wave`), CTAs per
// work item and KV head (`head_tiles`), and the kernel step that chunk lengths are multiples of.
template <uint32_t HEAD_DIM, typename Problem>
cudaError_t decode_launch_shape(uint32_t group_size, bool rope, bool tensor_cores, int device, uint32_t* wave,
                                uint32_t* head_tiles, uint32_t* tokens_per_step) {
  if constexpr (kHasTensorCoreDecode<Problem>) {
    if (tensor_cores) {
      using TensorCoreKernels = DecodeTensorCoreKernels<HEAD_DIM, Problem>;
      *head_tiles = TensorCoreKernels::head_tiles(group_size);
      return TensorCoreKernels::wave_ctas(device, wave, tokens_per_step);
    }
  }
  using Kernels = DecodeKernels<HEAD_DIM, Problem>;
  const uint32_t heads = Kernels::heads_per_cta(group_size);
  *head_tiles = math::ceil_div(group_size, heads);
  return Kernels::wave_ctas(heads, rope, device, wave, tokens_per_step);
}

// The shortest chunk of keys worth a CTA and a merge: one step of the tensor-core kernel (on an
// H100, batch 1 x 512 keys ran 15% faster in eight chunks of 64 keys than in four of 128), at
// least kMinDecodeChunkLen keys of the CUDA-core kernel.
inline uint32_t decode_min_chunk_len(bool tensor_cores, uint32_t tokens_per_step) {
  return tensor_cores ? tokens_per_step : std::max(kMinDecodeChunkLen, tokens_per_step);
}

// The automatic split of single and batch decode: `total_keys` spread evenly over `columns`, in
// whole kernel steps and no shorter than min_chunk_len, and no longer than the `longest` request
// needs (one chunk: no split, no merge).
inline uint32_t decode_chunk_len(uint64_t total_keys, uint32_t longest, uint32_t columns, uint32_t tokens_per_step,
                                 uint32_t min_chunk_len) {
  const uint32_t whole = math::round_up(std::max(longest, 1u), tokens_per_step);
  const uint32_t shortest = math::round_up(std::max(min_chunk_len, 1u), tokens_per_step);
  const uint64_t even =
      math::round_up<uint64_t>(math::ceil_div<uint64_t>(total_keys, std::max(columns, 1u)), tokens_per_step);
  return uint32_t(std::min<uint64_t>(std::max<uint64_t>(even, shortest), whole));
}

template <uint32_t HEAD_DIM, typename Problem>
cudaError_t launch_decode(const Problem& p, bool tensor_cores, uint32_t grid_x, cudaStream_t stream) {
  if constexpr (kHasTensorCoreDecode<Problem>) {
    if (tensor_cores) return DecodeTensorCoreKernels<HEAD_DIM, Problem>::launch(p, grid_x, stream);
  }
  using Kernels = DecodeKernels<HEAD_DIM, Problem>;
  return Kernels::launch(p, Kernels::heads_per_cta(p.num_qo_heads / p.num_kv_heads), grid_x, stream);
}

template <uint32_t HEAD_DIM, typename Problem>
MergeStatesParams<float, typename Problem::DTypeO> split_kv_merge(const Problem& p) {
  MergeStatesParams<float, typename Problem::DTypeO> merge{};
  merge.v = p.partial_o;
  merge.s = p.partial_lse;
  merge.o = p.o;
  merge.lse = p.lse;
  merge.num_heads = p.num_qo_heads;
  merge.head_dim = HEAD_DIM;
  merge.v_stride_state = int64_t(p.num_qo_heads) * HEAD_DIM;
  merge.v_stride_head = HEAD_DIM;
  merge.s_stride_state = p.num_qo_heads;
  merge.s_stride_head = 1;
  merge.o_stride_row = p.o_stride_n;
  merge.o_stride_head = p.o_stride_h;
  merge.lse_stride_row = p.lse_stride_n;
  merge.lse_stride_head = 1;
  merge.output_scale = p.v_scale;
  return merge;
}

}  // namespace attention
}  // namespace flashinfer

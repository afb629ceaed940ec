// Prefill / append attention on tensor cores, FlashAttention-2 layout (mma.sync m16n8k16, sm80+).
//
// A CTA owns 64 query rows of one query head (4 warps x 16 rows). Each step the CTA copies 64
// keys and values of the head's KV head (cp.async, kStages deep, swizzled rows); every warp then
// computes S = Q K^T for its 16 rows x 64 keys, masks and transforms the logits, runs the online
// softmax on its accumulator fragments and adds P V into its own O[16 x head_dim]. Warps share
// the K/V tiles but never their state, so no merge is needed. Steps cover only the keys some row
// of the CTA can see (causal diagonal, sliding window); a warp skips steps none of its rows sees
// and masks per element only steps that cross one of its rows' bounds.
// Inputs: q and KV of one 16-bit type. No split over the KV: few query tiles with a long KV
// (small qo_len x heads) leave the GPU underfilled.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../cp_async.cuh"
#include "../device_cache.cuh"
#include "../math.cuh"
#include "../mma.cuh"
#include "../pos_enc.cuh"
#include "mma_attention.cuh"
#include "variants.cuh"

namespace flashinfer {
namespace attention {

// Which keys query row i (0 <= i < qo_len) sees: [key_begin(i), key_end(i)). Causal masking is
// aligned bottom-right (row i sits at position i + kv_len - qo_len); window_left keeps that many
// keys before the row's position, inclusive. Both bounds grow with i.
struct PrefillMask {
  uint32_t kv_len;
  uint32_t offset;  // kv_len - qo_len
  int32_t window_left;  // -1: off
  bool causal;

  __host__ __device__ __forceinline__ uint32_t key_begin(uint32_t i) const {
    const uint32_t pos = i + offset;
    return window_left >= 0 && pos > uint32_t(window_left) ? pos - uint32_t(window_left) : 0;
  }
  __host__ __device__ __forceinline__ uint32_t key_end(uint32_t i) const {
    return causal ? i + offset + 1 : kv_len;
  }
};

template <typename T>
struct SinglePrefillParams {
  const T* q;  // row i of head h at i * q_stride_n + h * q_stride_h
  const T* k;  // key n of kv head h at n * k_stride_n + h * k_stride_h (NHD or HND)
  const T* v;
  T* o;        // like q
  float* lse;  // base 2, row i of head h at i * lse_stride_n + h; nullptr: not written
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h;
  int64_t k_stride_n, k_stride_h, v_stride_n, v_stride_h, lse_stride_n;
  uint32_t qo_len, num_qo_heads, num_kv_heads;
  PrefillMask mask;
  LogitsVariant logits;
};

template <uint32_t HEAD_DIM>
struct PrefillTraits {
  using Tile = SwizzledTile<HEAD_DIM>;
  static constexpr uint32_t kWarps = 4;
  static constexpr uint32_t kThreads = kWarps * 32;
  static constexpr uint32_t kWarpRows = 16;  // the mma's M
  static constexpr uint32_t kQueryRows = kWarps * kWarpRows;
  static constexpr uint32_t kStepKeys = 64;
  static constexpr uint32_t kKeyTiles = kStepKeys / 8;  // n8 tiles of S per step
  // Double buffering is enough to overlap a step's copy with the previous step's math; a third
  // stage only where it still leaves room for 2 CTAs per SM on sm80 (164 KB).
  static constexpr uint32_t kStages = HEAD_DIM <= 64 ? 3 : 2;
  static constexpr size_t kQTileBytes = size_t(kQueryRows) * HEAD_DIM * 2;
  static constexpr size_t kKVTileBytes = size_t(kStepKeys) * HEAD_DIM * 2;
  static constexpr size_t kSmemBytes = kQTileBytes + kStages * 2 * kKVTileBytes;
};

template <uint32_t HEAD_DIM, typename T>
__global__ void __launch_bounds__(PrefillTraits<HEAD_DIM>::kThreads)
    single_prefill_kernel(const SinglePrefillParams<T> p) {
  static_assert(sizeof(T) == 2, "tensor-core prefill takes 16-bit q and KV");
  using Traits = PrefillTraits<HEAD_DIM>;
  using Tile = typename Traits::Tile;
  constexpr uint32_t kChunks = Tile::kChunks, kStages = Traits::kStages, kStepKeys = Traits::kStepKeys;
  constexpr uint32_t kQueryRows = Traits::kQueryRows, kWarpRows = Traits::kWarpRows;

  const uint32_t tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // The last query tiles see the most keys under a causal mask: start them first, so that the
  // grid's tail is short work.
  const uint32_t q_first = (gridDim.x - 1 - blockIdx.x) * kQueryRows;
  const uint32_t rows_here = min(kQueryRows, p.qo_len - q_first);
  const uint32_t qo_head = blockIdx.y;
  const uint32_t kv_head = qo_head / (p.num_qo_heads / p.num_kv_heads);
  const PrefillMask mask = p.mask;
  const uint32_t begin = mask.key_begin(q_first), end = mask.key_end(q_first + rows_here - 1);

  extern __shared__ __align__(16) uint8_t smem[];
  uint4* q_tile = reinterpret_cast<uint4*>(smem);
  uint4* pipe = reinterpret_cast<uint4*>(smem + Traits::kQTileBytes);
  auto k_tile = [&](uint32_t stage) { return pipe + stage * 2 * kStepKeys * kChunks; };
  auto v_tile = [&](uint32_t stage) { return k_tile(stage) + kStepKeys * kChunks; };

  const T* q = p.q + q_first * p.q_stride_n + qo_head * p.q_stride_h;
  const T* k = p.k + kv_head * p.k_stride_h;
  const T* v = p.v + kv_head * p.v_stride_h;
  Tile::template load_async<kQueryRows, Traits::kThreads>(q_tile, tid, rows_here,
                                                          [&](uint32_t r) { return q + r * p.q_stride_n; });
  cp_async::commit_group();
  // Keys past `end` are zero-filled: their logits are masked, and zero values keep P V finite.
  auto issue = [&](uint32_t step, uint32_t stage) {
    if (step < end) {
      const uint32_t keys = min(kStepKeys, end - step);
      Tile::template load_async<kStepKeys, Traits::kThreads>(
          k_tile(stage), tid, keys, [&](uint32_t r) { return k + (step + r) * p.k_stride_n; });
      Tile::template load_async<kStepKeys, Traits::kThreads>(
          v_tile(stage), tid, keys, [&](uint32_t r) { return v + (step + r) * p.v_stride_n; });
    }
    cp_async::commit_group();  // also when empty, so that group counts stay uniform
  };
#pragma unroll
  for (uint32_t stage = 0; stage + 1 < kStages; ++stage) issue(begin + stage * kStepKeys, stage);

  // This warp's rows, and the lane's two accumulator rows (lane / 4 and lane / 4 + 8). Rows past
  // qo_len compute on zero queries, masked like the last row, and are never written.
  const uint32_t warp_first = q_first + warp * kWarpRows;
  const bool warp_has_rows = warp_first < p.qo_len;
  const uint32_t warp_last = min(warp_first + kWarpRows - 1, p.qo_len - 1);
  // Steps outside [warp_begin, warp_end) hold no key this warp sees; steps inside
  // [full_begin, full_end) hold only keys all of its rows see.
  const uint32_t warp_begin = mask.key_begin(min(warp_first, warp_last)), warp_end = mask.key_end(warp_last);
  const uint32_t full_begin = mask.key_begin(warp_last), full_end = mask.key_end(min(warp_first, warp_last));
  uint32_t row_begin[2], row_end[2];
  int32_t q_pos[2];
#pragma unroll
  for (uint32_t r = 0; r < 2; ++r) {
    const uint32_t row = min(warp_first + lane / 4 + 8 * r, p.qo_len - 1);
    row_begin[r] = mask.key_begin(row);
    row_end[r] = mask.key_end(row);
    q_pos[r] = int32_t(row + mask.offset);
  }
  const float alibi_bias_slope =
      p.logits.use_alibi ? alibi_slope(qo_head, p.num_qo_heads) * p.logits.bias_scale : 0.f;

  float o[kChunks][4];
#pragma unroll
  for (uint32_t t = 0; t < kChunks; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
  float m[2] = {-math::kInf, -math::kInf}, d[2] = {0.f, 0.f};

  const uint32_t num_steps = math::ceil_div(end - begin, kStepKeys);
  for (uint32_t i = 0; i < num_steps; ++i) {
    cp_async::wait_group<kStages - 2>();
    __syncthreads();  // step i (and q) landed for every thread; the stage of step i - 1 is free
    const uint32_t step = begin + i * kStepKeys;
    issue(step + (kStages - 1) * kStepKeys, (i + kStages - 1) % kStages);
    if (!warp_has_rows || step >= warp_end || step + kStepKeys <= warp_begin) continue;
    const uint4* kt = k_tile(i % kStages);
    const uint4* vt = v_tile(i % kStages);

    // S = Q K^T: A from this warp's 16 query rows, B from 16 keys at a time (non-transposed
    // ldmatrix of key rows gives the column-major B fragment).
    float s[Traits::kKeyTiles][4];
#pragma unroll
    for (uint32_t j = 0; j < Traits::kKeyTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (uint32_t kk = 0; kk < HEAD_DIM / 16; ++kk) {
      uint32_t a[4];
      mma::ldmatrix_x4(a, q_tile + Tile::index(warp * kWarpRows + lane % 16, 2 * kk + lane / 16));
#pragma unroll
      for (uint32_t n = 0; n < kStepKeys / 16; ++n) {
        uint32_t b[4];
        mma::ldmatrix_x4(b, kt + Tile::index(n * 16 + (lane / 16) * 8 + lane % 8, 2 * kk + (lane / 8) % 2));
        mma::mma_m16n8k16<T>(s[2 * n], a, b[0], b[1]);
        mma::mma_m16n8k16<T>(s[2 * n + 1], a, b[2], b[3]);
      }
    }

    // Base-2 logits; keys a row does not see become -inf.
    const bool partial = step < full_begin || step + kStepKeys > full_end;
#pragma unroll
    for (uint32_t j = 0; j < Traits::kKeyTiles; ++j) {
#pragma unroll
      for (uint32_t e = 0; e < 4; ++e) {
        const uint32_t r = e / 2, key = step + j * 8 + 2 * (lane % 4) + e % 2;
        float& x = s[j][e];
        x = partial && (key < row_begin[r] || key >= row_end[r])
                ? -math::kInf
                : p.logits.transform(x * p.logits.query_scale, alibi_bias_slope, int32_t(key), q_pos[r]);
      }
    }
    online_softmax_step(s, m, d, o);

    // O += P V, 16 keys at a time; V rows through the transposing ldmatrix.
#pragma unroll
    for (uint32_t kt16 = 0; kt16 < kStepKeys / 16; ++kt16) {
      uint32_t a[4];
      probabilities_as_a<T>(a, s[2 * kt16], s[2 * kt16 + 1]);
#pragma unroll
      for (uint32_t dt = 0; dt < kChunks / 2; ++dt) {
        uint32_t b[4];
        mma::ldmatrix_x4_trans(b, vt + Tile::index(kt16 * 16 + ((lane / 8) % 2) * 8 + lane % 8, 2 * dt + lane / 16));
        mma::mma_m16n8k16<T>(o[2 * dt], a, b[0], b[1]);
        mma::mma_m16n8k16<T>(o[2 * dt + 1], a, b[2], b[3]);
      }
    }
  }

  reduce_row_sums(d);
  if (!warp_has_rows) return;
  // Only this warp reads its 16 Q rows: reuse them to turn the fragments into 16-byte row stores.
  __syncwarp();
  uint32_t* staged = reinterpret_cast<uint32_t*>(q_tile);
#pragma unroll
  for (uint32_t r = 0; r < 2; ++r) {
    const float scale = d[r] > 0.f ? 1.f / d[r] : 0.f;  // no visible key: output 0
    const uint32_t row = warp * kWarpRows + lane / 4 + 8 * r;
#pragma unroll
    for (uint32_t t = 0; t < kChunks; ++t)
      staged[Tile::index(row, t) * 4 + lane % 4] = mma::pack2<T>(o[t][2 * r] * scale, o[t][2 * r + 1] * scale);
  }
  __syncwarp();
  for (uint32_t idx = lane; idx < kWarpRows * kChunks; idx += 32) {
    const uint32_t row = idx / kChunks, chunk = idx % kChunks;
    if (warp_first + row < p.qo_len)
      *reinterpret_cast<uint4*>(p.o + (warp_first + row) * p.o_stride_n + qo_head * p.o_stride_h + chunk * 8) =
          q_tile[Tile::index(warp * kWarpRows + row, chunk)];
  }
  if (p.lse != nullptr && lane % 4 == 0) {
#pragma unroll
    for (uint32_t r = 0; r < 2; ++r) {
      const uint32_t row = warp_first + lane / 4 + 8 * r;
      if (row < p.qo_len)
        p.lse[row * p.lse_stride_n + qo_head] = d[r] > 0.f ? m[r] + math::ptx_log2(d[r]) : -math::kInf;
    }
  }
}

// Host side: one CTA per 64 query rows and query head.
template <uint32_t HEAD_DIM, typename T>
struct SinglePrefill {
  using Params = SinglePrefillParams<T>;
  using Traits = PrefillTraits<HEAD_DIM>;

  static cudaError_t run(const Params& p, cudaStream_t stream) {
    if (p.qo_len == 0) return cudaSuccess;
    static PerDeviceValue opted_in;
    cudaError_t err = allow_dynamic_smem(opted_in, single_prefill_kernel<HEAD_DIM, T>, Traits::kSmemBytes);
    if (err != cudaSuccess) return err;
    const dim3 grid(math::ceil_div(p.qo_len, Traits::kQueryRows), p.num_qo_heads);
    single_prefill_kernel<HEAD_DIM, T><<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
    return cudaGetLastError();
  }
};

}  // namespace attention
}  // namespace flashinfer

// Building blocks of the tensor-core (mma.sync m16n8k16) attention kernels: the swizzled shared
// memory tile, the asynchronous row loader, and the online softmax on accumulator fragments.
// Fragment layout (PTX's): lane l holds accumulator rows l / 4 and l / 4 + 8, columns
// 2 (l % 4) + {0, 1} of each n8 tile, so a row lives in 4 lanes (xor 1 and 2 reach them all).
// decode_tc.cuh predates this header and still spells these steps out inline.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../cp_async.cuh"
#include "../math.cuh"
#include "../mma.cuh"
#include "state.cuh"

namespace flashinfer {
namespace attention {

// A [kRows][HEAD_DIM] tile of 16-bit values in shared memory, as 16-byte chunks.
template <uint32_t HEAD_DIM>
struct SwizzledTile {
  static_assert(HEAD_DIM % 64 == 0 && HEAD_DIM <= 256, "head_dim must be 64, 128 or 256");
  static constexpr uint32_t kChunks = HEAD_DIM / 8;  // 16-byte chunks in a row

  // Chunk `chunk` of row `row`, XOR-swizzled by the row so that the 8 rows an ldmatrix reads at
  // one column fall in 8 different bank groups.
  __device__ __forceinline__ static uint32_t index(uint32_t row, uint32_t chunk) {
    return row * kChunks + (chunk ^ (row % 8));
  }

  // Starts the copy of kRows rows into `tile` with kThreads threads (one cp.async group is left
  // to the caller to commit). Rows at or past `valid_rows` are zero-filled and not read;
  // row_ptr(r) gives the global address of row r (called for valid rows only).
  template <uint32_t kRows, uint32_t kThreads, typename RowPtr>
  __device__ __forceinline__ static void load_async(uint4* tile, uint32_t tid, uint32_t valid_rows,
                                                    const RowPtr& row_ptr) {
    static_assert(kThreads % kChunks == 0 && kRows % (kThreads / kChunks) == 0, "uneven tile copy");
    constexpr uint32_t kRowsPerPass = kThreads / kChunks;
    const uint32_t chunk = tid % kChunks;
#pragma unroll
    for (uint32_t pass = 0; pass < kRows / kRowsPerPass; ++pass) {
      const uint32_t row = pass * kRowsPerPass + tid / kChunks;
      const bool valid = row < valid_rows;
      cp_async::copy<16>(tile + index(row, chunk), row_ptr(valid ? row : 0) + chunk * 8, valid);
    }
  }
};

// Online softmax of one warp's 16 query rows over kTiles n8 tiles of logits `s` (masked entries
// -inf): base-2 logits are s * scale. Updates the running max `m` (base 2) and the per-lane partial
// sum `d` of the lane's two rows, rescales the output accumulators `o`, and turns `s` into
// exp2(s * scale - m). A row that has seen only -inf keeps m = -inf and contributes zeros.
// The scale is folded into one fused multiply-add per logit; the row maxima are trees, not chains;
// and the warp skips rescaling `o` when no row's max moved (most steps once the max has settled),
// which saves a multiply per accumulator.
template <uint32_t kTiles, uint32_t kOutTiles>
__device__ __forceinline__ void online_softmax_step(float (&s)[kTiles][4], float scale, float (&m)[2], float (&d)[2],
                                                    float (&o)[kOutTiles][4]) {
  static_assert((kTiles & (kTiles - 1)) == 0, "a power-of-two number of key tiles");
  float m_ref[2], rescale[2];
  bool moved = false;
#pragma unroll
  for (uint32_t r = 0; r < 2; ++r) {
    float tree[kTiles];
#pragma unroll
    for (uint32_t j = 0; j < kTiles; ++j) tree[j] = fmaxf(s[j][2 * r], s[j][2 * r + 1]);
#pragma unroll
    for (uint32_t width = kTiles / 2; width >= 1; width /= 2)
#pragma unroll
      for (uint32_t j = 0; j < width; ++j) tree[j] = fmaxf(tree[j], tree[j + width]);
    float row_max = fmaxf(tree[0], math::shfl_xor(tree[0], 1));
    row_max = fmaxf(row_max, math::shfl_xor(row_max, 2));
    const float new_m = fmaxf(m[r], row_max * scale);
    m_ref[r] = SoftmaxState<1>::safe_max(new_m);
    rescale[r] = math::ptx_exp2(m[r] - m_ref[r]);
    moved |= new_m != m[r];
    m[r] = new_m;
  }
  if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
    for (uint32_t r = 0; r < 2; ++r) {
      d[r] *= rescale[r];
#pragma unroll
      for (uint32_t t = 0; t < kOutTiles; ++t) {
        o[t][2 * r] *= rescale[r];
        o[t][2 * r + 1] *= rescale[r];
      }
    }
  }
#pragma unroll
  for (uint32_t r = 0; r < 2; ++r) {
    float sum[2] = {0.f, 0.f};  // two chains instead of one
#pragma unroll
    for (uint32_t j = 0; j < kTiles; ++j) {
#pragma unroll
      for (uint32_t e = 0; e < 2; ++e) {
        float& x = s[j][2 * r + e];
        x = math::ptx_exp2(fmaf(x, scale, -m_ref[r]));
        sum[e] += x;
      }
    }
    d[r] += sum[0] + sum[1];
  }
}

// Probabilities of two adjacent n8 tiles (16 keys) as the A fragment of P V, rounded to T as
// FlashAttention-2 does.
template <typename T>
__device__ __forceinline__ void probabilities_as_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = mma::pack2<T>(lo[0], lo[1]);
  a[1] = mma::pack2<T>(lo[2], lo[3]);
  a[2] = mma::pack2<T>(hi[0], hi[1]);
  a[3] = mma::pack2<T>(hi[2], hi[3]);
}

// The full row sums from the per-lane partial sums (the 4 lanes of a row).
__device__ __forceinline__ void reduce_row_sums(float (&d)[2]) {
#pragma unroll
  for (uint32_t r = 0; r < 2; ++r) {
    d[r] += math::shfl_xor(d[r], 1);
    d[r] += math::shfl_xor(d[r], 2);
  }
}

}  // namespace attention
}  // namespace flashinfer

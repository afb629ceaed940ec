// Prefill / append attention on tensor cores, FlashAttention-2 layout (mma.sync m16n8k16, sm80+).
//
// One kernel serves single, ragged and paged prefill: like decode.cuh it runs any Problem with
// work() (this CTA's PrefillWork: a request, a tile of its query rows, a range of its keys) and
// sequence(work, kv_head) (where the keys are: StridedSequence or PagedSequence). The query heads
// of a GQA group are packed into the tile's rows, FlashInfer-style: packed row = token *
// group_size + head in group, one CTA per KV head, so short requests still fill a tile and K/V
// tiles are read once for the whole group.
//
// A CTA has 4 warps. With 64 or 128 query rows (WARPS_Q = 4) each warp owns 16 or 32 rows (one or
// two m16 tiles) and all 64 keys of a step; with 16 query rows (WARPS_Q = 1) the warps share the
// 16 rows and each takes 16 of the step's 64 keys (their states are merged at the end). Two m16
// tiles per warp reuse every K and V fragment read from shared memory twice, which is what lets
// long prefills keep the tensor cores busy (head_dim <= 128: the accumulators of 32 rows x 256
// columns would not fit in registers). Each step the CTA copies 64 keys and
// values (cp.async, kStages deep, swizzled rows); a warp computes S = Q K^T for its rows x keys,
// masks and transforms the logits, runs the online softmax on its accumulator fragments and adds
// P V into its own O[rows x head_dim]. Steps cover only the keys some row of the tile sees (causal
// diagonal, sliding window, the work item's KV chunk); a warp skips key slices none of its rows
// sees and masks per element only slices that cross one of its rows' bounds. The epilogue
// combines the warps of a row through shared memory and writes the output (or, for a KV chunk of
// a split request, a partial state that cascade.cuh's merge kernel combines).
// A custom mask (FlashInfer's packed_custom_mask) is a kernel variant of its own (CUSTOM_MASK): the
// mask, not `causal`, decides which keys a row sees (a sliding window still applies), so steps
// cover all of a row's keys and every slice tests each logit's bit, read from global memory.
// RoPE on the fly (ROPE, FlashInfer's ROPE_LLAMA) is a kernel variant too: the Q tile is rotated in
// shared memory once after it lands (query token t at position t + kv_len - qo_len), and every
// K tile after it lands (key j at position j), before the math reads it.
// Inputs: q of a 16-bit type; KV of q's type, or fp8 (e4m3 / e5m2). fp8 tiles land in shared
// memory as they are (half the bytes of a 16-bit tile to move) and are converted, once per step,
// into one 16-bit K and V tile that the mma reads: a shared-memory pass and a barrier per step,
// and one more tile of shared memory (the pipeline itself is half as large).
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
#include "../vec_dtypes.cuh"
#include "cascade.cuh"
#include "decode.cuh"
#include "mma_attention.cuh"
#include "state.cuh"
#include "variants.cuh"

namespace flashinfer {
namespace attention {

// Which keys query token i (0 <= i < qo_len) sees: [key_begin(i), key_end(i)). Causal masking is
// aligned bottom-right (token i sits at position i + kv_len - qo_len); window_left keeps that many
// keys before the token's position, inclusive. Both bounds grow with i.
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

// How a request's packed query rows are cut into tiles of query_rows rows. A tile never holds part
// of a token's heads together with another token: with group_size <= query_rows it holds
// query_rows / group_size whole tokens, otherwise one token's heads are spread over
// ceil(group_size / query_rows) tiles. Every tile of a token then sees the same keys, which is
// what lets a split request keep one set of partial states per token.
struct PrefillTiling {
  uint32_t group_size, query_rows;

  __host__ __device__ __forceinline__ bool whole_tokens() const { return group_size <= query_rows; }
  __host__ __device__ __forceinline__ uint32_t tokens_per_tile() const {
    return whole_tokens() ? query_rows / group_size : 1;
  }
  __host__ __device__ __forceinline__ uint32_t tiles_per_token() const {
    return whole_tokens() ? 1 : math::ceil_div(group_size, query_rows);
  }
  __host__ __device__ __forceinline__ uint32_t num_tiles(uint32_t qo_len) const {
    return whole_tokens() ? math::ceil_div(qo_len, tokens_per_tile()) : qo_len * tiles_per_token();
  }
  // Packed rows [begin, end) of tile `tile` of a request with qo_len tokens.
  __host__ __device__ __forceinline__ void rows(uint32_t tile, uint32_t qo_len, uint32_t* begin,
                                                uint32_t* end) const {
    if (whole_tokens()) {
      const uint32_t tokens = tokens_per_tile();
      *begin = tile * tokens * group_size;
      const uint32_t end_token = tile * tokens + tokens;
      *end = (end_token < qo_len ? end_token : qo_len) * group_size;
    } else {
      const uint32_t token = tile / tiles_per_token(), part = tile % tiles_per_token();
      *begin = token * group_size + part * query_rows;
      const uint32_t end_row = part * query_rows + query_rows;
      *end = token * group_size + (end_row < group_size ? end_row : group_size);
    }
  }
};

// Query tile of a plan: 16 rows when the average request has at most 16 packed rows (decode-like
// appends), 128 when it has at least 128 and head_dim allows, else 64. With a custom mask or RoPE
// (`at_most_64_rows`) at most 64: the mask's bit reads or the rotations on top of the 128-row
// tile's registers would spill (and those kernels are not built).
inline uint32_t choose_query_rows(uint64_t packed_rows, uint64_t num_requests, uint32_t head_dim,
                                  bool at_most_64_rows = false) {
  const uint64_t requests = std::max<uint64_t>(num_requests, 1);
  if (packed_rows <= 16 * requests) return 16;
  return head_dim <= 128 && !at_most_64_rows && packed_rows >= 128 * requests ? 128 : 64;
}

// What one CTA computes: packed query rows [row_begin, row_end) of one request, over its keys
// [kv_begin, kv_end). Written by the batch planner on the host (48 bytes: three vector loads).
struct alignas(16) PrefillWork {
  int32_t request;    // < 0: nothing to do (padding of a grid sized for the largest plan)
  uint32_t qo_begin;  // the request's first row of q, out and lse
  uint32_t qo_len, kv_len;
  uint32_t row_begin, row_end;
  uint32_t kv_begin, kv_end;
  int32_t kv_start;  // ragged KV: the request's first key row; paged KV: its first page-table entry
  // < 0: the CTA covers every key its rows see and writes the output. Else the split-KV state of
  // chunk 0 of the tile's first token; token t's state for chunk c is partial_state + (t - first
  // token) * num_chunks + c.
  int32_t partial_state;
  uint32_t num_chunks, chunk;
};

// Query, output, mask and variant: what every prefill problem shares. Rows of q, o and lse are
// indexed by token (the request's qo_begin + token) and query head.
template <typename T, typename TKV = T>
struct PrefillCommonParams {
  using DType = T;
  using DTypeKV = TKV;  // T, or an fp8 type
  using DTypeO = T;
  const T* q;
  T* o;
  float* lse;  // base-2 log-sum-exp, or nullptr
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h, lse_stride_n;
  uint32_t num_qo_heads, num_kv_heads;
  math::FastDivmod group_size;  // query heads per KV head
  bool causal;  // ignored by CUSTOM_MASK kernels: the mask decides (as in FlashInfer)
  int32_t window_left;  // -1: off
  LogitsVariant logits;
  // RoPE on the fly (ROPE kernels): frequency of dims i and i + head_dim / 2 is
  // rope_rcp_scale * 2^(rope_log2_rcp_theta * 2i / head_dim).
  bool apply_rope;
  float rope_rcp_scale, rope_log2_rcp_theta;
  float v_scale;  // multiplies the outputs (fp8 V's scale; the split-KV merge applies it to merged ones)
  // Split-KV states: normalized partial outputs [state][num_qo_heads][head_dim], their lse
  // [state][num_qo_heads].
  float* partial_o;
  float* partial_lse;
  // Custom mask (CUSTOM_MASK kernels only): each request's [qo_len, kv_len] booleans, row-major and
  // bit-packed in little bit order (element e is bit e % 8 of byte e / 8), starting at byte
  // mask_indptr[request] of custom_mask (at byte 0 when mask_indptr is null: single prefill). The
  // heads of a token share its row.
  const uint8_t* custom_mask;
  const int32_t* mask_indptr;
};

// KV_BYTES: bytes of a K or V element (2, or 1 for fp8).
template <uint32_t HEAD_DIM, uint32_t WARPS_Q, uint32_t M_TILES, uint32_t KV_BYTES = 2>
struct PrefillTraits {
  static_assert((WARPS_Q == 1 && M_TILES == 1) || (WARPS_Q == 4 && (M_TILES == 1 || M_TILES == 2)),
                "query tiles of 16, 64 or 128 rows");
  static_assert(M_TILES == 1 || HEAD_DIM <= 128, "two m16 tiles per warp only up to head_dim 128");
  using Tile = SwizzledTile<HEAD_DIM>;
  static constexpr uint32_t kWarps = 4;
  static constexpr uint32_t kWarpsQ = WARPS_Q;
  static constexpr uint32_t kWarpsKV = kWarps / WARPS_Q;  // warps sharing a row, each with its keys
  static constexpr uint32_t kThreads = kWarps * 32;
  static constexpr uint32_t kMTiles = M_TILES;  // m16 tiles (the mma's M) per warp
  static constexpr uint32_t kWarpRows = 16 * kMTiles;
  static constexpr uint32_t kQueryRows = kWarpsQ * kWarpRows;
  static constexpr uint32_t kStepKeys = 64;
  static constexpr uint32_t kWarpKeys = kStepKeys / kWarpsKV;
  static constexpr uint32_t kKeyTiles = kWarpKeys / 8;  // n8 tiles of S per warp and step
  // Double buffering is enough to overlap a step's copy with the previous step's math; a third
  // stage only where it still leaves room for 2 CTAs per SM on sm80 (164 KB).
  static constexpr uint32_t kStages = HEAD_DIM <= 64 ? 3 : 2;
  static constexpr size_t kQTileBytes = size_t(kQueryRows) * HEAD_DIM * 2;
  static constexpr size_t kKVTileBytes = size_t(kStepKeys) * HEAD_DIM * 2;
  static constexpr size_t kStageTileBytes = size_t(kStepKeys) * HEAD_DIM * KV_BYTES;  // as K or V lands
  static constexpr size_t kPipeBytes = kStages * 2 * kStageTileBytes;
  // fp8 KV: the step's K and V converted to 16 bits, after the pipeline.
  static constexpr size_t kConvertedBytes = KV_BYTES == 1 ? 2 * kKVTileBytes : 0;
  static constexpr size_t kSmemBytes = kQTileBytes + kPipeBytes + kConvertedBytes;
  // The epilogue stages every warp's float accumulators in the (then free) Q tile and pipeline;
  // rows padded by 8 floats so that the fragment stores of a half-warp hit distinct banks.
  static constexpr uint32_t kStageStride = HEAD_DIM + 8;
  static constexpr size_t kEpilogueBytes = size_t(kWarps) * kWarpRows * (kStageStride + 2) * sizeof(float);
  static_assert(kEpilogueBytes <= kSmemBytes, "epilogue staging must fit in the kernel's shared memory");
  // 2 CTAs per SM: 8 warps to hide each other's latencies (the 128-row tile needs every register).
  static constexpr uint32_t kMinCTAsPerSM = 2;
};

// A [kRows][HEAD_DIM] tile of fp8 K or V rows as they land from global memory: plain rows of
// 16-byte chunks (each thread later reads 8 consecutive bytes of a row, so no swizzle is needed).
template <uint32_t HEAD_DIM>
struct Fp8RowTile {
  static constexpr uint32_t kChunks = HEAD_DIM / 16;
  __device__ __forceinline__ static uint32_t index(uint32_t row, uint32_t chunk) { return row * kChunks + chunk; }
};

// How K and V tiles of element type TKV land in shared memory.
template <uint32_t HEAD_DIM, typename TKV>
using StageTile = std::conditional_t<sizeof(TKV) == 1, Fp8RowTile<HEAD_DIM>, SwizzledTile<HEAD_DIM>>;

// Starts the copy of keys [first, first + valid) of `seq` into a K and a V tile of kRows rows laid
// out as `Tile` (rows past `valid` zero-filled and not read); one lookup of a key's location
// serves both.
template <typename Tile, uint32_t kRows, uint32_t kThreads, typename Sequence>
__device__ __forceinline__ void load_kv_async(uint4* k_tile, uint4* v_tile, uint32_t tid, uint32_t first,
                                              uint32_t valid, const Sequence& seq) {
  constexpr uint32_t kRowsPerPass = kThreads / Tile::kChunks;
  static_assert(kThreads % Tile::kChunks == 0 && kRows % kRowsPerPass == 0, "uneven tile copy");
  constexpr uint32_t kChunkElems = 16 / sizeof(*seq.k_at(seq.locate(0)));
  const uint32_t chunk = tid % Tile::kChunks;
#pragma unroll
  for (uint32_t pass = 0; pass < kRows / kRowsPerPass; ++pass) {
    const uint32_t row = pass * kRowsPerPass + tid / Tile::kChunks;
    const bool in_range = row < valid;
    const auto at = seq.locate(first + (in_range ? row : 0));
    cp_async::copy<16>(k_tile + Tile::index(row, chunk), seq.k_at(at) + chunk * kChunkElems, in_range);
    cp_async::copy<16>(v_tile + Tile::index(row, chunk), seq.v_at(at) + chunk * kChunkElems, in_range);
  }
}

// LLaMA RoPE of a row's dims [dim0, dim0 + 8) (`lo`, dim0 < head_dim / 2) and their partners
// dim0 + head_dim / 2 (`hi`), which share a frequency: (x, y) -> (x cos - y sin, y cos + x sin),
// the angle formed in fp32 as FlashInfer does (and as apply_rope8 does for decode).
__device__ __forceinline__ void rotate_pairs8(float (&lo)[8], float (&hi)[8], uint32_t dim0, uint32_t head_dim,
                                              float position, float rcp_scale, float log2_rcp_theta) {
#pragma unroll
  for (uint32_t i = 0; i < 8; ++i) {
    float s, c;
    sincosf(position * rope_frequency(dim0 + i, head_dim, rcp_scale, log2_rcp_theta), &s, &c);
    const float x = lo[i], y = hi[i];
    lo[i] = x * c - y * s;
    hi[i] = y * c + x * s;
  }
}

// Rotates rows [0, valid_rows) of a swizzled 16-bit tile of kRows rows in place, row r at
// position_of(r): each thread takes 8-dim pairs (chunk c, chunk c + kChunks / 2) of some rows.
template <typename T, uint32_t HEAD_DIM, uint32_t kRows, uint32_t kThreads, typename PositionOf>
__device__ __forceinline__ void rotate_tile(uint4* tile, uint32_t tid, uint32_t valid_rows,
                                            const PositionOf& position_of, float rcp_scale, float log2_rcp_theta) {
  using Tile = SwizzledTile<HEAD_DIM>;
  constexpr uint32_t kPairs = Tile::kChunks / 2;
  for (uint32_t unit = tid; unit < kRows * kPairs; unit += kThreads) {
    const uint32_t row = unit / kPairs, c = unit % kPairs;
    if (row >= valid_rows) break;  // units go row by row
    T* lo_at = reinterpret_cast<T*>(tile + Tile::index(row, c));
    T* hi_at = reinterpret_cast<T*>(tile + Tile::index(row, c + kPairs));
    float lo[8], hi[8];
    load8_as_float(lo_at, lo);
    load8_as_float(hi_at, hi);
    rotate_pairs8(lo, hi, c * 8, HEAD_DIM, position_of(row), rcp_scale, log2_rcp_theta);
    store8_from_float(lo_at, lo);
    store8_from_float(hi_at, hi);
  }
}

// fp8 KV: converts a step's landed fp8 K and V rows (Fp8RowTile) into the swizzled 16-bit tiles
// the mma reads (exactly: fp16 and bf16 hold every e4m3 and e5m2 value), rotating the keys on the
// way with ROPE (key row r at position first_key + r). Zero-filled rows stay zero.
template <typename T, typename TKV, uint32_t HEAD_DIM, uint32_t kRows, uint32_t kThreads, bool ROPE>
__device__ __forceinline__ void convert_kv_tiles(const uint4* k_in, const uint4* v_in, uint4* k_out, uint4* v_out,
                                                 uint32_t tid, uint32_t first_key, float rcp_scale,
                                                 float log2_rcp_theta) {
  using Tile = SwizzledTile<HEAD_DIM>;
  constexpr uint32_t kChunks = Tile::kChunks, kPairs = kChunks / 2;
  auto in_at = [](const uint4* tile, uint32_t row, uint32_t c) {
    return reinterpret_cast<const TKV*>(tile) + row * HEAD_DIM + c * 8;
  };
  auto out_at = [](uint4* tile, uint32_t row, uint32_t c) { return reinterpret_cast<T*>(tile + Tile::index(row, c)); };
  static_assert(kRows * kPairs % kThreads == 0 && kRows * kChunks % kThreads == 0, "uneven conversion");
  if constexpr (ROPE) {
    // Not unrolled: the sincos of several units at once would spill next to the accumulators.
#pragma unroll 1
    for (uint32_t unit = tid; unit < kRows * kPairs; unit += kThreads) {
      const uint32_t row = unit / kPairs, c = unit % kPairs;
      float lo[8], hi[8];
      load8_as_float(in_at(k_in, row, c), lo);
      load8_as_float(in_at(k_in, row, c + kPairs), hi);
      rotate_pairs8(lo, hi, c * 8, HEAD_DIM, float(first_key + row), rcp_scale, log2_rcp_theta);
      store8_from_float(out_at(k_out, row, c), lo);
      store8_from_float(out_at(k_out, row, c + kPairs), hi);
    }
  } else {
#pragma unroll
    for (uint32_t unit = tid; unit < kRows * kChunks; unit += kThreads) {
      float x[8];
      load8_as_float(in_at(k_in, unit / kChunks, unit % kChunks), x);
      store8_from_float(out_at(k_out, unit / kChunks, unit % kChunks), x);
    }
  }
#pragma unroll
  for (uint32_t unit = tid; unit < kRows * kChunks; unit += kThreads) {
    float x[8];
    load8_as_float(in_at(v_in, unit / kChunks, unit % kChunks), x);
    store8_from_float(out_at(v_out, unit / kChunks, unit % kChunks), x);
  }
}

// The custom-mask bits of one query row for the keys a lane holds in each of kPairs n8 tiles: bit
// 2 j + e of the result is mask element first_bit + 8 j + e (the row's bit of the key in column
// pair 2 (lane % 4) + e of tile j, with first_bit at that column of tile 0). Bytes at or past
// num_bytes (the request's mask) read as 0: only keys past kv_len, masked anyway, land there.
template <uint32_t kPairs>
__device__ __forceinline__ uint32_t custom_mask_pairs(const uint8_t* bits, uint64_t num_bytes, uint64_t first_bit) {
  static_assert(2 * kPairs <= 32, "the pairs of a warp's keys fit one word");
  const uint64_t first_byte = first_bit / 8;
  const uint32_t shift = uint32_t(first_bit % 8);  // a pair may straddle two bytes
  auto byte_at = [&](uint32_t i) { return first_byte + i < num_bytes ? uint32_t(__ldg(bits + first_byte + i)) : 0u; };
  uint32_t pairs = 0, next = byte_at(0);
#pragma unroll
  for (uint32_t j = 0; j < kPairs; ++j) {
    const uint32_t both = next;
    next = byte_at(j + 1);
    pairs |= (((both | (next << 8)) >> shift) & 3u) << (2 * j);
  }
  return pairs;
}

// TRANSFORM: the logits variant has ALiBi or a soft cap (LogitsVariant::transform per logit);
// without, masking is the only per-logit work and the scale folds into the softmax's exp2.
// CUSTOM_MASK: the problem has a custom mask (p.custom_mask). Its kernels always take the TRANSFORM
// path (one kernel more per query tile, not two; the transform of a plain variant is a scale).
// ROPE: q and k are rotated on the fly (p.apply_rope); TRANSFORM path too, for the same reason.
template <uint32_t HEAD_DIM, uint32_t WARPS_Q, uint32_t M_TILES, bool TRANSFORM, bool CUSTOM_MASK, bool ROPE,
          typename Problem>
__global__ void __launch_bounds__(PrefillTraits<HEAD_DIM, WARPS_Q, M_TILES>::kThreads,
                                  PrefillTraits<HEAD_DIM, WARPS_Q, M_TILES>::kMinCTAsPerSM)
    prefill_kernel(const Problem p) {
  using T = typename Problem::DType;
  using TKV = typename Problem::DTypeKV;
  static_assert(sizeof(T) == 2, "tensor-core prefill takes 16-bit q");
  static_assert(std::is_same_v<TKV, T> || sizeof(TKV) == 1, "KV of q's type, or fp8");
  static_assert(TRANSFORM || (!CUSTOM_MASK && !ROPE), "custom-mask and RoPE kernels take the TRANSFORM path");
  constexpr bool kFp8KV = sizeof(TKV) == 1;
  using Traits = PrefillTraits<HEAD_DIM, WARPS_Q, M_TILES, sizeof(TKV)>;
  using Tile = typename Traits::Tile;
  constexpr uint32_t kChunks = Tile::kChunks, kStages = Traits::kStages, kStepKeys = Traits::kStepKeys;
  constexpr uint32_t kQueryRows = Traits::kQueryRows, kWarpRows = Traits::kWarpRows, kMTiles = Traits::kMTiles;
  constexpr uint32_t kWarpKeys = Traits::kWarpKeys, kWarpsKV = Traits::kWarpsKV;

  allow_dependent_launch();  // the merge of split-KV states may start launching now
  const PrefillWork w = p.work();
  if (w.request < 0) return;

  const uint32_t tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const uint32_t warp_q = warp / kWarpsKV, warp_kv = warp % kWarpsKV;
  const uint32_t kv_head = blockIdx.y;
  const uint32_t group = p.group_size.divisor;
  auto token_of = [&](uint32_t packed_row) {
    uint32_t token, head_in_group;
    p.group_size.divmod(packed_row, token, head_in_group);
    return token;
  };
  const PrefillMask mask{w.kv_len, w.kv_len - w.qo_len, p.window_left, p.causal && !CUSTOM_MASK};
  const uint32_t tile_rows = w.row_end - w.row_begin;
  const uint32_t first_token = token_of(w.row_begin), last_token = token_of(w.row_end - 1);
  // The keys this CTA reads: its chunk, narrowed to what the tile's rows see.
  const uint32_t begin = max(w.kv_begin, mask.key_begin(first_token));
  const uint32_t end = min(w.kv_end, mask.key_end(last_token));

  extern __shared__ __align__(16) uint8_t smem[];
  uint4* q_tile = reinterpret_cast<uint4*>(smem);
  uint4* pipe = reinterpret_cast<uint4*>(smem + Traits::kQTileBytes);
  constexpr uint32_t kStageTileChunks = Traits::kStageTileBytes / 16;
  auto k_tile = [&](uint32_t stage) { return pipe + stage * 2 * kStageTileChunks; };
  auto v_tile = [&](uint32_t stage) { return k_tile(stage) + kStageTileChunks; };
  // fp8 KV: the 16-bit K and V tiles of the current step (after the pipeline).
  uint4* k_converted = reinterpret_cast<uint4*>(smem + Traits::kQTileBytes + Traits::kPipeBytes);
  uint4* v_converted = k_converted + kStepKeys * kChunks;

  const T* q = p.q + w.qo_begin * p.q_stride_n + (kv_head * group) * p.q_stride_h;
  Tile::template load_async<kQueryRows, Traits::kThreads>(q_tile, tid, tile_rows, [&](uint32_t r) {
    uint32_t token, head_in_group;
    p.group_size.divmod(w.row_begin + r, token, head_in_group);
    return q + token * p.q_stride_n + head_in_group * p.q_stride_h;
  });
  cp_async::commit_group();
  const auto seq = p.sequence(w, kv_head);
  // Keys past `end` are zero-filled: their logits are masked, and zero values keep P V finite.
  auto issue = [&](uint32_t step, uint32_t stage) {
    if (step < end)
      load_kv_async<StageTile<HEAD_DIM, TKV>, kStepKeys, Traits::kThreads>(k_tile(stage), v_tile(stage), tid, step,
                                                                           min(kStepKeys, end - step), seq);
    cp_async::commit_group();  // also when empty, so that group counts stay uniform
  };
#pragma unroll
  for (uint32_t stage = 0; stage + 1 < kStages; ++stage) issue(begin + stage * kStepKeys, stage);
  if constexpr (ROPE) {
    // Rotate the Q tile once, as soon as it has landed (it was committed before the KV stages);
    // the loop's first barrier publishes it.
    cp_async::wait_group<kStages - 1>();
    __syncthreads();
    rotate_tile<T, HEAD_DIM, kQueryRows, Traits::kThreads>(
        q_tile, tid, tile_rows, [&](uint32_t r) { return float(token_of(w.row_begin + r) + mask.offset); },
        p.rope_rcp_scale, p.rope_log2_rcp_theta);
  }

  // This warp's rows, and the lane's accumulator rows (lane / 4 and lane / 4 + 8 of each m16 tile). Rows past
  // the tile compute on zero queries, masked like its last row, and are never written. Every
  // bound is clipped to the CTA's keys [begin, end).
  const uint32_t warp_row0 = warp_q * kWarpRows;
  const bool warp_has_rows = warp_row0 < tile_rows;
  const uint32_t warp_first_token = token_of(w.row_begin + min(warp_row0, tile_rows - 1));
  const uint32_t warp_last_token = token_of(w.row_begin + min(warp_row0 + kWarpRows, tile_rows) - 1);
  // Key slices outside [warp_begin, warp_end) hold no key this warp sees; slices inside
  // [full_begin, full_end) hold only keys all of its rows see.
  const uint32_t warp_begin = max(begin, mask.key_begin(warp_first_token));
  const uint32_t warp_end = min(end, mask.key_end(warp_last_token));
  const uint32_t full_begin = max(begin, mask.key_begin(warp_last_token));
  const uint32_t full_end = min(end, mask.key_end(warp_first_token));
  uint32_t row_begin[kMTiles][2], row_end[kMTiles][2];
  int32_t q_pos[kMTiles][2];  // TRANSFORM only (unused values are compiled away)
  float alibi_bias_slope[kMTiles][2];
  float o[kMTiles][kChunks][4];
  float m[kMTiles][2], d[kMTiles][2];
#pragma unroll
  for (uint32_t mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (uint32_t r = 0; r < 2; ++r) {
      uint32_t token, head_in_group;
      p.group_size.divmod(w.row_begin + min(warp_row0 + mt * 16 + lane / 4 + 8 * r, tile_rows - 1), token,
                          head_in_group);
      row_begin[mt][r] = max(begin, mask.key_begin(token));
      row_end[mt][r] = min(end, mask.key_end(token));
      q_pos[mt][r] = int32_t(token + mask.offset);
      alibi_bias_slope[mt][r] =
          p.logits.use_alibi ? alibi_slope(kv_head * group + head_in_group, p.num_qo_heads) * p.logits.bias_scale
                             : 0.f;
      m[mt][r] = -math::kInf;
      d[mt][r] = 0.f;
    }
#pragma unroll
    for (uint32_t t = 0; t < kChunks; ++t) o[mt][t][0] = o[mt][t][1] = o[mt][t][2] = o[mt][t][3] = 0.f;
  }

  // The request's custom-mask bits (CUSTOM_MASK only).
  const uint8_t* mask_bits = nullptr;
  uint64_t mask_bytes = 0;
  if constexpr (CUSTOM_MASK) {
    mask_bits = p.custom_mask + (p.mask_indptr != nullptr ? p.mask_indptr[w.request] : 0);
    mask_bytes = (uint64_t(w.qo_len) * w.kv_len + 7) / 8;
  }

  const uint32_t num_steps = end > begin ? math::ceil_div(end - begin, kStepKeys) : 0;
  for (uint32_t i = 0; i < num_steps; ++i) {
    cp_async::wait_group<kStages - 2>();
    __syncthreads();  // step i (and q) landed for every thread; the stage of step i - 1 is free
    const uint32_t step = begin + i * kStepKeys;
    issue(step + (kStages - 1) * kStepKeys, (i + kStages - 1) % kStages);
    // fp8 KV: convert the step's K and V (rotating K with ROPE) into the 16-bit tiles; 16-bit KV
    // with ROPE: rotate K in place. Every warp takes part, then waits for the others' rows.
    if constexpr (kFp8KV) {
      convert_kv_tiles<T, TKV, HEAD_DIM, kStepKeys, Traits::kThreads, ROPE>(
          k_tile(i % kStages), v_tile(i % kStages), k_converted, v_converted, tid, step, p.rope_rcp_scale,
          p.rope_log2_rcp_theta);
      __syncthreads();
    } else if constexpr (ROPE) {
      rotate_tile<T, HEAD_DIM, kStepKeys, Traits::kThreads>(
          k_tile(i % kStages), tid, kStepKeys, [&](uint32_t r) { return float(step + r); }, p.rope_rcp_scale,
          p.rope_log2_rcp_theta);
      __syncthreads();
    }
    const uint32_t slice = step + warp_kv * kWarpKeys;  // this warp's first key of the step
    if (!warp_has_rows || slice >= warp_end || slice + kWarpKeys <= warp_begin) continue;
    const uint4* kt = (kFp8KV ? k_converted : k_tile(i % kStages)) + warp_kv * kWarpKeys * kChunks;
    const uint4* vt = (kFp8KV ? v_converted : v_tile(i % kStages)) + warp_kv * kWarpKeys * kChunks;
    // CUSTOM_MASK: the lane's rows' mask bits of this slice, read before the math that hides the
    // loads' latency.
    uint32_t mask_pairs[kMTiles][2];
    if constexpr (CUSTOM_MASK) {
#pragma unroll
      for (uint32_t mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (uint32_t r = 0; r < 2; ++r) {
          const uint64_t token = uint32_t(q_pos[mt][r]) - mask.offset;
          mask_pairs[mt][r] =
              custom_mask_pairs<Traits::kKeyTiles>(mask_bits, mask_bytes, token * w.kv_len + slice + 2 * (lane % 4));
        }
    }

    // S = Q K^T: A from this warp's 16 query rows, B from 16 keys at a time (non-transposed
    // ldmatrix of key rows gives the column-major B fragment). A warp's key slice starts at a
    // multiple of 16 rows, which keeps the swizzle pattern (row % 8) of the tile.
    // One K fragment serves every m16 tile of the warp.
    float s[kMTiles][Traits::kKeyTiles][4];
#pragma unroll
    for (uint32_t mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (uint32_t j = 0; j < Traits::kKeyTiles; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
    for (uint32_t kk = 0; kk < HEAD_DIM / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (uint32_t mt = 0; mt < kMTiles; ++mt)
        mma::ldmatrix_x4(a[mt], q_tile + Tile::index(warp_row0 + mt * 16 + lane % 16, 2 * kk + lane / 16));
#pragma unroll
      for (uint32_t n = 0; n < kWarpKeys / 16; ++n) {
        uint32_t b[4];
        mma::ldmatrix_x4(b, kt + Tile::index(n * 16 + (lane / 16) * 8 + lane % 8, 2 * kk + (lane / 8) % 2));
#pragma unroll
        for (uint32_t mt = 0; mt < kMTiles; ++mt) {
          mma::mma_m16n8k16<T>(s[mt][2 * n], a[mt], b[0], b[1]);
          mma::mma_m16n8k16<T>(s[mt][2 * n + 1], a[mt], b[2], b[3]);
        }
      }
    }

    // Keys a row does not see become -inf (only slices that cross a row's bounds test keys, and
    // with a custom mask every slice). With TRANSFORM the logits become base 2 here; without, the
    // softmax scales them inside its exp2.
    const bool partial = CUSTOM_MASK || slice < full_begin || slice + kWarpKeys > full_end;
#pragma unroll
    for (uint32_t mt = 0; mt < kMTiles; ++mt) {
      if (TRANSFORM || partial) {
#pragma unroll
        for (uint32_t j = 0; j < Traits::kKeyTiles; ++j) {
#pragma unroll
          for (uint32_t e = 0; e < 4; ++e) {
            const uint32_t r = e / 2, key = slice + j * 8 + 2 * (lane % 4) + e % 2;
            float& x = s[mt][j][e];
            bool hidden = partial && (key < row_begin[mt][r] || key >= row_end[mt][r]);
            if constexpr (CUSTOM_MASK) hidden = hidden || !((mask_pairs[mt][r] >> (2 * j + e % 2)) & 1u);
            if constexpr (TRANSFORM)
              x = hidden ? -math::kInf
                         : p.logits.transform(x * p.logits.query_scale, alibi_bias_slope[mt][r], int32_t(key),
                                              q_pos[mt][r]);
            else if (hidden)
              x = -math::kInf;
          }
        }
      }
      online_softmax_step(s[mt], TRANSFORM ? 1.f : p.logits.query_scale, m[mt], d[mt], o[mt]);
    }

    // O += P V, 16 keys at a time; V rows through the transposing ldmatrix, each fragment serving
    // every m16 tile.
#pragma unroll
    for (uint32_t kt16 = 0; kt16 < kWarpKeys / 16; ++kt16) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (uint32_t mt = 0; mt < kMTiles; ++mt) probabilities_as_a<T>(a[mt], s[mt][2 * kt16], s[mt][2 * kt16 + 1]);
#pragma unroll
      for (uint32_t dt = 0; dt < kChunks / 2; ++dt) {
        uint32_t b[4];
        mma::ldmatrix_x4_trans(b, vt + Tile::index(kt16 * 16 + ((lane / 8) % 2) * 8 + lane % 8, 2 * dt + lane / 16));
#pragma unroll
        for (uint32_t mt = 0; mt < kMTiles; ++mt) {
          mma::mma_m16n8k16<T>(o[mt][2 * dt], a[mt], b[0], b[1]);
          mma::mma_m16n8k16<T>(o[mt][2 * dt + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // Epilogue: every warp stages its accumulators (float) and per-row (m, d) in shared memory (Q
  // tile and pipeline, free now); then each thread takes 8 columns of a row, merges the warps that
  // share the row, normalizes, and writes 16 bytes of the output (or 32 of a partial state).
#pragma unroll
  for (uint32_t mt = 0; mt < kMTiles; ++mt) reduce_row_sums(d[mt]);
  cp_async::wait_group<0>();
  __syncthreads();  // every warp is done with the Q and K/V tiles
  float* staged = reinterpret_cast<float*>(smem);
  float2* stats = reinterpret_cast<float2*>(staged + Traits::kWarps * kWarpRows * Traits::kStageStride);
#pragma unroll
  for (uint32_t mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (uint32_t r = 0; r < 2; ++r) {
      const uint32_t row = warp * kWarpRows + mt * 16 + lane / 4 + 8 * r;
#pragma unroll
      for (uint32_t t = 0; t < kChunks; ++t)
        *reinterpret_cast<float2*>(staged + row * Traits::kStageStride + t * 8 + 2 * (lane % 4)) =
            make_float2(o[mt][t][2 * r], o[mt][t][2 * r + 1]);
      if (lane % 4 == 0) stats[row] = make_float2(m[mt][r], d[mt][r]);
    }
  }
  __syncthreads();
  for (uint32_t idx = tid; idx < kQueryRows * kChunks; idx += Traits::kThreads) {
    const uint32_t row = idx / kChunks, chunk = idx % kChunks;
    if (row >= tile_rows) continue;
    const uint32_t first_warp = (row / kWarpRows) * kWarpsKV, warp_row = row % kWarpRows;
    float m_max = -math::kInf;
#pragma unroll
    for (uint32_t k = 0; k < kWarpsKV; ++k) m_max = fmaxf(m_max, stats[(first_warp + k) * kWarpRows + warp_row].x);
    const float m_ref = SoftmaxState<1>::safe_max(m_max);
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, denom = 0.f;
#pragma unroll
    for (uint32_t k = 0; k < kWarpsKV; ++k) {
      const uint32_t staged_row = (first_warp + k) * kWarpRows + warp_row;
      const float2 md = stats[staged_row];
      const float weight = math::ptx_exp2(md.x - m_ref);  // 0 for a warp that saw no key
      denom += md.y * weight;
      float x[8];
      load8_as_float(staged + staged_row * Traits::kStageStride + chunk * 8, x);
#pragma unroll
      for (uint32_t e = 0; e < 8; ++e) acc[e] = fmaf(weight, x[e], acc[e]);
    }
    // No visible key: output 0. v_scale applies to outputs here, to partial states in the merge.
    const float scale = denom > 0.f ? (w.partial_state < 0 ? p.v_scale : 1.f) / denom : 0.f;
#pragma unroll
    for (uint32_t e = 0; e < 8; ++e) acc[e] *= scale;
    const float row_lse = denom > 0.f ? m_max + math::ptx_log2(denom) : -math::kInf;
    uint32_t token, head_in_group;
    p.group_size.divmod(w.row_begin + row, token, head_in_group);
    const uint32_t qo_head = kv_head * group + head_in_group;
    if (w.partial_state < 0) {
      const int64_t n = int64_t(w.qo_begin) + token;
      store8_from_float(p.o + n * p.o_stride_n + qo_head * p.o_stride_h + chunk * 8, acc);
      if (p.lse != nullptr && chunk == 0) p.lse[n * p.lse_stride_n + qo_head] = row_lse;
    } else {
      const size_t state = size_t(w.partial_state) + size_t(token - first_token) * w.num_chunks + w.chunk;
      const size_t at = state * p.num_qo_heads + qo_head;
      store8_from_float(p.partial_o + at * HEAD_DIM + chunk * 8, acc);
      if (chunk == 0) p.partial_lse[at] = row_lse;
    }
  }
}

// Launch side of the prefill kernel for one Problem: the kernel of a query tile size and logits
// variant, its dynamic shared memory opt-in and occupancy (cached per device), the launch.
template <uint32_t HEAD_DIM, typename Problem>
struct PrefillKernels {
  // A query tile of 16, 64 or 128 rows as (warps along the rows, m16 tiles per warp).
  template <uint32_t WARPS_Q, uint32_t M_TILES>
  struct TileShape {
    static constexpr uint32_t kWarpsQ = WARPS_Q, kMTiles = M_TILES;
    using Traits = PrefillTraits<HEAD_DIM, WARPS_Q, M_TILES, sizeof(typename Problem::DTypeKV)>;
  };

  // Calls fn(TileShape) for a tile of query_rows rows (128 only where HEAD_DIM allows it).
  template <typename Fn>
  static cudaError_t with_tile(uint32_t query_rows, Fn&& fn) {
    if (query_rows == 16) return fn(TileShape<1, 1>{});
    if (query_rows == 64) return fn(TileShape<4, 1>{});
    if constexpr (HEAD_DIM <= 128) {
      if (query_rows == 128) return fn(TileShape<4, 2>{});
    }
    return cudaErrorInvalidValue;
  }

  template <typename Shape, bool TRANSFORM, bool CUSTOM_MASK, bool ROPE>
  static constexpr auto kernel =
      prefill_kernel<HEAD_DIM, Shape::kWarpsQ, Shape::kMTiles, TRANSFORM, CUSTOM_MASK, ROPE, Problem>;

  template <typename Shape, bool TRANSFORM, bool CUSTOM_MASK, bool ROPE>
  static cudaError_t allow_smem() {
    static PerDeviceValue opted_in;
    return allow_dynamic_smem(opted_in, kernel<Shape, TRANSFORM, CUSTOM_MASK, ROPE>, Shape::Traits::kSmemBytes);
  }

  // CTAs of the query_rows kernel (the variant without a logits transform, custom mask or RoPE;
  // they all have the same shared memory and register bound) that fit on `device` at once.
  static cudaError_t wave_ctas(uint32_t query_rows, int device, uint32_t* ctas) {
    return with_tile(query_rows, [&](auto shape) {
      using Shape = decltype(shape);
      static PerDeviceValue resident;
      int num_sms = 0, ctas_per_sm = 0;
      cudaError_t err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
      if (err == cudaSuccess) {
        err = resident.get(device, &ctas_per_sm, [](int* value) {
          cudaError_t e = allow_smem<Shape, false, false, false>();
          return e != cudaSuccess ? e
                                  : cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                                        value, kernel<Shape, false, false, false>, Shape::Traits::kThreads,
                                        Shape::Traits::kSmemBytes);
        });
      }
      *ctas = uint32_t(num_sms) * uint32_t(std::max(ctas_per_sm, 1));
      return err;
    });
  }

  // grid_x CTAs (tiles or work items) per KV head.
  static cudaError_t launch(const Problem& p, uint32_t query_rows, uint32_t grid_x, cudaStream_t stream) {
    const bool transform = p.logits.use_alibi || p.logits.soft_cap_log2 > 0.f;
    return with_tile(query_rows, [&](auto shape) {
      using Shape = decltype(shape);
      using Yes = std::true_type;
      using No = std::false_type;
      auto go = [&](auto transform_tag, auto mask_tag, auto rope_tag) {
        constexpr bool TRANSFORM = decltype(transform_tag)::value, CUSTOM_MASK = decltype(mask_tag)::value;
        constexpr bool ROPE = decltype(rope_tag)::value;
        cudaError_t err = allow_smem<Shape, TRANSFORM, CUSTOM_MASK, ROPE>();
        if (err != cudaSuccess) return err;
        const dim3 grid(grid_x, p.num_kv_heads);
        kernel<Shape, TRANSFORM, CUSTOM_MASK, ROPE>
            <<<grid, Shape::Traits::kThreads, Shape::Traits::kSmemBytes, stream>>>(p);
        return cudaGetLastError();
      };
      if (p.custom_mask != nullptr || p.apply_rope) {
        // choose_query_rows keeps custom masks and RoPE to 16- and 64-row tiles: no 128-row kernels.
        if constexpr (Shape::kMTiles == 1) {
          if (p.custom_mask == nullptr) return go(Yes{}, No{}, Yes{});
          return p.apply_rope ? go(Yes{}, Yes{}, Yes{}) : go(Yes{}, Yes{}, No{});
        } else {
          return cudaErrorInvalidValue;
        }
      }
      return transform ? go(Yes{}, No{}, No{}) : go(No{}, No{}, No{});
    });
  }
};

// Single prefill: one request with its keys in one strided array each; its tiles are the grid's
// columns (the last tiles, which see the most keys under a causal mask, first, so that the grid's
// tail is short work). Never split: nothing to plan.
template <typename T, typename TKV = T>
struct SinglePrefillParams : PrefillCommonParams<T, TKV> {
  using Sequence = StridedSequence<TKV>;
  const TKV* k;  // key n of kv head h at n * k_stride_n + h * k_stride_h (NHD or HND)
  const TKV* v;
  int64_t k_stride_n, k_stride_h, v_stride_n, v_stride_h;
  uint32_t qo_len, kv_len;
  PrefillTiling tiling;  // set by SinglePrefill::run

  __device__ __forceinline__ PrefillWork work() const {
    PrefillWork w{};
    w.request = 0;
    w.qo_len = qo_len;
    w.kv_len = kv_len;
    tiling.rows(gridDim.x - 1 - blockIdx.x, qo_len, &w.row_begin, &w.row_end);
    w.kv_end = kv_len;
    w.partial_state = -1;
    return w;
  }
  __device__ __forceinline__ Sequence sequence(const PrefillWork&, uint32_t kv_head) const {
    return {k + kv_head * k_stride_h, v + kv_head * v_stride_h, k_stride_n, v_stride_n};
  }
};

template <uint32_t HEAD_DIM, typename T, typename TKV = T>
struct SinglePrefill {
  using Params = SinglePrefillParams<T, TKV>;

  // `p.tiling` is chosen here from qo_len x group size.
  static cudaError_t run(Params p, cudaStream_t stream) {
    if (p.qo_len == 0) return cudaSuccess;
    const uint32_t group = p.num_qo_heads / p.num_kv_heads;
    p.tiling = {group, choose_query_rows(uint64_t(p.qo_len) * group, 1, HEAD_DIM,
                                         p.custom_mask != nullptr || p.apply_rope)};
    p.group_size = math::FastDivmod(group);
    return PrefillKernels<HEAD_DIM, Params>::launch(p, p.tiling.query_rows, p.tiling.num_tiles(p.qo_len), stream);
  }
};

}  // namespace attention
}  // namespace flashinfer

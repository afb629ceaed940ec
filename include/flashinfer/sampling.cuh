// Sorting-free sampling from probabilities or logits with optional top-k / top-p / min-p filters,
// top-k / top-p renormalization, top-k masking of logits, and chain speculative sampling.
//
// One CTA per row, or for batches that leave SMs idle a thread-block cluster of up to 8 CTAs per
// row on sm_90 (see "Splitting a row" below). Every filter keeps the tokens whose 32-bit key is >= a threshold key; keys
// order like the values:
//  - probabilities: the bits of the sanitized (non-negative) float shifted left by one, so that
//    the first radix digit spans the 8 exponent bits and 3 mantissa bits;
//  - logits that are sampled from: the same key of the softmax weight exp(logit - max logit),
//    recomputed on every pass (no probability array is written);
//  - logits masked by top_k_mask_logits: the float's bits mapped to an unsigned order.
// Thresholds:
//   top-k: the largest key t with count(key >= t) >= k           (the k-th largest value)
//   top-p: the largest key t with mass(key >= t) >= top_p * M     (M: the row's mass, or the mass
//          of the top-k set when top-k is applied first), and mass(key >= t) > 0
//   min-p: the key of min_p * max
// are found by a radix select over the key with digits of 11, 11 and 10 bits. One streamed pass
// builds the first digit's histogram (count and mass of 2048 bins). It tells how many tokens lie
// at or above the lowest bin that can hold the final threshold; when they fit in shared memory
// (the candidate buffer, up to kMaxCandidates), the finer digits, the kept mass and the draw all
// run on chip. The same pass copies them there in index order (CollectWhileCounting: it keeps
// every token above a floor that rises as the buffer fills), so rows whose candidates fit with a
// chunk to spare take one pass over the row; otherwise a second pass collects them. If they do
// not fit, each finer digit costs one more pass restricted to the threshold bin (one pass in all
// when that bin fits in the buffer), and the draw streams the row again (stopping where it lands).
// bench/sampling_passes.py replays these decisions on the benchmark's rows.
//
// Masses are exact and independent of the order of the atomics: inside a first-digit bin every
// value has the same exponent, so a bin's mass is an integer number of units 2^(exponent - 150);
// 32-bit shared-memory atomics add the mantissas and each wrap-around is carried into a second
// word. Bins are converted to double and summed in a fixed order.
//
// Cost model (one CTA per row, so B=1 and B=128 take about as long, unless the row is split):
// one SM with ~32 KB of loads in flight reads ~25 GB/s, ~20 us per pass over a 513 KB row. The
// first pass is bound by its shared-memory atomics (lanes of a warp that hit one bank or bin are
// serialized) and, as it collects, by its per-chunk CTA barrier. Hence: token counts per bin are
// histogrammed only for top-k (top-p and min-p bound a bin's count by its mass, which is all the
// candidate buffer needs: one atomic per token instead of two); a thread's consecutive tokens in
// one bin are one update; every streaming loop issues the loads of the next chunk before working
// on the current one; collecting has one barrier per chunk (two alternating scan storages).
//
// The token is drawn by inverse transform over the kept tokens in index order: u ~ U(0, 1] from
// Philox4x32-10 (key = seed, counter = (offset, output row, draw)), and the first token whose
// running sum (double) of kept weights reaches u * (kept mass); the last kept token if rounding
// leaves the sum short of it.
//
// Defined behaviour on odd input (documented in the Python API):
//  - NaN, +-inf and negative probabilities count as 0; NaN and +-inf logits count as -inf.
//  - A row with nothing to sample from returns token 0 (renormalized: a row of zeros).
//  - Values tied at a threshold are all kept: top-k keeps more than k tokens when the k-th
//    largest value is tied. From logits, ties are judged on the float32 softmax weights.
//  - Per-row filter values: top_k <= 0 or >= vocab keeps every token; top_p >= 1 or NaN keeps
//    every token, top_p <= 0 keeps only the largest; min_p <= 0 or NaN keeps every token,
//    min_p > 1 acts as 1.
//  - An `indices` entry outside [0, num_input_rows) samples token 0 without reading anything.
// Results depend only on the inputs, the seed, the offset and the number of CTAs per row (every
// reduction has a fixed order; the CTAs per row depend on the batch size and the device).
//
// Splitting a row (sm_90): with few rows, the launcher gives each row a cluster of R = 2, 4 or 8
// CTAs (the largest R for which every row's cluster is resident at once), and rank r streams
// slice r of the row (whole 8-element groups). Every pass then moves R times the bytes. The
// cluster agrees on everything a single CTA would decide alone, through distributed shared
// memory and in rank order (so results stay exact and deterministic): histograms are summed
// bin by bin (integers), maxima and masses reduced, and every CTA then runs the same descend()
// on the same sums. Candidates stay in the CTA whose slice holds them (the cluster-wide count
// bounds each slice's); the first pass collects them from the slice alone, with its own floor,
// and the collecting pass is skipped only if every CTA's floor is low enough (agreed through the
// cluster). The draw: each CTA computes its slice's kept mass; the running sum of those in rank
// order tells which slice holds u * (kept mass), and only that CTA walks its slice. Tests force
// R with the environment variable FI_CORE_SAMPLING_ROW_SPLIT (src/sampling.cpp).
// On other architectures cluster_ranks() is 1 and the cluster code compiles away.
#pragma once

#include <cooperative_groups.h>
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "device_cache.cuh"
#include "sampling_params.h"
#include "vec_dtypes.cuh"

namespace flashinfer {
namespace sampling {

constexpr uint32_t kSamplingThreads = 1024;
constexpr uint32_t kElemsPerThread = 8;  // two 16-byte loads of float32 per thread and chunk
constexpr uint32_t kChunk = kSamplingThreads * kElemsPerThread;
constexpr uint32_t kMaxCandidates = 2 * kChunk;  // fits next to the histograms on sm_90
constexpr uint32_t kBins = 2048;                  // of the widest digit

// Radix digits of the key, most significant first: bits [21, 32), [10, 21), [0, 10).
__host__ __device__ constexpr uint32_t digit_shift(int level) { return level == 0 ? 21u : level == 1 ? 10u : 0u; }
__host__ __device__ constexpr uint32_t digit_bits(int level) { return level == 2 ? 10u : 11u; }
constexpr uint32_t kFirstDigitShift = digit_shift(0);

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), first word of the
// block for counter (offset, row, draw) and key seed. Written out here because the toolkit used
// for building need not ship cuRAND's headers.
__device__ __forceinline__ uint32_t philox_first_word(uint64_t seed, uint64_t offset, uint32_t row,
                                                      uint32_t draw) {
  uint32_t c0 = uint32_t(offset), c1 = uint32_t(offset >> 32), c2 = row, c3 = draw;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// Uniform in (0, 1] from 24 random bits: never 0, so a drawn target mass is positive.
__device__ __forceinline__ float uniform_open_closed(uint32_t word) {
  return float((word >> 8) + 1u) * (1.f / 16777216.f);
}
// Uniform in [0, 1): never 1, so u * p < q accepts whenever p == q > 0.
__device__ __forceinline__ float uniform_closed_open(uint32_t word) {
  return float(word >> 8) * (1.f / 16777216.f);
}

__device__ __forceinline__ bool is_finite(float x) { return fabsf(x) <= FLT_MAX; }  // false for NaN
__device__ __forceinline__ float sanitize(float p) { return (p > 0.f && p <= FLT_MAX) ? p : 0.f; }

// Key of a weight w >= 0 (never -0) and back.
__device__ __forceinline__ uint32_t weight_key(float w) { return __float_as_uint(w) << 1; }
__device__ __forceinline__ float key_weight(uint32_t key) { return __uint_as_float(key >> 1); }

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// How a row's elements become (key, weight). kHasMass: keys are weight keys and masses count.
struct WeightKeys {
  static constexpr bool kHasMass = true;
  static constexpr uint32_t kEmptyKey = 0;  // weight 0
  __device__ __forceinline__ static float weight_of_key(uint32_t key) { return key_weight(key); }
};

template <typename T>
struct ProbRow : WeightKeys {
  using Elem = T;
  static constexpr bool kNeedsMax = false;
  __device__ __forceinline__ void convert(float x, uint32_t& key, float& w) const {
    w = sanitize(x);
    key = weight_key(w);
  }
};

// Softmax numerators exp(x - max_logit), with explicit roundings so that every pass computes the
// same weight for the same logit (a fused multiply-add in one place only would break that).
template <typename T>
struct LogitWeightRow : WeightKeys {
  using Elem = T;
  static constexpr bool kNeedsMax = true;
  float max_logit;
  __device__ __forceinline__ void convert(float x, uint32_t& key, float& w) const {
    constexpr float kLog2e = 1.4426950408889634f;
    w = is_finite(x) ? exp2_approx(__fmul_rn(__fsub_rn(x, max_logit), kLog2e)) : 0.f;
    key = weight_key(w);
  }
};

// The logits themselves, for top-k masking: no weights.
template <typename T>
struct LogitValueRow {
  using Elem = T;
  static constexpr bool kHasMass = false, kNeedsMax = false;
  static constexpr uint32_t kEmptyKey = 0x007FFFFFu;  // key of -inf
  __device__ __forceinline__ void convert(float x, uint32_t& key, float& w) const {
    const float v = !is_finite(x) ? -INFINITY : x == 0.f ? 0.f : x;  // one key for -0 and +0
    const uint32_t bits = __float_as_uint(v);
    key = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
    w = 0.f;
  }
  __device__ __forceinline__ static float weight_of_key(uint32_t) { return 0.f; }
  __device__ __forceinline__ static float value_of_key(uint32_t key) {
    return __uint_as_float((key & 0x80000000u) ? key ^ 0x80000000u : ~key);
  }
};

// Up to kElemsPerThread consecutive elements of a source held by one thread; elements past n have
// the empty key and weight 0.
struct Chunk {
  uint32_t key[kElemsPerThread];
  float w[kElemsPerThread];
  uint32_t first, n;  // position of element 0 in the source; valid elements
};

// Sources of chunks (a row in global memory, the candidates, a speculative residual) tell their
// length, may prefetch a chunk into L2, fetch a chunk's raw values into registers (`Raw`), and
// convert raw values into keys and weights.
//
// Fetching and converting are apart so that the streaming loops can issue the loads of chunk
// c + 1 before working on chunk c (shared-memory atomics, CTA-wide scans with barriers): the
// loads are in flight during that work instead of each chunk waiting out the memory latency,
// and a barrier no longer waits for the slowest warp's load. Asking L2 for chunk
// c + kPrefetchChunks as well keeps DRAM busy further ahead without registers to hold it.
constexpr uint32_t kPrefetchChunks = 2;

// Fetches this thread's part of chunk c of an array of `size` elements into L2.
template <typename T>
__device__ __forceinline__ void prefetch_chunk_l2(const T* data, uint32_t c, uint32_t size) {
  const uint32_t first = c * kChunk + threadIdx.x * kElemsPerThread;
  if (first < size) asm volatile("prefetch.global.L2 [%0];" ::"l"(data + first));
}

// A row, or the slice of it that this CTA streams, read from global memory.
template <class RowT>
struct RowStream {
  using Row = RowT;
  Row row;
  const typename Row::Elem* data;  // element `base` of the row
  uint32_t size;
  uint32_t base = 0;  // position of data[0] in the row: indices are row positions
  __device__ __forceinline__ uint32_t length() const { return size; }
  __device__ __forceinline__ void prefetch(uint32_t c) const { prefetch_chunk_l2(data, c, size); }
  struct Raw {
    float x[kElemsPerThread];
  };
  __device__ __forceinline__ void fetch(const Chunk& ch, Raw& raw) const {
    load_upto8_as_float(data + ch.first, ch.n, raw.x);
  }
  __device__ __forceinline__ void convert(const Raw& raw, Chunk& ch) const {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      if (i < ch.n) {
        row.convert(raw.x[i], ch.key[i], ch.w[i]);
      } else {
        ch.key[i] = Row::kEmptyKey;
        ch.w[i] = 0.f;
      }
    }
  }
  __device__ __forceinline__ uint32_t index(const Chunk& ch, uint32_t i) const { return base + ch.first + i; }
};

// Tokens copied to shared memory (keys and row indices, in index order).
struct Candidates {
  uint32_t* key;
  uint32_t* index;
  uint32_t capacity, size;
};

template <class RowT>
struct CandidateStream {
  using Row = RowT;
  const Candidates& c;
  __device__ __forceinline__ uint32_t length() const { return c.size; }
  __device__ __forceinline__ void prefetch(uint32_t) const {}  // already on chip
  struct Raw {};                                                // read by convert()
  __device__ __forceinline__ void fetch(const Chunk&, Raw&) const {}
  __device__ __forceinline__ void convert(const Raw&, Chunk& ch) const {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      ch.key[i] = i < ch.n ? c.key[ch.first + i] : Row::kEmptyKey;
      ch.w[i] = i < ch.n ? Row::weight_of_key(ch.key[i]) : 0.f;
    }
  }
  __device__ __forceinline__ uint32_t index(const Chunk& ch, uint32_t i) const { return c.index[ch.first + i]; }
};

// max(target - draft, 0) over a vocabulary row (the residual of speculative sampling), or the
// target row alone when draft is null.
struct ResidualStream {
  using Row = ProbRow<float>;
  const float* target;
  const float* draft;
  uint32_t size;
  __device__ __forceinline__ uint32_t length() const { return size; }
  __device__ __forceinline__ void prefetch(uint32_t c) const {
    prefetch_chunk_l2(target, c, size);
    if (draft != nullptr) prefetch_chunk_l2(draft, c, size);
  }
  struct Raw {
    float q[kElemsPerThread], d[kElemsPerThread];
  };
  __device__ __forceinline__ void fetch(const Chunk& ch, Raw& raw) const {
    load_upto8_as_float(target + ch.first, ch.n, raw.q);
    if (draft != nullptr) load_upto8_as_float(draft + ch.first, ch.n, raw.d);
  }
  __device__ __forceinline__ void convert(const Raw& raw, Chunk& ch) const {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      const float d = draft != nullptr ? raw.d[i] : 0.f;
      ch.w[i] = fmaxf(sanitize(raw.q[i]) - sanitize(d), 0.f);
      ch.key[i] = weight_key(ch.w[i]);
    }
  }
  __device__ __forceinline__ uint32_t index(const Chunk& ch, uint32_t i) const { return ch.first + i; }
};

template <class Src>
__device__ __forceinline__ uint32_t num_chunks(const Src& src) { return (src.length() + kChunk - 1) / kChunk; }

// Sets the extent of chunk c of src in ch and issues its loads into raw (prefetching the chunks
// ahead of it into L2).
template <class Src>
__device__ __forceinline__ void fetch_chunk(const Src& src, uint32_t c, Chunk& ch, typename Src::Raw& raw) {
  if (c == 0) {
#pragma unroll
    for (uint32_t ahead = 1; ahead < kPrefetchChunks; ++ahead) src.prefetch(ahead);
  }
  src.prefetch(c + kPrefetchChunks);
  ch.first = c * kChunk + threadIdx.x * kElemsPerThread;
  const uint32_t size = src.length();
  ch.n = ch.first < size ? min(kElemsPerThread, size - ch.first) : 0u;
  src.fetch(ch, raw);
}

// Reads chunk c of src into ch (keys and weights).
template <class Src>
__device__ __forceinline__ void load_chunk(const Src& src, uint32_t c, Chunk& ch) {
  typename Src::Raw raw;
  fetch_chunk(src, c, ch, raw);
  src.convert(raw, ch);
}

// f(chunk) over the chunks of src in order, software-pipelined: the loads of chunk c + 1 are
// issued before f works on chunk c. Every chunk but the last is full; telling f so (n is then a
// constant) lets the compiler drop the per-element bounds checks of f on those chunks.
template <class Src, class F>
__device__ __forceinline__ void for_each_chunk(const Src& src, F&& f) {
  const uint32_t chunks = num_chunks(src);
  if (chunks == 0) return;
  Chunk ch;
  typename Src::Raw raw;
  fetch_chunk(src, 0, ch, raw);
  for (uint32_t c = 0; c + 1 < chunks; ++c) {
    ch.n = kElemsPerThread;
    src.convert(raw, ch);  // frees raw for the next chunk's loads
    Chunk next;
    fetch_chunk(src, c + 1, next, raw);
    f(ch);
    ch.first = next.first;
    ch.n = next.n;
  }
  src.convert(raw, ch);
  f(ch);
}

// Count and mass of a set of tokens (a bin, or everything above one).
struct Cum {
  uint32_t count;
  double mass;
  __device__ __forceinline__ Cum operator+(const Cum& o) const { return {count + o.count, mass + o.mass}; }
};
struct CumSum {
  __device__ Cum operator()(const Cum& a, const Cum& b) const { return a + b; }
};

struct Sum {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a + b; }
};
struct Max {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};
struct Min {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a < b ? a : b; }
};

// Warp scans, not raking: a raking segment of 32 items per thread would not fit in registers.
template <typename V>
using BlockScan = cub::BlockScan<V, kSamplingThreads, cub::BLOCK_SCAN_WARP_SCANS>;

struct ScanStorage {
  union {
    typename BlockScan<uint32_t>::TempStorage u32[2];  // two: alternate chunks (see collect)
    typename BlockScan<double>::TempStorage f64;
    typename BlockScan<Cum>::TempStorage cum;
  } scan;
  uint32_t uint_partials[kSamplingThreads / 32];
  double double_partials[kSamplingThreads / 32];
  // This CTA's value in a reduction over the cluster (read by the other CTAs).
  uint32_t cluster_u32;
  double cluster_f64;
};

// v reduced over the CTA, returned to every thread. Fixed order: deterministic.
template <typename V, typename Op>
__device__ __forceinline__ V block_all_reduce(V v, Op op, V* warp_partials) {
  for (int off = 16; off >= 1; off /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // warp_partials may still be read by the previous reduction
  if (lane == 0) warp_partials[warp] = v;
  __syncthreads();
  v = warp_partials[0];
  for (uint32_t w = 1; w < kSamplingThreads / 32; ++w) v = op(v, warp_partials[w]);
  return v;
}

// ---- The cluster of CTAs that shares a row (sm_90; a cluster of one elsewhere) ----
constexpr uint32_t kMaxRowSplit = 8;  // the portable cluster size

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FI_SAMPLING_CLUSTERS 1
#endif

// CTAs in this CTA's cluster: 1 for launches without clusters (and before sm_90).
__device__ __forceinline__ uint32_t cluster_ranks() {
#ifdef FI_SAMPLING_CLUSTERS
  return cooperative_groups::this_cluster().num_blocks();
#else
  return 1;
#endif
}

__device__ __forceinline__ uint32_t cluster_rank() {
#ifdef FI_SAMPLING_CLUSTERS
  return cooperative_groups::this_cluster().block_rank();
#else
  return 0;
#endif
}

// Barrier over every thread of the cluster; shared-memory writes before it (local or remote) are
// visible to every CTA after it.
__device__ __forceinline__ void cluster_sync() {
#ifdef FI_SAMPLING_CLUSTERS
  cooperative_groups::this_cluster().sync();
#else
  __syncthreads();
#endif
}

// The object at the same place as `local` in the shared memory of CTA `rank` of the cluster.
template <typename T>
__device__ __forceinline__ T* cluster_peer(T* local, uint32_t rank) {
#ifdef FI_SAMPLING_CLUSTERS
  return cooperative_groups::this_cluster().map_shared_rank(local, rank);
#else
  return local;
#endif
}

// Exchanging one value per CTA: publish_to_cluster(v, slot) (v uniform over the CTA; slot is
// ScanStorage's slot of V's type), then any number of reads of value_of_rank(slot, r), then
// release_cluster_slots() before any slot is written again.
template <typename V>
__device__ __forceinline__ void publish_to_cluster(V v, V& slot) {
  if (threadIdx.x == 0) slot = v;
  cluster_sync();
}
template <typename V>
__device__ __forceinline__ V value_of_rank(V& slot, uint32_t rank) { return *cluster_peer(&slot, rank); }
__device__ __forceinline__ void release_cluster_slots() { cluster_sync(); }

// v (uniform over each CTA) reduced over the cluster in rank order: deterministic.
template <typename V, typename Op>
__device__ __forceinline__ V cluster_all_reduce(V v, Op op, V& slot) {
  const uint32_t ranks = cluster_ranks();
  if (ranks == 1) return v;
  publish_to_cluster(v, slot);
  V total = value_of_rank(slot, 0);
  for (uint32_t r = 1; r < ranks; ++r) total = op(total, value_of_rank(slot, r));
  release_cluster_slots();
  return total;
}

// The slice of a row of `size` elements that CTA `rank` of `ranks` streams: whole groups of
// kElemsPerThread elements (so that vector loads stay as aligned as in the whole row), the last
// slices shorter or empty.
__host__ __device__ __forceinline__ void row_slice(uint32_t size, uint32_t ranks, uint32_t rank, uint32_t& begin,
                                                   uint32_t& length) {
  const uint32_t groups = (size + kElemsPerThread - 1) / kElemsPerThread;
  const uint32_t per_rank = (groups + ranks - 1) / ranks * kElemsPerThread;
  begin = rank * per_rank < size ? rank * per_rank : size;
  length = size - begin < per_rank ? size - begin : per_rank;
}

// Per-bin count and mass of one digit. Every value in a bin has the bin's exponent, so the bin's
// mass is an integer number of units 2^(exponent - 150): the sum of the values' mantissas (with
// the implicit bit), carry * 2^32 + units.
//
// Counts cost a second atomic per element, so they are kept only when a count decides something
// (top-k, and rows without mass); `counted` says which. Without them, count[] holds only the
// empty-key tokens, and a bin's count is bounded by its mass: each value in the bin is at least
// its lowest key's mantissa (and at least one unit), so count <= units / that mantissa, within
// 12.5% for normal values (the three mantissa bits of the first digit fix the leading mantissa).
// The bound only decides whether tokens fit in the candidate buffer.
struct Hist {
  uint32_t count[kBins], units[kBins], carry[kBins];
  bool counted;
};

// Replaces every CTA's histogram of digit `level` by its sum over the cluster (an integer sum per
// bin, so the result is exact). Rank r sums its 1/ranks of the bins over all CTAs and writes the
// sums back into all of them: each CTA moves 2 * 3 * num_bins words through the cluster instead
// of ranks times that.
__device__ __forceinline__ void cluster_sum_histogram(Hist& h, int level) {
  const uint32_t ranks = cluster_ranks();
  if (ranks == 1) return;
  const uint32_t share = (1u << digit_bits(level)) / ranks;  // <= kSamplingThreads for ranks >= 2
  const bool mine = threadIdx.x < share;
  const uint32_t bin = cluster_rank() * share + threadIdx.x;
  uint32_t count = 0;
  uint64_t units = 0;
  cluster_sync();  // every CTA's histogram is complete
  if (mine) {
    for (uint32_t r = 0; r < ranks; ++r) {
      const Hist& peer = *cluster_peer(&h, r);
      count += peer.count[bin];
      units += (uint64_t(peer.carry[bin]) << 32) | peer.units[bin];
    }
  }
  cluster_sync();  // every share is read before any is overwritten
  if (mine) {
    for (uint32_t r = 0; r < ranks; ++r) {
      Hist& peer = *cluster_peer(&h, r);
      peer.count[bin] = count;
      peer.units[bin] = uint32_t(units);
      peer.carry[bin] = uint32_t(units >> 32);
    }
  }
  cluster_sync();  // every sum is written before the histograms are read
}

// Where a radix step landed: its bin, and the count / mass strictly above the bin and inside it
// (counts are bounds where the histogram has none: see Hist).
struct Step {
  uint32_t bin;
  Cum above, in_bin;
};

struct RowStorage {
  Hist first_digit, finer_digit;
  ScanStorage scan;
  Step step;  // broadcast of descend()'s result
};

// What a threshold must reach: a count (top-k) or a positive mass (top-p).
struct Goal {
  bool by_mass;
  uint32_t count;
  double mass;
  __device__ __forceinline__ bool reached(const Cum& c) const {
    return by_mass ? c.mass >= mass && c.mass > 0.0 : c.count >= count;
  }
};

struct Threshold {
  uint32_t key;
  Cum above, at;
  __device__ double mass_at_or_above() const { return above.mass + at.mass; }
};

// Mantissa of a weight key with the implicit bit: the key's value in units 2^(exponent - 150).
__device__ __forceinline__ uint32_t key_units(uint32_t key) {
  const uint32_t bits = key >> 1, exponent = bits >> 23;
  return (bits & 0x7FFFFFu) | (exponent != 0 ? 0x800000u : 0u);
}

// Histogram of digit `level` over the elements of src whose higher digits equal `prefix`, with
// counts when with_counts (always for rows without mass), summed over the cluster when the row is
// split. Returns the largest key seen (used for the first digit: the row's maximum; over the
// cluster for that digit only).
//
// Exact and independent of the order of the atomics: only integers are added. A bin's units
// word wraps around every ~256 values; the atomic whose addition wraps (old + add < old, one wrap
// at most since an addition is below 2^27) adds one to the carry word.
//
// Shared-memory atomics are the cost of this pass: a warp's 32 lanes hit bins spread over a few
// hundred (softmax rows), and lanes on the same bank or bin are serialized. Hence one atomic per
// value where counts are not needed, and a run of equal bins in one thread's consecutive values
// is one update (sorted or flat rows would otherwise send every lane of a warp to one address).
//
// after_chunk(chunk) runs once per chunk, after the chunk's atomics are issued, by every thread
// (it may hold CTA barriers): the first digit's pass collects candidates through it.
struct NoChunkHook {
  __device__ __forceinline__ void operator()(const Chunk&) const {}
};

template <class Src, class Hook = NoChunkHook>
__device__ __forceinline__ uint32_t build_histogram(const Src& src, int level, uint32_t prefix, Hist& h,
                                                    ScanStorage& s, bool with_counts,
                                                    Hook&& after_chunk = Hook{}) {
  using Row = typename Src::Row;
  with_counts = with_counts || !Row::kHasMass;
  __syncthreads();  // h may still be read by the previous step
  for (uint32_t b = threadIdx.x; b < kBins; b += kSamplingThreads) h.count[b] = h.units[b] = h.carry[b] = 0;
  if (threadIdx.x == 0) h.counted = with_counts;
  __syncthreads();
  const uint32_t shift = digit_shift(level), top = shift + digit_bits(level);
  const uint32_t mask = (1u << digit_bits(level)) - 1;
  uint32_t empties = 0, max_key = 0;
  for_each_chunk(src, [&](const Chunk& ch) {
    // Runs end where the next element is in another bin or not counted, so no update depends on
    // an earlier one; the wrap-around checks come after every update of the chunk is issued, so
    // a thread's atomics are in flight together instead of each waiting for the last one's
    // returned value.
    uint32_t bin[kElemsPerThread], run_units[kElemsPerThread], old_units[kElemsPerThread];
    bool counted[kElemsPerThread];
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      const uint32_t key = ch.key[i];
      const bool in_range = i < ch.n && (top >= 32 || (key >> top) == prefix);
      // The empty key (zero weight, -inf logit) can fill whole rows: counted here, added once.
      const bool empty = key == Row::kEmptyKey;
      empties += in_range && empty ? 1u : 0u;
      if (in_range) max_key = max(max_key, key);
      counted[i] = in_range && !empty;
      bin[i] = (key >> shift) & mask;
    }
    uint32_t run_count = 0, units = 0;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      run_count += counted[i] ? 1u : 0u;
      if (Row::kHasMass) units += counted[i] ? key_units(ch.key[i]) : 0u;  // < 8 * 2^24
      const bool run_ends = counted[i] && (i + 1 == kElemsPerThread || !counted[i + 1] || bin[i + 1] != bin[i]);
      run_units[i] = Row::kHasMass && run_ends ? units : 0u;
      if (run_ends && with_counts) atomicAdd(&h.count[bin[i]], run_count);
      if (run_units[i] != 0) old_units[i] = atomicAdd(&h.units[bin[i]], run_units[i]);
      if (run_ends) run_count = units = 0;
    }
    if (Row::kHasMass) {
#pragma unroll
      for (uint32_t i = 0; i < kElemsPerThread; ++i)  // this update wrapped around
        if (run_units[i] != 0 && old_units[i] + run_units[i] < old_units[i]) atomicAdd(&h.carry[bin[i]], 1u);
    }
    after_chunk(ch);
  });
  empties = block_all_reduce(empties, Sum{}, s.uint_partials);  // also orders the atomics
  max_key = block_all_reduce(max_key, Max{}, s.uint_partials);
  if (threadIdx.x == 0 && empties != 0) h.count[(Row::kEmptyKey >> shift) & mask] += empties;
  __syncthreads();
  cluster_sum_histogram(h, level);
  if (level == 0) max_key = cluster_all_reduce(max_key, Max{}, s.cluster_u32);
  return max_key;
}

// Count (exact, or the bound of Hist when the histogram has no counts) and, when kWithMass, the
// mass of one bin whose lowest key is lowest_key.
template <bool kWithMass>
__device__ __forceinline__ Cum bin_cum(const Hist& h, uint32_t bin, uint32_t lowest_key) {
  // Bounds only decide what fits in the candidate buffer (far smaller): capped so that sums of
  // 2048 bins cannot wrap around.
  constexpr uint64_t kCountBoundCap = 1u << 20;
  const uint64_t units = (uint64_t(h.carry[bin]) << 32) | h.units[bin];
  uint32_t count = h.count[bin];
  if (!h.counted) count = uint32_t(min(uint64_t(count) + units / max(key_units(lowest_key), 1u), kCountBoundCap));
  if (!kWithMass) return {count, 0.0};
  const uint32_t exponent = lowest_key >> 24;
  return {count, ldexp(double(units), int(max(exponent, 1u)) - 150)};
}

// The first bin from the top at which `above` plus everything down to the bin reaches the goal
// (the lowest bin if none does), for the digit `level` under `prefix`.
template <bool kWithMass>
__device__ Step descend(const Hist& h, int level, uint32_t prefix, const Goal& goal, Cum above,
                        RowStorage& s) {
  constexpr uint32_t kNone = 0xffffffffu;
  const uint32_t shift = digit_shift(level), top = shift + digit_bits(level);
  const uint32_t num_bins = 1u << digit_bits(level);
  const uint32_t base_key = top >= 32 ? 0u : prefix << top;
  // Thread t holds the bins in slots 2t and 2t + 1, slot j being bin num_bins - 1 - j: the scan
  // runs from the top bin down.
  const uint32_t slot = 2 * threadIdx.x;
  const auto cum_of_slot = [&](uint32_t j) {
    const uint32_t bin = num_bins - 1 - j;
    return j < num_bins ? bin_cum<kWithMass>(h, bin, base_key | (bin << shift)) : Cum{0, 0.0};
  };
  const Cum upper = cum_of_slot(slot), lower = cum_of_slot(slot + 1);
  Cum before, total;
  __syncthreads();  // the scan storage may still be in use
  BlockScan<Cum>(s.scan.scan.cum).ExclusiveScan(upper + lower, before, Cum{0, 0.0}, CumSum{}, total);
  const Cum first = above + before + upper;
  uint32_t claim = kNone;
  if (slot < num_bins && goal.reached(first)) claim = slot;
  else if (slot + 1 < num_bins && goal.reached(first + lower)) claim = slot + 1;
  claim = block_all_reduce(claim, Min{}, s.scan.uint_partials);
  if (claim == kNone) claim = num_bins - 1;
  if (threadIdx.x == claim / 2) {
    const bool is_upper = claim == slot;
    s.step = Step{num_bins - 1 - claim, is_upper ? above + before : first, is_upper ? upper : lower};
  }
  __syncthreads();
  return s.step;
}

// Count and mass of the first digit's bins >= floor_bin, over the CTA.
template <bool kWithMass>
__device__ Cum first_digit_at_or_above(const Hist& h, uint32_t floor_bin, ScanStorage& s) {
  uint32_t count = 0;
  double mass = 0.0;
  for (uint32_t b = threadIdx.x; b < kBins; b += kSamplingThreads) {
    if (b < floor_bin) continue;
    const Cum c = bin_cum<kWithMass>(h, b, b << kFirstDigitShift);
    count += c.count;
    mass += c.mass;
  }
  return {block_all_reduce(count, Sum{}, s.uint_partials), block_all_reduce(mass, Sum{}, s.double_partials)};
}

// Copies the tokens with key in [lo, hi] to the candidate buffer in index order (the caller knows
// from a histogram that they fit). One CTA barrier per chunk, the scan's own: chunks alternate
// between two scan storages, and a thread writes storage (c % 2) again at chunk c + 2 only after
// the barrier of chunk c + 1, which every thread reaches after its reads of chunk c.
template <class Row>
__device__ __forceinline__ void collect(const RowStream<Row>& row, uint32_t lo, uint32_t hi, Candidates& c,
                                        ScanStorage& s) {
  uint32_t stored = 0, parity = 0;
  __syncthreads();  // the scan storage and the buffer may still be in use by the previous step
  for_each_chunk(row, [&](const Chunk& ch) {
    uint32_t mine = 0;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) mine += i < ch.n && ch.key[i] >= lo && ch.key[i] <= hi ? 1u : 0u;
    uint32_t pos, total;
    BlockScan<uint32_t>(s.scan.u32[parity]).ExclusiveSum(mine, pos, total);
    parity ^= 1u;
    pos += stored;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      if (i < ch.n && ch.key[i] >= lo && ch.key[i] <= hi && pos < c.capacity) {
        c.key[pos] = ch.key[i];
        c.index[pos] = row.index(ch, i);
        ++pos;
      }
    }
    stored += total;
  });
  c.size = min(stored, c.capacity);
  __syncthreads();
}

// Keeps the candidates with key >= lo, in their order. In place: each block of kChunk entries is
// read into registers before the scan's barrier and written after it, to positions below the
// block's end (so below the next block, read later). Scan storages alternate as in collect. Not
// inlined: it runs a few times a row, outside the streaming loops.
inline __device__ __noinline__ void compact_candidates(Candidates& c, uint32_t lo, ScanStorage& s) {
  uint32_t kept = 0, parity = 0;
  __syncthreads();  // the buffer and the scan storage may still be in use by the previous step
  for (uint32_t block = 0; block < c.size; block += kChunk) {
    const uint32_t at = block + threadIdx.x * kElemsPerThread;
    uint32_t key[kElemsPerThread], index[kElemsPerThread], mine = 0;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      const bool valid = at + i < c.size;
      key[i] = valid ? c.key[at + i] : 0u;
      index[i] = valid ? c.index[at + i] : 0u;
      mine += valid && key[i] >= lo ? 1u : 0u;
    }
    uint32_t pos, total;
    BlockScan<uint32_t>(s.scan.u32[parity]).ExclusiveSum(mine, pos, total);
    parity ^= 1u;
    pos += kept;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      if (at + i < c.size && key[i] >= lo) {
        c.key[pos] = key[i];
        c.index[pos] = index[i];
        ++pos;
      }
    }
    kept += total;
  }
  c.size = kept;
  __syncthreads();
}

// Collecting the candidates during the first digit's histogram pass, which saves the collecting
// pass over the row (one pass in all where the candidates fit). The pass does not know yet which
// first-digit bin the thresholds fall in, so it keeps, in index order, every token of its slice
// whose first digit is >= a floor bin, and raises the floor whenever the next chunk might not fit:
// to the lowest bin whose tokens seen so far number at most capacity - kChunk (by the histogram
// built so far: exact counts, or the bound of Hist; either is >= the tokens buffered there), and
// drops the tokens below it. Tokens a raise drops lie below the floor for good: the floor only
// rises, and the buffer always holds every token seen at or above it.
//
// The final floor is at or below the lowest bin holding a threshold (floor_bin in
// select_threshold) whenever that bin lies above the empty key's and the candidates at or above
// it number at most capacity - kChunk (as the histogram counts or bounds them over the whole
// slice, so over any part of it: no raise passes the bin). The buffer then holds what the
// collecting pass would copy, plus lower tokens that compact_candidates drops. Otherwise (the
// floor rose past floor_bin) the collecting pass runs as before. The floor starts above the bin
// of the empty key, which the histogram counts only after the pass.
template <class Row>
struct CollectWhileCounting {
  const RowStream<Row>& row;
  Candidates& cand;
  RowStorage& s;
  bool active;  // false: the floor rose above every bin, or the buffer leaves no room to spare
  uint32_t floor_bin = (Row::kEmptyKey >> kFirstDigitShift) + 1;
  uint32_t parity = 0;

  __device__ CollectWhileCounting(const RowStream<Row>& r, Candidates& c, RowStorage& storage)
      : row(r), cand(c), s(storage), active(c.capacity > kChunk) {
    cand.size = 0;
  }

  // Whether the buffer holds every token of this CTA's slice whose first digit is >= bin.
  __device__ __forceinline__ bool holds_from(uint32_t bin) const { return active && floor_bin <= bin; }

  __device__ __forceinline__ void operator()(const Chunk& ch) {
    if (!active) return;  // uniform over the CTA
    uint32_t pos, total;
    scan(ch, pos, total);
    if (cand.size + total > cand.capacity) {
      raise_floor();
      if (!active) return;
      scan(ch, pos, total);  // fits now: at most capacity - kChunk are buffered
    }
    const uint32_t lo = floor_bin << kFirstDigitShift;
    pos += cand.size;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      if (i < ch.n && ch.key[i] >= lo && pos < cand.capacity) {
        cand.key[pos] = ch.key[i];
        cand.index[pos] = row.index(ch, i);
        ++pos;
      }
    }
    cand.size += total;
  }

  // This thread's position among the chunk's tokens at or above the floor, and their number.
  __device__ __forceinline__ void scan(const Chunk& ch, uint32_t& pos, uint32_t& total) {
    const uint32_t lo = floor_bin << kFirstDigitShift;
    uint32_t mine = 0;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) mine += i < ch.n && ch.key[i] >= lo ? 1u : 0u;
    BlockScan<uint32_t>(s.scan.scan.u32[parity]).ExclusiveSum(mine, pos, total);
    parity ^= 1u;
  }

  // Rare (a few times a row) and not inlined: its registers stay out of the streaming loop.
  __device__ __noinline__ void raise_floor() {
    // descend() finds the highest bin at which the count from the top exceeds `room`; the floor
    // goes just above it (the scan's barrier has made every atomic so far visible).
    const uint32_t room = cand.capacity - kChunk;
    const Step over = descend<false>(s.first_digit, 0, 0u, Goal{false, room + 1, 0.0}, Cum{0, 0.0}, s);
    const bool exceeded = (over.above + over.in_bin).count > room;
    floor_bin = max(floor_bin, exceeded ? over.bin + 1 : 0u);
    if (floor_bin >= kBins) {
      active = false;
      return;
    }
    compact_candidates(cand, floor_bin << kFirstDigitShift, s.scan);
    // The histogram bounds what is buffered at or above the floor, so this cannot happen; should
    // it, the collecting pass runs instead of a buffer that misses tokens.
    if (cand.size > room) active = false;
  }
};

// The finer digits of a threshold whose first digit is `first`.
template <class Src>
__device__ Threshold refine(const Src& src, const Step& first, const Goal& goal, RowStorage& s) {
  constexpr bool kWithMass = Src::Row::kHasMass;
  const bool with_counts = !goal.by_mass;
  build_histogram(src, 1, first.bin, s.finer_digit, s.scan, with_counts);
  const Step second = descend<kWithMass>(s.finer_digit, 1, first.bin, goal, first.above, s);
  const uint32_t prefix = (first.bin << digit_bits(1)) | second.bin;
  build_histogram(src, 2, prefix, s.finer_digit, s.scan, with_counts);
  const Step third = descend<kWithMass>(s.finer_digit, 2, prefix, goal, second.above, s);
  return {(prefix << digit_bits(2)) | third.bin, third.above, third.in_bin};
}

// The exact threshold in the first-digit bin `first`: on chip when the candidates hold every
// token of the bin, else from the row (copying the bin to the buffer first when it fits).
template <class Row>
__device__ Threshold resolve(const RowStream<Row>& row, Candidates& cand, bool on_chip,
                             const Step& first, const Goal& goal, RowStorage& s) {
  if (!on_chip && first.in_bin.count <= cand.capacity) {
    const uint32_t lo = first.bin << kFirstDigitShift;
    collect(row, lo, lo | ((1u << kFirstDigitShift) - 1), cand, s.scan);
    on_chip = true;
  }
  return on_chip ? refine(CandidateStream<Row>{cand}, first, goal, s) : refine(row, first, goal, s);
}

// The filters of one output row, with the rules for odd values applied.
struct RowFilters {
  bool top_k, top_p, min_p;
  bool top_p_after_top_k;  // top-p over the top-k set
  uint32_t k;
  float top_p_value, min_p_value;
};

__device__ __forceinline__ RowFilters row_filters(const SamplingParams& p, uint32_t out_row) {
  RowFilters f{};
  if (p.use_top_k) {
    const int32_t k = p.top_k_arr != nullptr ? p.top_k_arr[out_row] : p.top_k;
    f.top_k = k > 0 && uint32_t(k) < p.vocab_size;
    f.k = uint32_t(k);
  }
  if (p.use_top_p) {
    const float v = p.top_p_arr != nullptr ? p.top_p_arr[out_row] : p.top_p;
    f.top_p = v < 1.f;  // false for NaN
    f.top_p_value = fmaxf(v, 0.f);
  }
  if (p.use_min_p) {
    const float v = p.min_p_arr != nullptr ? p.min_p_arr[out_row] : p.min_p;
    f.min_p = v > 0.f;  // false for NaN
    f.min_p_value = fminf(v, 1.f);
  }
  f.top_p_after_top_k = f.top_k && f.top_p && p.top_k_first;
  return f;
}

// The combined threshold of a row; kept_mass < 0 when not known yet. on_chip: the candidate
// buffer holds every token at or above the threshold.
struct Selection {
  uint32_t threshold;
  double kept_mass;
  bool on_chip;
};

template <class Row>
__device__ Selection select_threshold(const RowStream<Row>& row, const RowFilters& f,
                                      Candidates& cand, RowStorage& s) {
  constexpr bool kWithMass = Row::kHasMass;
  Selection sel{0u, -1.0, false};
  if (!f.top_k && !f.top_p && !f.min_p) return sel;
  // Counts only for top-k: top-p and min-p need masses, and bounds on counts (see Hist).
  CollectWhileCounting<Row> early(row, cand, s);
  const uint32_t max_key = build_histogram(row, 0, 0u, s.first_digit, s.scan, f.top_k, early);
  Step by_count{}, by_mass{};
  Goal mass_goal{true, 0, 0.0};
  uint32_t top_bin = 0;
  if (f.top_k) {
    by_count = descend<kWithMass>(s.first_digit, 0, 0u, Goal{false, f.k, 0.0}, Cum{0, 0.0}, s);
    top_bin = by_count.bin;
  }
  if (f.top_p && !f.top_p_after_top_k) {
    mass_goal.mass = f.top_p_value * first_digit_at_or_above<kWithMass>(s.first_digit, 0, s.scan).mass;
    by_mass = descend<kWithMass>(s.first_digit, 0, 0u, mass_goal, Cum{0, 0.0}, s);
    top_bin = max(top_bin, by_mass.bin);
  }
  if (f.min_p) {
    sel.threshold = weight_key(f.min_p_value * Row::weight_of_key(max_key));
    top_bin = max(top_bin, sel.threshold >> kFirstDigitShift);
  }
  // Everything at or above the lowest first-digit bin that can hold the result; with top-k
  // first, the top-p threshold lies at or above the top-k one.
  const uint32_t floor_bin = f.top_p_after_top_k ? by_count.bin : top_bin;
  // Candidates collected by the first pass, if every CTA of the row's cluster kept all of its
  // slice's tokens down to floor_bin (the steps after this are cluster-wide: decided alike).
  const bool collected = cluster_all_reduce(early.holds_from(floor_bin) ? 1u : 0u, Min{}, s.scan.cluster_u32) != 0;
  if (collected) {
    compact_candidates(cand, floor_bin << kFirstDigitShift, s.scan);  // what collect() would copy
    sel.on_chip = true;
  } else {
    sel.on_chip = first_digit_at_or_above<false>(s.first_digit, floor_bin, s.scan).count <= cand.capacity;
    if (sel.on_chip) collect(row, floor_bin << kFirstDigitShift, 0xFFFFFFFFu, cand, s.scan);
  }

  const auto take = [&](const Threshold& t) {
    if (t.key < sel.threshold) return;
    sel.threshold = t.key;
    sel.kept_mass = t.mass_at_or_above();
  };
  if (f.top_k && (by_count.bin == top_bin || f.top_p_after_top_k)) {
    const Threshold t = resolve(row, cand, sel.on_chip, by_count, Goal{false, f.k, 0.0}, s);
    take(t);
    if (f.top_p_after_top_k) {
      mass_goal.mass = f.top_p_value * t.mass_at_or_above();
      by_mass = descend<kWithMass>(s.first_digit, 0, 0u, mass_goal, Cum{0, 0.0}, s);
    }
  }
  if (f.top_p && by_mass.bin >= (sel.threshold >> kFirstDigitShift))
    take(resolve(row, cand, sel.on_chip, by_mass, mass_goal, s));
  return sel;
}

template <class Src>
__device__ __forceinline__ double kept_mass(const Src& src, uint32_t threshold, ScanStorage& s) {
  double m = 0.0;
  for_each_chunk(src, [&](const Chunk& ch) {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) m += ch.key[i] >= threshold ? double(ch.w[i]) : 0.0;
  });
  return block_all_reduce(m, Sum{}, s.double_partials);
}

// The first kept token (key >= threshold, weight > 0) in source order whose running kept mass
// reaches target; the last kept token if rounding leaves the running sum short of it. The CTA
// minimum over "running sum >= target" (not "crosses target") also holds where the scanned
// prefix of a thread rounds differently from the running sum of the thread before it.
template <class Src>
__device__ __forceinline__ uint32_t inverse_transform(const Src& src, uint32_t threshold, double target, ScanStorage& s) {
  constexpr uint32_t kNone = 0xffffffffu;
  double running = 0.0;
  uint32_t last_kept = 0;
  const uint32_t chunks = num_chunks(src);
  for (uint32_t c = 0; c < chunks; ++c) {
    Chunk ch;
    load_chunk(src, c, ch);
    double local = 0.0;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      ch.w[i] = ch.key[i] >= threshold ? ch.w[i] : 0.f;
      local += ch.w[i];
    }
    double before, chunk_mass;
    __syncthreads();  // the scan storage may still be in use by the previous chunk
    BlockScan<double>(s.scan.f64).ExclusiveSum(local, before, chunk_mass);
    before += running;
    uint32_t claim = kNone;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      if (ch.w[i] > 0.f) {
        const uint32_t index = src.index(ch, i);
        before += ch.w[i];
        last_kept = index;
        if (claim == kNone && target <= before) claim = index;
      }
    }
    claim = block_all_reduce(claim, Min{}, s.uint_partials);
    if (claim != kNone) return claim;
    running += chunk_mass;
  }
  return block_all_reduce(last_kept, Max{}, s.uint_partials);
}

// The draw of a row split over a cluster. Each CTA's slice holds the kept mass m_r; the first
// rank whose running sum m_0 + ... + m_r reaches target = u * (sum of all m) holds the token, and
// only that CTA walks its slice, for target - (m_0 + ... + m_{r-1}). Returns whether this CTA
// drew (token: the drawn row position); rank 0 draws token 0 when nothing is kept.
template <class Src>
__device__ bool draw_in_cluster(const Src& src, uint32_t threshold, float u, ScanStorage& s, uint32_t& token) {
  double& slot = s.cluster_f64;
  publish_to_cluster(kept_mass(src, threshold, s), slot);
  const uint32_t ranks = cluster_ranks();
  double total = 0.0;
  for (uint32_t r = 0; r < ranks; ++r) total += value_of_rank(slot, r);
  // The running sums repeat the additions of `total` in the same order and u <= 1, so the last
  // rank with mass reaches target at the latest.
  const double target = u * total;
  double before = 0.0;
  uint32_t owner = 0;
  for (uint32_t r = 0; r < ranks && total > 0.0; ++r) {
    const double mass = value_of_rank(slot, r);
    if (mass > 0.0 && target <= before + mass) {
      owner = r;
      break;
    }
    before += mass;
  }
  release_cluster_slots();
  token = 0;
  if (cluster_rank() != owner) return false;
  if (!(total > 0.0)) return true;  // nothing kept: rank 0 gives token 0
  token = inverse_transform(src, threshold, target - before, s);
  return true;
}

template <typename T>
__device__ float max_logit(const T* data, uint32_t size, ScanStorage& s) {
  using Values = LogitValueRow<T>;
  uint32_t m = 0;
  for_each_chunk(RowStream<Values>{Values{}, data, size}, [&](const Chunk& ch) {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) m = max(m, ch.key[i]);
  });
  m = block_all_reduce(m, Max{}, s.uint_partials);
  return Values::value_of_key(cluster_all_reduce(m, Max{}, s.cluster_u32));
}

template <class Row>
__global__ void __launch_bounds__(kSamplingThreads)
    filter_rows_kernel(const SamplingParams p, const uint32_t capacity) {
  extern __shared__ __align__(16) uint8_t smem[];
  RowStorage& s = *reinterpret_cast<RowStorage*>(smem);
  uint32_t* buffer = reinterpret_cast<uint32_t*>(smem + sizeof(RowStorage));
  Candidates cand{buffer, buffer + capacity, capacity, 0};

  // Every CTA of a cluster works on the same output row; rank r streams slice r of it. Every
  // branch below that a cluster-wide step follows is taken alike by the whole cluster.
  const uint32_t ranks = cluster_ranks(), rank = cluster_rank();
  const uint32_t out_row = blockIdx.x / ranks;
  int64_t in_row = out_row;
  if (p.indices != nullptr)
    in_row = p.indices_int64 ? static_cast<const int64_t*>(p.indices)[out_row]
                             : static_cast<const int32_t*>(p.indices)[out_row];
  if (in_row < 0 || in_row >= int64_t(p.num_input_rows)) {  // uniform across the cluster
    if (p.mode == SamplingMode::kSample && rank == 0 && threadIdx.x == 0) p.samples[out_row] = 0;
    return;
  }
  using Elem = typename Row::Elem;
  uint32_t begin, length;
  row_slice(p.vocab_size, ranks, rank, begin, length);
  RowStream<Row> row{Row{}, static_cast<const Elem*>(p.input) + in_row * p.input_stride + begin, length, begin};
  if constexpr (Row::kNeedsMax) row.row.max_logit = max_logit(row.data, row.size, s.scan);
  const Selection sel = select_threshold(row, row_filters(p, out_row), cand, s);

  if constexpr (!Row::kHasMass) {  // top-k masking of logits
    Elem* out = static_cast<Elem*>(p.out) + int64_t(out_row) * p.out_stride + row.base;
    for_each_chunk(row, [&](const Chunk& ch) {
      float y[kElemsPerThread];
#pragma unroll
      for (uint32_t i = 0; i < kElemsPerThread; ++i)
        y[i] = ch.key[i] >= sel.threshold ? Row::value_of_key(ch.key[i]) : -INFINITY;
      store_upto8_from_float(out + ch.first, ch.n, y);
    });
  } else {
    const CandidateStream<Row> on_chip{cand};
    const float u = uniform_open_closed(philox_first_word(p.seed, p.offset, out_row, 0));
    if (p.mode == SamplingMode::kSample && ranks > 1) {
      uint32_t token;
      const bool drew = sel.on_chip ? draw_in_cluster(on_chip, sel.threshold, u, s.scan, token)
                                    : draw_in_cluster(row, sel.threshold, u, s.scan, token);
      if (drew && threadIdx.x == 0) p.samples[out_row] = int32_t(min(token, p.vocab_size - 1));
      return;
    }
    // Known from the histograms, else the slices' kept masses summed over the cluster.
    double kept = sel.kept_mass;
    if (kept < 0.0) {
      kept = sel.on_chip ? kept_mass(on_chip, sel.threshold, s.scan) : kept_mass(row, sel.threshold, s.scan);
      kept = cluster_all_reduce(kept, Sum{}, s.scan.cluster_f64);
    }
    if (p.mode == SamplingMode::kRenorm) {
      float* out = static_cast<float*>(p.out) + int64_t(out_row) * p.out_stride + row.base;
      const float scale = kept > 0.0 ? float(1.0 / kept) : 0.f;
      for_each_chunk(row, [&](const Chunk& ch) {
        float y[kElemsPerThread];
#pragma unroll
        for (uint32_t i = 0; i < kElemsPerThread; ++i) y[i] = ch.key[i] >= sel.threshold ? ch.w[i] * scale : 0.f;
        store_upto8_from_float(out + ch.first, ch.n, y);
      });
      return;
    }
    uint32_t token = 0;
    if (kept > 0.0) {
      const double target = u * kept;
      token = sel.on_chip ? inverse_transform(on_chip, sel.threshold, target, s.scan)
                          : inverse_transform(row, sel.threshold, target, s.scan);
    }
    if (threadIdx.x == 0) p.samples[out_row] = int32_t(min(token, p.vocab_size - 1));
  }
}

// Draft token j is accepted when u_j * draft[j][t_j] < target[j][t_j] (probability
// min(1, target / draft)); the first rejection at j emits a token drawn from
// normalize(max(target[j] - draft[j], 0)) (from target[j] when that is all zero), and if every
// draft token is accepted a bonus token is drawn from target[num_speculative_tokens].
// accepted_token_num counts the draft tokens whose own test passes (each judged independently),
// emitted_draft_token_num the accepted prefix. A draft token id outside [0, vocab) is rejected.
// (Templates, this kernel and its launcher, so that a translation unit compiles them only if used.)
template <typename Unused = void>
__global__ void __launch_bounds__(kSamplingThreads) chain_speculative_kernel(const SpeculativeParams p) {
  __shared__ ScanStorage s;
  const uint32_t row = blockIdx.x, n = p.num_speculative_tokens;
  const int32_t* ids = p.draft_token_ids + int64_t(row) * p.draft_ids_stride_batch;
  const float* draft = p.draft_probs + int64_t(row) * p.draft_stride_batch;
  const float* target = p.target_probs + int64_t(row) * p.target_stride_batch;
  uint32_t emitted = n, accepted = 0;
  for (uint32_t j = 0; j < n; ++j) {  // every thread takes the same decisions
    const int32_t t = ids[int64_t(j) * p.draft_ids_stride_step];
    const bool valid = t >= 0 && uint32_t(t) < p.vocab_size;
    const float q = valid ? sanitize(target[int64_t(j) * p.target_stride_step + t]) : 0.f;
    const float d = valid ? sanitize(draft[int64_t(j) * p.draft_stride_step + t]) : 0.f;
    const float u = uniform_closed_open(philox_first_word(p.seed, p.offset, row, j));
    const bool accept = valid && u * d < q;
    accepted += accept ? 1u : 0u;
    if (!accept && emitted == n) emitted = j;
  }
  int32_t* out = p.output_token_ids + int64_t(row) * p.output_stride_batch;
  for (uint32_t j = threadIdx.x; j <= n; j += kSamplingThreads)
    if (j != emitted) out[int64_t(j) * p.output_stride_step] = j < emitted ? ids[int64_t(j) * p.draft_ids_stride_step] : -1;

  const float* target_row = target + int64_t(emitted) * p.target_stride_step;
  ResidualStream residual{target_row, emitted < n ? draft + int64_t(emitted) * p.draft_stride_step : nullptr,
                          p.vocab_size};
  double mass = kept_mass(residual, 0u, s);
  if (mass <= 0.0 && residual.draft != nullptr) {
    residual.draft = nullptr;
    mass = kept_mass(residual, 0u, s);
  }
  uint32_t token = 0;
  if (mass > 0.0) {
    const double goal = uniform_open_closed(philox_first_word(p.seed, p.offset, row, n)) * mass;
    token = inverse_transform(residual, 0u, goal, s);
  }
  if (threadIdx.x == 0) {
    out[int64_t(emitted) * p.output_stride_step] = int32_t(min(token, p.vocab_size - 1));
    const int32_t accepted_before = p.add_to_accepted ? p.accepted_token_num[row] : 0;
    const int32_t emitted_before = p.add_to_emitted ? p.emitted_draft_token_num[row] : 0;
    p.accepted_token_num[row] = accepted_before + int32_t(accepted);
    p.emitted_draft_token_num[row] = emitted_before + int32_t(emitted);
  }
}

// Launch configuration of the row kernel, with `ranks` CTAs per row in one cluster (1: no cluster
// attribute, the launch works on every architecture). `cluster` must outlive the config.
inline cudaLaunchConfig_t filter_rows_config(uint32_t rows, uint32_t ranks, size_t smem, cudaStream_t stream,
                                             cudaLaunchAttribute& cluster) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(rows * ranks);
  config.blockDim = dim3(kSamplingThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  if (ranks > 1) {
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = ranks;
    cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = 1;
  }
  return config;
}

// What the launcher needs to know of the current device for one row kernel, each computed once
// per device: the shared memory it may use, and for ranks 2, 4, 8 how many clusters of that
// many CTAs can be resident at once (0: clusters unavailable, before sm_90 or with a kernel image
// compiled for an older architecture, whose code has no cluster steps).
struct FilterRowsDeviceFacts {
  flashinfer::PerDeviceValue smem_limit, opted_in;
  flashinfer::PerDeviceValue resident_clusters_plus_one[4];  // index log2(ranks); +1: 0 is cacheable
};

template <class Kernel>
cudaError_t resident_clusters(FilterRowsDeviceFacts& facts, Kernel kernel, int device, uint32_t ranks,
                              size_t smem, int* clusters) {
  const int log2_ranks = ranks == 2 ? 1 : ranks == 4 ? 2 : 3;
  int plus_one = 0;
  const cudaError_t err = facts.resident_clusters_plus_one[log2_ranks].get(device, &plus_one, [&](int* value) {
    *value = 1;
    int major = 0;
    cudaFuncAttributes attr{};
    cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&attr, kernel);
    if (e != cudaSuccess || major < 9 || attr.ptxVersion < 90 || attr.binaryVersion < 90) return e;
    cudaLaunchAttribute cluster;
    const cudaLaunchConfig_t config = filter_rows_config(1, ranks, smem, nullptr, cluster);
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, kernel, &config) != cudaSuccess) {
      (void)cudaGetLastError();  // this size is unavailable: not an error of the launch
      n = 0;
    }
    *value = n + 1;
    return cudaSuccess;
  });
  *clusters = plus_one - 1;
  return err;
}

// CTAs per row: the largest R in {8, 4, 2} for which every row's cluster is resident at once and
// a slice keeps at least half a chunk (below that the cluster's barriers outweigh the shorter
// passes; a guess to be tuned by measurement), else 1. p.row_split forces R (reduced to a size
// the device can run).
template <class Kernel>
cudaError_t choose_row_split(const SamplingParams& p, FilterRowsDeviceFacts& facts, Kernel kernel, int device,
                             size_t smem, uint32_t* ranks) {
  *ranks = 1;
  if (p.row_split == 1) return cudaSuccess;
  for (uint32_t r = kMaxRowSplit; r > 1; r /= 2) {
    if (p.row_split != 0 && r > p.row_split) continue;
    if (uint64_t(p.batch_size) * r > uint64_t(INT32_MAX)) continue;
    int clusters = 0;
    const cudaError_t err = resident_clusters(facts, kernel, device, r, smem, &clusters);
    if (err != cudaSuccess) return err;
    const bool pays = uint64_t(clusters) >= p.batch_size && p.vocab_size / r >= kChunk / 2;
    if (clusters > 0 && (p.row_split != 0 || pays)) {
      *ranks = r;
      return cudaSuccess;
    }
  }
  return cudaSuccess;
}

// Launches the row kernel with as large a candidate buffer as the device's shared memory allows,
// with each row split over a cluster where that pays (choose_row_split).
template <class Row>
cudaError_t LaunchFilterRows(const SamplingParams& p, cudaStream_t stream) {
  static FilterRowsDeviceFacts facts;
  if (p.batch_size == 0 || p.vocab_size == 0) return cudaSuccess;
  int device = 0, smem_limit = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess)
    err = facts.smem_limit.get(device, &smem_limit, [&](int* value) {
      return cudaDeviceGetAttribute(value, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    });
  if (err != cudaSuccess) return err;
  const size_t fixed = sizeof(RowStorage), per_candidate = 2 * sizeof(uint32_t);
  const size_t room = size_t(smem_limit) > fixed ? (size_t(smem_limit) - fixed) / per_candidate : 0;
  const uint32_t capacity = uint32_t(room < kMaxCandidates ? room : kMaxCandidates);
  const size_t smem = fixed + capacity * per_candidate;
  const auto kernel = filter_rows_kernel<Row>;
  err = allow_dynamic_smem(facts.opted_in, kernel, smem);
  uint32_t ranks = 1;
  if (err == cudaSuccess) err = choose_row_split(p, facts, kernel, device, smem, &ranks);
  if (err != cudaSuccess) return err;
  cudaLaunchAttribute cluster;
  const cudaLaunchConfig_t config = filter_rows_config(p.batch_size, ranks, smem, stream, cluster);
  err = cudaLaunchKernelEx(&config, kernel, p, capacity);
  return err != cudaSuccess ? err : cudaGetLastError();
}

// Probabilities of element type T (float32 is the one instantiated): sampling (mode kSample) or
// renormalization (kRenorm).
template <typename T = float>
cudaError_t SampleOrRenorm(const SamplingParams& p, cudaStream_t stream) {
  return LaunchFilterRows<ProbRow<T>>(p, stream);
}

// Logits of element type T (float, half, __nv_bfloat16): sampling from their softmax (kSample).
template <typename T>
cudaError_t SampleFromLogits(const SamplingParams& p, cudaStream_t stream) {
  return LaunchFilterRows<LogitWeightRow<T>>(p, stream);
}

// Logits of element type T: the top-k set kept, -inf elsewhere (kMaskLogits, top-k only).
template <typename T>
cudaError_t TopKMaskLogits(const SamplingParams& p, cudaStream_t stream) {
  return LaunchFilterRows<LogitValueRow<T>>(p, stream);
}

template <typename Unused = void>
cudaError_t ChainSpeculativeSampling(const SpeculativeParams& p, cudaStream_t stream) {
  if (p.batch_size == 0) return cudaSuccess;
  chain_speculative_kernel<Unused><<<p.batch_size, kSamplingThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sampling
}  // namespace flashinfer

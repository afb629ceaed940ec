// Sorting-free sampling from probabilities or logits with optional top-k / top-p / min-p filters,
// top-k / top-p renormalization, top-k masking of logits, and chain speculative sampling.
//
// One CTA per row. Every filter keeps the tokens whose 32-bit key is >= a threshold key; keys
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
// (the candidate buffer, up to kMaxCandidates), a second pass copies them there in index order
// and the finer digits, the kept mass and the draw all run on chip: two passes over the row. If
// not, each finer digit costs one more pass restricted to the threshold bin (one pass in all when
// that bin fits in the buffer), and the draw streams the row again (stopping where it lands).
//
// Masses are exact and independent of the order of the atomics: inside a first-digit bin every
// value has the same exponent, so a bin's mass is an integer number of units 2^(exponent - 150);
// 32-bit shared-memory atomics add the mantissa bits below the digit and the rare wrap-around is
// carried into a third counter. Bins are converted to double and summed in a fixed order.
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
// Results depend only on the inputs, the seed and the offset (every reduction has a fixed order).
#pragma once

#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

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
// length, fill a chunk's keys and weights given its extent, and may prefetch a chunk.
//
// The streaming loops read a chunk, then work on it (shared-memory atomics, CTA-wide scans with
// barriers) before the next read: with one CTA per SM that leaves the SM idle on memory latency
// once per chunk. Asking L2 for chunk c + kPrefetchChunks before reading chunk c keeps the next
// reads in flight during that work, without registers to hold them.
constexpr uint32_t kPrefetchChunks = 2;

// Fetches this thread's part of chunk c of an array of `size` elements into L2.
template <typename T>
__device__ __forceinline__ void prefetch_chunk_l2(const T* data, uint32_t c, uint32_t size) {
  const uint32_t first = c * kChunk + threadIdx.x * kElemsPerThread;
  if (first < size) asm volatile("prefetch.global.L2 [%0];" ::"l"(data + first));
}

// A row read from global memory.
template <class RowT>
struct RowStream {
  using Row = RowT;
  Row row;
  const typename Row::Elem* data;
  uint32_t size;
  __device__ __forceinline__ uint32_t length() const { return size; }
  __device__ __forceinline__ void prefetch(uint32_t c) const { prefetch_chunk_l2(data, c, size); }
  __device__ __forceinline__ void load(Chunk& ch) const {
    float x[kElemsPerThread];
    load_upto8_as_float(data + ch.first, ch.n, x);
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      if (i < ch.n) {
        row.convert(x[i], ch.key[i], ch.w[i]);
      } else {
        ch.key[i] = Row::kEmptyKey;
        ch.w[i] = 0.f;
      }
    }
  }
  __device__ __forceinline__ uint32_t index(const Chunk& ch, uint32_t i) const { return ch.first + i; }
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
  __device__ __forceinline__ void load(Chunk& ch) const {
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
  __device__ __forceinline__ void load(Chunk& ch) const {
    float q[kElemsPerThread], d[kElemsPerThread];
    load_upto8_as_float(target + ch.first, ch.n, q);
    if (draft != nullptr) load_upto8_as_float(draft + ch.first, ch.n, d);
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      if (draft == nullptr) d[i] = 0.f;
      ch.w[i] = fmaxf(sanitize(q[i]) - sanitize(d[i]), 0.f);
      ch.key[i] = weight_key(ch.w[i]);
    }
  }
  __device__ __forceinline__ uint32_t index(const Chunk& ch, uint32_t i) const { return ch.first + i; }
};

template <class Src>
__device__ __forceinline__ uint32_t num_chunks(const Src& src) { return (src.length() + kChunk - 1) / kChunk; }

// Reads chunk c of src (prefetching the chunks ahead of it). kFull: the caller knows that every
// element of the chunk lies inside the source (true of every chunk but the last), so that the
// compiler drops the per-element bounds checks of the load and of the work on the chunk.
template <bool kFull, class Src>
__device__ __forceinline__ void load_chunk(const Src& src, uint32_t c, Chunk& ch) {
  if (c == 0) {
#pragma unroll
    for (uint32_t ahead = 1; ahead < kPrefetchChunks; ++ahead) src.prefetch(ahead);
  }
  src.prefetch(c + kPrefetchChunks);
  ch.first = c * kChunk + threadIdx.x * kElemsPerThread;
  const uint32_t size = src.length();
  ch.n = kFull ? kElemsPerThread : ch.first < size ? min(kElemsPerThread, size - ch.first) : 0u;
  src.load(ch);
}

// f(chunk) over the chunks of src in order, with the full chunks and the last one compiled apart.
template <class Src, class F>
__device__ __forceinline__ void for_each_chunk(const Src& src, F&& f) {
  const uint32_t chunks = num_chunks(src);
  for (uint32_t c = 0; c + 1 < chunks; ++c) {
    Chunk ch;
    load_chunk<true>(src, c, ch);
    f(ch);
  }
  if (chunks > 0) {
    Chunk ch;
    load_chunk<false>(src, chunks - 1, ch);
    f(ch);
  }
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
    typename BlockScan<uint32_t>::TempStorage u32;
    typename BlockScan<double>::TempStorage f64;
    typename BlockScan<Cum>::TempStorage cum;
  } scan;
  uint32_t uint_partials[kSamplingThreads / 32];
  double double_partials[kSamplingThreads / 32];
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

// Per-bin count and mass of one digit. The mass of bin b is
//   (count * mantissa(lowest key of b) + carry * 2^32 + sum) * 2^(exponent - 150)
// where sum adds the mantissa bits below the digit.
struct Hist {
  uint32_t count[kBins], sum[kBins], carry[kBins];
};

// Where a radix step landed: its bin, and the count / mass strictly above the bin and inside it.
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

// Histogram of digit `level` over the elements of src whose higher digits equal `prefix`.
// Returns the largest key seen (used for the first digit: the row's maximum).
template <class Src>
__device__ __forceinline__ uint32_t build_histogram(const Src& src, int level, uint32_t prefix, Hist& h,
                                    ScanStorage& s) {
  using Row = typename Src::Row;
  __syncthreads();  // h may still be read by the previous step
  for (uint32_t b = threadIdx.x; b < kBins; b += kSamplingThreads) h.count[b] = h.sum[b] = h.carry[b] = 0;
  __syncthreads();
  const uint32_t shift = digit_shift(level), top = shift + digit_bits(level);
  const uint32_t mask = (1u << digit_bits(level)) - 1;
  // Mantissa bits below the digit (the key is the float's bits shifted left by one).
  const uint32_t low_mask = shift > 0 ? (1u << (shift - 1)) - 1 : 0u;
  uint32_t empties = 0, max_key = 0;
  for_each_chunk(src, [&](const Chunk& ch) {
    // A run of equal bins in one thread's consecutive elements is one update: sorted or flat rows
    // would otherwise send every lane of a warp to the same address. Runs end where the next
    // element is in another bin or not counted, so no update depends on an earlier one; the
    // wrap-around checks come after every update of the chunk is issued, so a thread's atomics
    // are in flight together instead of each waiting for the old value returned by the last.
    uint32_t bin[kElemsPerThread], run_sum[kElemsPerThread], old_sum[kElemsPerThread];
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
    uint32_t run_count = 0, sum = 0;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) {
      run_count += counted[i] ? 1u : 0u;
      if (Row::kHasMass) sum += counted[i] ? (ch.key[i] >> 1) & low_mask : 0u;
      const bool run_ends = counted[i] && (i + 1 == kElemsPerThread || !counted[i + 1] || bin[i + 1] != bin[i]);
      run_sum[i] = run_ends ? sum : 0u;
      if (run_ends) atomicAdd(&h.count[bin[i]], run_count);
      if (Row::kHasMass && run_sum[i] != 0) old_sum[i] = atomicAdd(&h.sum[bin[i]], run_sum[i]);
      if (run_ends) run_count = sum = 0;
    }
    if (Row::kHasMass) {
#pragma unroll
      for (uint32_t i = 0; i < kElemsPerThread; ++i)  // this update wrapped around
        if (run_sum[i] != 0 && old_sum[i] + run_sum[i] < old_sum[i]) atomicAdd(&h.carry[bin[i]], 1u);
    }
  });
  empties = block_all_reduce(empties, Sum{}, s.uint_partials);  // also orders the atomics
  max_key = block_all_reduce(max_key, Max{}, s.uint_partials);
  if (threadIdx.x == 0 && empties != 0) h.count[(Row::kEmptyKey >> shift) & mask] += empties;
  __syncthreads();
  return max_key;
}

template <bool kWithMass>
__device__ __forceinline__ Cum bin_cum(const Hist& h, uint32_t bin, uint32_t lowest_key) {
  if (!kWithMass) return {h.count[bin], 0.0};
  const uint32_t bits = lowest_key >> 1, exponent = bits >> 23;
  const uint64_t mantissa = (bits & 0x7FFFFFu) | (exponent != 0 ? 0x800000u : 0u);
  const uint64_t units = uint64_t(h.count[bin]) * mantissa + (uint64_t(h.carry[bin]) << 32) + h.sum[bin];
  return {h.count[bin], ldexp(double(units), int(max(exponent, 1u)) - 150)};
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
// from a histogram that they fit).
template <class Row>
__device__ __forceinline__ void collect(const RowStream<Row>& row, uint32_t lo, uint32_t hi, Candidates& c,
                        ScanStorage& s) {
  uint32_t stored = 0;
  for_each_chunk(row, [&](const Chunk& ch) {
    uint32_t mine = 0;
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) mine += i < ch.n && ch.key[i] >= lo && ch.key[i] <= hi ? 1u : 0u;
    uint32_t pos, total;
    __syncthreads();  // the scan storage, and the buffer on the first chunk, may be in use
    BlockScan<uint32_t>(s.scan.u32).ExclusiveSum(mine, pos, total);
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

// The finer digits of a threshold whose first digit is `first`.
template <class Src>
__device__ Threshold refine(const Src& src, const Step& first, const Goal& goal, RowStorage& s) {
  constexpr bool kWithMass = Src::Row::kHasMass;
  build_histogram(src, 1, first.bin, s.finer_digit, s.scan);
  const Step second = descend<kWithMass>(s.finer_digit, 1, first.bin, goal, first.above, s);
  const uint32_t prefix = (first.bin << digit_bits(1)) | second.bin;
  build_histogram(src, 2, prefix, s.finer_digit, s.scan);
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
  const uint32_t max_key = build_histogram(row, 0, 0u, s.first_digit, s.scan);
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
  sel.on_chip = first_digit_at_or_above<false>(s.first_digit, floor_bin, s.scan).count <= cand.capacity;
  if (sel.on_chip) collect(row, floor_bin << kFirstDigitShift, 0xFFFFFFFFu, cand, s.scan);

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
    load_chunk<false>(src, c, ch);
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

template <typename T>
__device__ float max_logit(const T* data, uint32_t size, ScanStorage& s) {
  using Values = LogitValueRow<T>;
  uint32_t m = 0;
  for_each_chunk(RowStream<Values>{Values{}, data, size}, [&](const Chunk& ch) {
#pragma unroll
    for (uint32_t i = 0; i < kElemsPerThread; ++i) m = max(m, ch.key[i]);
  });
  return Values::value_of_key(block_all_reduce(m, Max{}, s.uint_partials));
}

template <class Row>
__global__ void __launch_bounds__(kSamplingThreads)
    filter_rows_kernel(const SamplingParams p, const uint32_t capacity) {
  extern __shared__ __align__(16) uint8_t smem[];
  RowStorage& s = *reinterpret_cast<RowStorage*>(smem);
  uint32_t* buffer = reinterpret_cast<uint32_t*>(smem + sizeof(RowStorage));
  Candidates cand{buffer, buffer + capacity, capacity, 0};

  const uint32_t out_row = blockIdx.x;
  int64_t in_row = out_row;
  if (p.indices != nullptr)
    in_row = p.indices_int64 ? static_cast<const int64_t*>(p.indices)[out_row]
                             : static_cast<const int32_t*>(p.indices)[out_row];
  if (in_row < 0 || in_row >= int64_t(p.num_input_rows)) {  // uniform across the CTA
    if (p.mode == SamplingMode::kSample && threadIdx.x == 0) p.samples[out_row] = 0;
    return;
  }
  using Elem = typename Row::Elem;
  RowStream<Row> row{Row{}, static_cast<const Elem*>(p.input) + in_row * p.input_stride, p.vocab_size};
  if constexpr (Row::kNeedsMax) row.row.max_logit = max_logit(row.data, row.size, s.scan);
  const Selection sel = select_threshold(row, row_filters(p, out_row), cand, s);

  if constexpr (!Row::kHasMass) {  // top-k masking of logits
    Elem* out = static_cast<Elem*>(p.out) + int64_t(out_row) * p.out_stride;
    for_each_chunk(row, [&](const Chunk& ch) {
      float y[kElemsPerThread];
#pragma unroll
      for (uint32_t i = 0; i < kElemsPerThread; ++i)
        y[i] = ch.key[i] >= sel.threshold ? Row::value_of_key(ch.key[i]) : -INFINITY;
      store_upto8_from_float(out + ch.first, ch.n, y);
    });
  } else {
    const CandidateStream<Row> on_chip{cand};
    double kept = sel.kept_mass;
    if (kept < 0.0) kept = sel.on_chip ? kept_mass(on_chip, sel.threshold, s.scan) : kept_mass(row, sel.threshold, s.scan);
    if (p.mode == SamplingMode::kRenorm) {
      float* out = static_cast<float*>(p.out) + int64_t(out_row) * p.out_stride;
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
      const double target = uniform_open_closed(philox_first_word(p.seed, p.offset, out_row, 0)) * kept;
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

// Launches the row kernel with as large a candidate buffer as the device's shared memory allows.
template <class Row>
cudaError_t LaunchFilterRows(const SamplingParams& p, cudaStream_t stream) {
  if (p.batch_size == 0 || p.vocab_size == 0) return cudaSuccess;
  int device = 0, smem_limit = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  const size_t fixed = sizeof(RowStorage), per_candidate = 2 * sizeof(uint32_t);
  const size_t room = size_t(smem_limit) > fixed ? (size_t(smem_limit) - fixed) / per_candidate : 0;
  const uint32_t capacity = uint32_t(room < kMaxCandidates ? room : kMaxCandidates);
  const size_t smem = fixed + capacity * per_candidate;
  const auto kernel = filter_rows_kernel<Row>;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  kernel<<<p.batch_size, kSamplingThreads, smem, stream>>>(p, capacity);
  return cudaGetLastError();
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

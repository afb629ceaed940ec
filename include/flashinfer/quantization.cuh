// Bit packing (FlashInfer's flashinfer.quantization): packbits and segment_packbits, numpy.packbits
// semantics, used to pack boolean attention masks into the bit-packed custom-mask format.
//
// One thread per output byte: it reads the byte's eight elements (one vector load when they are
// whole and aligned, as they are everywhere but at segment edges of an unaligned segment) and
// writes one byte. Segmented packing finds a byte's segment by a binary search over the packed
// offsets, so any mix of segment lengths (empty ones included) keeps every thread busy.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "quantization_params.h"

namespace flashinfer {
namespace quantization {

constexpr uint32_t kPackThreads = 256;
constexpr int64_t kMaxPackBlocks = int64_t(1) << 20;  // larger outputs loop (grid stride)

// The eight elements of one output byte, loaded at once when aligned.
template <typename Word>
struct alignas(8 * sizeof(Word)) EightWords {
  Word w[8];
};

// The segment holding output byte `byte` (< num_bytes): the last s with new_indptr[s] <= byte.
// Empty segments (new_indptr[s] == new_indptr[s + 1]) are never the last such s.
__device__ __forceinline__ uint32_t find_segment(const PackbitsParams& p, int64_t byte) {
  uint32_t lo = 0, hi = p.batch_size;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (int64_t(p.new_indptr[mid]) <= byte) lo = mid;
    else hi = mid;
  }
  return lo;
}

template <typename Word>
__global__ void __launch_bounds__(kPackThreads) packbits_kernel(const PackbitsParams p) {
  const Word* x = static_cast<const Word*>(p.x);
  const bool little = p.bitorder == BitOrder::kLittle;
  for (int64_t byte = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; byte < p.num_bytes;
       byte += int64_t(gridDim.x) * blockDim.x) {
    int64_t begin = byte * 8, end = p.num_bits;  // this byte's elements: x[begin, begin + 8) within end
    if (p.indptr != nullptr) {
      const uint32_t s = find_segment(p, byte);
      begin = int64_t(p.indptr[s]) + (byte - p.new_indptr[s]) * 8;
      end = p.indptr[s + 1] < p.num_bits ? int64_t(p.indptr[s + 1]) : p.num_bits;
    }
    const int64_t left = end - begin;  // elements of this byte (8 but at a segment's end)
    const int count = left >= 8 ? 8 : left > 0 ? int(left) : 0;
    uint32_t bits = 0;
    if (count == 8 && reinterpret_cast<uintptr_t>(x + begin) % sizeof(EightWords<Word>) == 0) {
      const EightWords<Word> all = *reinterpret_cast<const EightWords<Word>*>(x + begin);
#pragma unroll
      for (int k = 0; k < 8; ++k) bits |= uint32_t(all.w[k] != 0) << (little ? k : 7 - k);
    } else {
      for (int k = 0; k < count; ++k) bits |= uint32_t(x[begin + k] != 0) << (little ? k : 7 - k);
    }
    p.out[byte] = uint8_t(bits);
  }
}

inline cudaError_t Packbits(const PackbitsParams& p, cudaStream_t stream) {
  if (p.num_bytes == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((p.num_bytes + kPackThreads - 1) / kPackThreads, kMaxPackBlocks);
  const dim3 grid(static_cast<uint32_t>(blocks));
  switch (p.element_bytes) {
    case 1: packbits_kernel<uint8_t><<<grid, kPackThreads, 0, stream>>>(p); break;
    case 2: packbits_kernel<uint16_t><<<grid, kPackThreads, 0, stream>>>(p); break;
    case 4: packbits_kernel<uint32_t><<<grid, kPackThreads, 0, stream>>>(p); break;
    case 8: packbits_kernel<uint64_t><<<grid, kPackThreads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace quantization
}  // namespace flashinfer

// Parameters of the bit-packing kernels (quantization.cuh), in a plain C++ header so that host code
// compiled without nvcc can fill them directly.
#pragma once

#include <cstdint>

namespace flashinfer {
namespace quantization {

// Where the first of eight elements lands in its byte, as numpy.packbits names it: "big" puts it
// in the most significant bit, "little" in the least significant one.
enum class BitOrder : int32_t { kBig = 0, kLittle = 1 };

// Packs x (num_bits elements of element_bytes bytes each; any nonzero element is a 1) into
// num_bytes bytes of out. With segments (indptr not null), segment s = x[indptr[s], indptr[s + 1])
// is packed on its own into out[new_indptr[s], new_indptr[s + 1]), its last byte padded with
// zeros; without, x is one segment. indptr and new_indptr are device arrays [batch_size + 1],
// non-decreasing, with new_indptr[s + 1] - new_indptr[s] = ceil((indptr[s + 1] - indptr[s]) / 8),
// new_indptr[0] = 0 and new_indptr[batch_size] = num_bytes.
struct PackbitsParams {
  const void* x;
  uint32_t element_bytes;  // 1, 2, 4 or 8
  int64_t num_bits;
  uint8_t* out;
  int64_t num_bytes;
  const int32_t* indptr;      // or nullptr: one segment
  const int32_t* new_indptr;  // or nullptr: one segment
  uint32_t batch_size;
  BitOrder bitorder;
};

}  // namespace quantization
}  // namespace flashinfer

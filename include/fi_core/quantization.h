// fi_core host API: bit packing (FlashInfer's flashinfer.quantization), numpy.packbits semantics.
// Custom attention masks travel bit-packed (little bit order); these build them on the GPU.
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// Where the first of eight elements lands in its byte: the most (big) or least (little)
// significant bit, as numpy.packbits' bitorder.
enum class BitOrder : int32_t { kBig = 0, kLittle = 1 };

// Elements of x: bool, int8, uint8, int16, int32 or int64; any nonzero element packs as a 1.
// x is a contiguous 1-D CUDA array [num_bits].

// out[i] holds x[8 i], ..., x[8 i + 7]; the last byte is padded with zeros.
struct PackbitsArgs {
  TensorView x;    // [num_bits]
  TensorView out;  // uint8 [(num_bits + 7) / 8], contiguous, on x's device
  BitOrder bitorder = BitOrder::kBig;
};
Status packbits(const PackbitsArgs& args, cudaStream_t stream);

// Segmented packing: segment s = x[indptr[s], indptr[s + 1]) is packed on its own (its last byte
// padded with zeros) into out[new_indptr[s], new_indptr[s + 1]), where new_indptr[0] = 0 and
// new_indptr[s + 1] - new_indptr[s] = (indptr[s + 1] - indptr[s] + 7) / 8. The offsets size the
// output, so indptr is read on the host: host int32 or int64 [batch_size + 1], non-decreasing, with
// 0 <= indptr[0] and indptr[batch_size] <= num_bits < 2^31 (int32 offsets, as in FlashInfer).

// The host half: checks x and indptr and writes new_indptr (host int32 [batch_size + 1]), whose
// last entry is the number of bytes out must have.
Status plan_segment_packbits(const TensorView& x, const TensorView& indptr, const TensorView& new_indptr);

struct SegmentPackbitsArgs {
  TensorView x;       // [num_bits]
  TensorView indptr;  // host int32 or int64 [batch_size + 1]
  // Device int32 [2, batch_size + 1], contiguous, on x's device: receives indptr (row 0) and
  // new_indptr (row 1) for the kernel, by a copy ordered on `stream` (from pageable memory, so the
  // call may wait for the stream). Keep it alive until the kernel has run; row 1 is then the
  // packed offsets on the device.
  TensorView segments;
  TensorView out;  // uint8 [new_indptr[batch_size]], contiguous, on x's device
  BitOrder bitorder = BitOrder::kBig;
};
Status segment_packbits(const SegmentPackbitsArgs& args, cudaStream_t stream);

}  // namespace fi_core

// Host entry points of bit packing: validation, the packed offsets of segments (on the host, since
// they size the output), then launch.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "quantization_problem.h"

namespace fi_core {
namespace {

using flashinfer::quantization::PackbitsParams;

constexpr int64_t kMaxSegmentedBits = std::numeric_limits<int32_t>::max();  // int32 offsets

std::string at(const char* name, int64_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

// x: a contiguous 1-D CUDA array of an element type the kernel reads (nonzero = 1).
Checker& check_x(Checker& c, const TensorView& x) {
  c.present(x, "x").on_cuda(x, "x");
  c.dtype_in(x, "x", {DType::kBool, DType::kInt8, DType::kUInt8, DType::kInt16, DType::kInt32, DType::kInt64});
  return c.ndim(x, "x", 1, "[num_bits]").last_dim_contiguous(x, "x");
}

Checker& check_bitorder(Checker& c, BitOrder bitorder) {
  return c.require(bitorder == BitOrder::kBig || bitorder == BitOrder::kLittle, [&] {
    return "bitorder: expected big (0) or little (1), got " + std::to_string(int(bitorder));
  });
}

// out: uint8 [num_bytes], contiguous, on x's device.
Checker& check_out(Checker& c, const TensorView& out, int64_t num_bytes, const char* dims, const TensorView& x) {
  c.present(out, "out").on_cuda(out, "out").dtype_in(out, "out", {DType::kUInt8});
  c.shape(out, "out", {num_bytes}, dims).last_dim_contiguous(out, "out");
  return c.same_device(out, "out", x, "x");
}

int64_t indptr_value(const TensorView& indptr, int64_t i) {
  return indptr.dtype == DType::kInt64 ? static_cast<const int64_t*>(indptr.data)[i]
                                       : static_cast<const int32_t*>(indptr.data)[i];
}

// x and the host indptr; on success `new_indptr` holds the packed offsets [batch_size + 1].
Checker& check_segments(Checker& c, const TensorView& x, const TensorView& indptr, std::vector<int32_t>* new_indptr) {
  check_x(c, x);
  c.present(indptr, "indptr").on_host(indptr, "indptr").dtype_in(indptr, "indptr", {DType::kInt32, DType::kInt64});
  c.ndim(indptr, "indptr", 1, "[batch_size + 1]").last_dim_contiguous(indptr, "indptr");
  if (!c.ok()) return c;
  const int64_t num_bits = x.shape[0], entries = indptr.shape[0];
  c.require(num_bits <= kMaxSegmentedBits, [&] {
    return "x: expected fewer than 2^31 elements (segment offsets are int32, as in FlashInfer), got " +
           std::to_string(num_bits);
  });
  c.require(entries >= 1 && entries <= kMaxSegmentedBits, [&] {
    return "indptr: expected shape [batch_size + 1] with 1 to 2^31 - 1 entries, got " + shape_string(indptr);
  });
  if (!c.ok()) return c;
  const int64_t first = indptr_value(indptr, 0);
  c.require(first >= 0, [&] { return "indptr: expected indptr[0] >= 0, got " + std::to_string(first); });
  new_indptr->assign(size_t(entries), 0);
  for (int64_t s = 0; s + 1 < entries && c.ok(); ++s) {
    const int64_t begin = indptr_value(indptr, s), end = indptr_value(indptr, s + 1);
    c.require(end >= begin, [&] {
      return "indptr: expected non-decreasing values, got " + at("indptr", s + 1) + " = " + std::to_string(end) +
             " < " + at("indptr", s) + " = " + std::to_string(begin);
    });
    c.require(end <= num_bits, [&] {
      return "indptr: expected values at most len(x) = " + std::to_string(num_bits) + ", got " +
             at("indptr", s + 1) + " = " + std::to_string(end);
    });
    (*new_indptr)[s + 1] = (*new_indptr)[s] + int32_t((end - begin + 7) / 8);
  }
  return c;
}

PackbitsParams packbits_params(const TensorView& x, const TensorView& out, BitOrder bitorder) {
  PackbitsParams p{};
  p.x = x.data;
  p.element_bytes = uint32_t(dtype_size(x.dtype));
  p.num_bits = x.shape[0];
  p.out = static_cast<uint8_t*>(out.data);
  p.num_bytes = out.shape[0];
  p.bitorder = flashinfer::quantization::BitOrder(int32_t(bitorder));
  return p;
}

}  // namespace

Status packbits(const PackbitsArgs& args, cudaStream_t stream) {
  Checker c;
  check_x(c, args.x);
  check_bitorder(c, args.bitorder);
  if (!c.ok()) return c.status();
  const int64_t num_bytes = (args.x.shape[0] + 7) / 8;
  check_out(c, args.out, num_bytes, "[(num_bits + 7) / 8]", args.x);
  if (!c.ok()) return c.status();
  if (num_bytes == 0) return Status::Ok();
  detail::DeviceGuard guard(args.x.device);
  return detail::cuda_status(detail::run_packbits_kernel(packbits_params(args.x, args.out, args.bitorder), stream),
                             "packbits");
}

Status plan_segment_packbits(const TensorView& x, const TensorView& indptr, const TensorView& new_indptr) {
  Checker c;
  std::vector<int32_t> offsets;
  check_segments(c, x, indptr, &offsets);
  if (!c.ok()) return c.status();
  c.present(new_indptr, "new_indptr").on_host(new_indptr, "new_indptr");
  c.dtype_in(new_indptr, "new_indptr", {DType::kInt32});
  c.shape(new_indptr, "new_indptr", {indptr.shape[0]}, "[batch_size + 1]").last_dim_contiguous(new_indptr, "new_indptr");
  if (!c.ok()) return c.status();
  std::copy(offsets.begin(), offsets.end(), static_cast<int32_t*>(new_indptr.data));
  return Status::Ok();
}

Status segment_packbits(const SegmentPackbitsArgs& args, cudaStream_t stream) {
  Checker c;
  std::vector<int32_t> offsets;
  check_segments(c, args.x, args.indptr, &offsets);
  check_bitorder(c, args.bitorder);
  if (!c.ok()) return c.status();
  const int64_t entries = args.indptr.shape[0];
  const TensorView& segments = args.segments;
  c.present(segments, "segments").on_cuda(segments, "segments").dtype_in(segments, "segments", {DType::kInt32});
  c.shape(segments, "segments", {2, entries}, "[2, batch_size + 1]").contiguous(segments, "segments");
  c.same_device(segments, "segments", args.x, "x");
  check_out(c, args.out, offsets.back(), "[new_indptr[batch_size]]", args.x);
  if (!c.ok()) return c.status();

  // The kernel's table: indptr (row 0; it fits int32, being at most len(x)) and new_indptr (row 1).
  std::vector<int32_t> table(size_t(2 * entries));
  for (int64_t s = 0; s < entries; ++s) {
    table[size_t(s)] = int32_t(indptr_value(args.indptr, s));
    table[size_t(entries + s)] = offsets[size_t(s)];
  }
  detail::DeviceGuard guard(args.x.device);
  // From pageable memory: the copy has taken the table by the time it returns.
  cudaError_t err = cudaMemcpyAsync(segments.data, table.data(), table.size() * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) return detail::cuda_status(err, "segment_packbits: copying the segment offsets");
  if (offsets.back() == 0) return Status::Ok();
  PackbitsParams p = packbits_params(args.x, args.out, args.bitorder);
  p.indptr = static_cast<const int32_t*>(segments.data);
  p.new_indptr = p.indptr + entries;
  p.batch_size = uint32_t(entries - 1);
  return detail::cuda_status(detail::run_packbits_kernel(p, stream), "segment_packbits");
}

}  // namespace fi_core

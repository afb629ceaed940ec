// Host entry points of the state-merging operators: validation, then dispatch over the v dtype.
#include <cstdint>
#include <string>
#include <vector>

#include "cascade_problem.h"
#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"

namespace fi_core {
namespace {

using flashinfer::RowStrides;
using flashinfer::attention::MergeStateParams;

constexpr const char* kVDims = "[seq_len, num_heads, head_dim]";
constexpr const char* kSDims = "[seq_len, num_heads]";
constexpr int64_t kMaxPairs = INT32_MAX;  // (row, head) pairs: 32-bit in the kernels

// `t` has `shape` and `dtype` on the device of `ref`; arrays of v `rows` also a contiguous
// head_dim (s arrays, read one value at a time, may have any strides).
void check_array(Checker& c, const TensorView& t, const char* name, DType dtype,
                 const std::vector<int64_t>& shape, const char* dims, bool rows, const TensorView& ref,
                 const char* ref_name) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, {dtype}).shape(t, name, shape, dims);
  if (rows) c.last_dim_contiguous(t, name);
  c.same_device(t, name, ref, ref_name);
}

// The first v array of a call: a supported dtype, `ndim` dimensions, a contiguous head_dim.
void check_first_v(Checker& c, const TensorView& v, const char* name, int ndim, const char* dims) {
  c.present(v, name).on_cuda(v, name).dtype_in(v, name, {DType::kFloat16, DType::kBFloat16, DType::kFloat32});
  c.ndim(v, name, ndim, dims).last_dim_contiguous(v, name);
}

// A state (v, s) and the names its arrays go by in the caller's API.
struct NamedState {
  const TensorView& v;
  const char* v_name;
  const TensorView& s;
  const char* s_name;
};

// `st` is shaped like the first state `first` (v of its dtype) and on its device.
void check_like(Checker& c, const NamedState& st, const NamedState& first) {
  const std::vector<int64_t> v_shape(first.v.shape, first.v.shape + 3);
  check_array(c, st.v, st.v_name, first.v.dtype, v_shape, kVDims, true, first.v, first.v_name);
  check_array(c, st.s, st.s_name, DType::kFloat32, {v_shape[0], v_shape[1]}, kSDims, false, first.v,
              first.v_name);
}

RowStrides row_strides(const TensorView& t) { return {t.strides[0], t.strides[1]}; }

// out: nullptr to write into `a` (in place). mask: optional [seq_len] flags of the rows to merge.
Status merge_two(NamedState a, NamedState b, const NamedState* out, const TensorView& mask,
                 cudaStream_t stream, const char* what) {
  Checker c;
  check_first_v(c, a.v, a.v_name, 3, kVDims);
  if (!c.ok()) return c.status();
  const int64_t seq_len = a.v.shape[0], heads = a.v.shape[1], head_dim = a.v.shape[2];
  c.require(head_dim >= 1 && head_dim <= INT32_MAX, [&] {
    return std::string(a.v_name) + ": expected a head_dim in [1, 2^31), got shape " + shape_string(a.v);
  });
  c.require(seq_len * heads <= kMaxPairs, [&] {
    return std::string(a.v_name) + ": expected seq_len * num_heads below 2^31, got shape " + shape_string(a.v);
  });
  check_array(c, a.s, a.s_name, DType::kFloat32, {seq_len, heads}, kSDims, false, a.v, a.v_name);
  check_like(c, b, a);
  if (out != nullptr) check_like(c, *out, a);
  const NamedState& o = out != nullptr ? *out : a;
  if (mask.present()) {
    c.on_cuda(mask, "mask").dtype_in(mask, "mask", {DType::kBool, DType::kUInt8});
    c.shape(mask, "mask", {seq_len}, "[seq_len]").same_device(mask, "mask", a.v, a.v_name);
  }
  if (!c.ok()) return c.status();

  MergeStateParams p{};
  p.v_a = a.v.data;
  p.s_a = static_cast<const float*>(a.s.data);
  p.v_b = b.v.data;
  p.s_b = static_cast<const float*>(b.s.data);
  p.v_out = o.v.data;
  p.s_out = static_cast<float*>(o.s.data);
  p.mask = mask.present() ? static_cast<const uint8_t*>(mask.data) : nullptr;
  p.mask_stride = mask.present() ? mask.strides[0] : 0;
  p.v_a_strides = row_strides(a.v);
  p.s_a_strides = row_strides(a.s);
  p.v_b_strides = row_strides(b.v);
  p.s_b_strides = row_strides(b.s);
  p.v_out_strides = row_strides(o.v);
  p.s_out_strides = row_strides(o.s);
  p.num_pairs = uint32_t(seq_len * heads);
  p.num_heads = uint32_t(heads);
  p.head_dim = uint32_t(head_dim);
  if (p.num_pairs == 0) return Status::Ok();
  detail::DeviceGuard guard(a.v.device);
  const auto launch = [&](auto dtype) {
    return detail::run_merge_state_kernel<decltype(dtype)::value>(p, stream);
  };
  return detail::cuda_status(detail::dispatch_float_dtype(a.v.dtype, launch), what);
}

// MergeStates reads and writes v rows as whole 16-byte pieces of 8 elements, one per thread of a
// 128-thread CTA, in power-of-two groups.
bool merge_states_head_dim(int64_t head_dim) {
  return head_dim >= 8 && head_dim <= 1024 && head_dim % 8 == 0 && ((head_dim / 8) & (head_dim / 8 - 1)) == 0;
}

}  // namespace

Status merge_state(const MergeStateArgs& args, cudaStream_t stream) {
  const NamedState out{args.out, "out", args.lse, "lse"};
  return merge_two({args.v_a, "v_a", args.s_a, "s_a"}, {args.v_b, "v_b", args.s_b, "s_b"}, &out,
                   TensorView{}, stream, "merge_state");
}

Status merge_state_in_place(const MergeStateInPlaceArgs& args, cudaStream_t stream) {
  return merge_two({args.v, "v", args.s, "s"}, {args.v_other, "v_other", args.s_other, "s_other"}, nullptr,
                   args.mask, stream, "merge_state_in_place");
}

Status merge_states(const MergeStatesArgs& args, cudaStream_t stream) {
  Checker c;
  const TensorView& v = args.v;
  check_first_v(c, v, "v", 4, "[seq_len, num_states, num_heads, head_dim]");
  if (!c.ok()) return c.status();
  const int64_t seq_len = v.shape[0], states = v.shape[1], heads = v.shape[2], head_dim = v.shape[3];
  c.require(merge_states_head_dim(head_dim), [&] {
    return "v: expected head_dim 8 x a power of two up to 1024 (8, 16, 32, 64, 128, 256, 512 or 1024), got " +
           std::to_string(head_dim);
  });
  c.rows_aligned(v, "v", 16);
  c.require(seq_len * heads <= kMaxPairs && states <= INT32_MAX, [&] {
    return "v: expected seq_len * num_heads and num_states below 2^31, got shape " + shape_string(v);
  });
  check_array(c, args.s, "s", DType::kFloat32, {seq_len, states, heads}, "[seq_len, num_states, num_heads]", false, v,
              "v");
  check_array(c, args.out, "out", v.dtype, {seq_len, heads, head_dim}, kVDims, true, v, "v");
  c.rows_aligned(args.out, "out", 16);
  check_array(c, args.lse, "lse", DType::kFloat32, {seq_len, heads}, kSDims, false, v, "v");
  if (!c.ok()) return c.status();

  detail::MergeStatesProblem p{};
  p.v = v.data;
  p.s = static_cast<const float*>(args.s.data);
  p.out = args.out.data;
  p.lse = static_cast<float*>(args.lse.data);
  p.num_rows = uint32_t(seq_len);
  p.num_states = uint32_t(states);
  p.num_heads = uint32_t(heads);
  p.head_dim = uint32_t(head_dim);
  p.v_stride_row = v.strides[0];
  p.v_stride_state = v.strides[1];
  p.v_stride_head = v.strides[2];
  p.s_stride_row = args.s.strides[0];
  p.s_stride_state = args.s.strides[1];
  p.s_stride_head = args.s.strides[2];
  p.out_stride_row = args.out.strides[0];
  p.out_stride_head = args.out.strides[1];
  p.lse_stride_row = args.lse.strides[0];
  p.lse_stride_head = args.lse.strides[1];
  if (seq_len * heads == 0) return Status::Ok();
  detail::DeviceGuard guard(v.device);
  const auto launch = [&](auto dtype) {
    return detail::run_merge_states_kernel<decltype(dtype)::value>(p, stream);
  };
  return detail::cuda_status(detail::dispatch_float_dtype(v.dtype, launch), "merge_states");
}

}  // namespace fi_core

// Host entry point of the gated activations (silu / gelu / gelu_tanh and mul): validation, then
// dispatch over dtypes.
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "llm_ops_problem.h"

namespace fi_core {
namespace {

using detail::ActAndMulProblem;

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kSilu: return "silu_and_mul";
    case Activation::kGelu: return "gelu_and_mul";
    default: return "gelu_tanh_and_mul";
  }
}

Status make_problem(const ActAndMulArgs& a, ActAndMulProblem* pr) {
  Checker c;
  c.present(a.input, "input").on_cuda(a.input, "input");
  c.dtype_in(a.input, "input", {DType::kFloat16, DType::kBFloat16, DType::kFloat32});
  c.last_dim_contiguous(a.input, "input");
  if (!c.ok()) return c.status();
  const int64_t two_d = a.input.shape[a.input.ndim - 1];
  c.require(two_d % 2 == 0, [&] {
    return "input: expected an even last dimension [..., 2 * d], got " + std::to_string(two_d);
  });
  std::vector<int64_t> out_shape(a.input.shape, a.input.shape + a.input.ndim);
  out_shape.back() = two_d / 2;
  c.present(a.out, "out").on_cuda(a.out, "out").dtype_in(a.out, "out", {a.input.dtype});
  c.shape(a.out, "out", out_shape, "[..., d]").last_dim_contiguous(a.out, "out");
  c.same_device(a.out, "out", a.input, "input");
  c.require(a.activation == Activation::kSilu || a.activation == Activation::kGelu ||
                a.activation == Activation::kGeluTanh,
            [&] {
              return "activation: expected silu (0), gelu (1) or gelu_tanh (2), got " +
                     std::to_string(int(a.activation));
            });
  c.require(two_d < INT32_MAX, [&] {
    return "input: expected a last dimension below 2^31, got " + std::to_string(two_d);
  });
  RowGroups rows;
  c.row_groups({&a.input, &a.out}, "input, out", &rows);
  c.require(rows.num_rows <= INT32_MAX, [&] {
    return "input: expected fewer than 2^31 rows, got " + std::to_string(rows.num_rows);
  });
  if (!c.ok()) return c.status();

  pr->input = a.input.data;
  pr->out = a.out.data;
  pr->input_strides = {rows.outer_stride[0], rows.inner_stride[0]};
  pr->out_strides = {rows.outer_stride[1], rows.inner_stride[1]};
  pr->num_rows = uint32_t(rows.num_rows);
  pr->inner_rows = uint32_t(rows.inner_rows);
  pr->d = uint32_t(two_d / 2);
  pr->activation = a.activation;
  return Status::Ok();
}

}  // namespace

Status act_and_mul(const ActAndMulArgs& args, cudaStream_t stream) {
  ActAndMulProblem problem{};
  Status st = make_problem(args, &problem);
  if (!st.ok()) return st;
  detail::DeviceGuard guard(args.input.device);
  const auto launch = [&](auto dtype) {
    return detail::run_act_and_mul_kernel<decltype(dtype)::value>(problem, stream);
  };
  return detail::cuda_status(detail::dispatch_float_dtype(args.input.dtype, launch), activation_name(args.activation));
}

}  // namespace fi_core

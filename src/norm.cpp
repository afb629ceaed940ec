// Host entry points of RMSNorm and fused add + RMSNorm: validation, then dispatch over dtypes.
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "llm_ops_problem.h"

namespace fi_core {
namespace {

using detail::NormProblem;
using detail::RowStrides;

constexpr const char* kRowDims = "[batch_size, hidden_size] or [batch_size, num_heads, hidden_size]";
constexpr int64_t kMaxRows = INT32_MAX;  // one CTA row per norm row

std::vector<int64_t> shape_of(const TensorView& t) { return {t.shape, t.shape + t.ndim}; }

// `t` is an array of rows shaped and typed like `input` on its device.
void check_like_input(Checker& c, const TensorView& t, const char* name, const TensorView& input) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, {input.dtype});
  c.shape(t, name, shape_of(input), kRowDims).last_dim_contiguous(t, name);
  c.same_device(t, name, input, "input");
}

// residual: nullptr for plain RMSNorm. out: the array written with the normalized rows.
Status make_problem(const TensorView& input, const TensorView* residual, const TensorView& weight,
                    const TensorView& out, float eps, bool gemma, NormProblem* pr) {
  Checker c;
  c.present(input, "input").on_cuda(input, "input");
  c.dtype_in(input, "input", {DType::kFloat16, DType::kBFloat16, DType::kFloat32});
  c.require(input.ndim == 2 || input.ndim == 3, [&] {
    return "input: expected 2 dimensions [batch_size, hidden_size] or 3 [batch_size, num_heads, "
           "hidden_size], got " + std::to_string(input.ndim) + " with shape " + shape_string(input);
  });
  c.last_dim_contiguous(input, "input");
  if (!c.ok()) return c.status();
  const int64_t hidden = input.shape[input.ndim - 1];

  c.present(weight, "weight").on_cuda(weight, "weight").dtype_in(weight, "weight", {input.dtype});
  c.shape(weight, "weight", {hidden}, "[hidden_size]").last_dim_contiguous(weight, "weight");
  c.same_device(weight, "weight", input, "input");
  if (residual != nullptr) check_like_input(c, *residual, "residual", input);
  if (&out != &input) check_like_input(c, out, "out", input);
  c.finite(eps, "eps", eps >= 0.f, "a finite number >= 0");
  c.require(hidden < INT32_MAX, [&] {
    return "input: expected hidden_size below 2^31, got " + std::to_string(hidden);
  });
  RowGroups rows;
  if (residual != nullptr) c.row_groups({&input, residual}, "input, residual", &rows);
  else c.row_groups({&input, &out}, "input, out", &rows);
  c.require(rows.num_rows <= kMaxRows, [&] {
    return "input: expected fewer than 2^31 rows, got " + std::to_string(rows.num_rows);
  });
  if (!c.ok()) return c.status();

  pr->input = input.data;
  pr->residual = residual != nullptr ? residual->data : nullptr;
  pr->weight = weight.data;
  pr->out = out.data;
  pr->input_strides = {rows.outer_stride[0], rows.inner_stride[0]};
  // Fused: out is input itself; the second array of the row groups is the residual.
  pr->residual_strides = residual != nullptr ? RowStrides{rows.outer_stride[1], rows.inner_stride[1]}
                                             : RowStrides{};
  pr->out_strides = residual != nullptr ? pr->input_strides
                                        : RowStrides{rows.outer_stride[1], rows.inner_stride[1]};
  pr->num_rows = uint32_t(rows.num_rows);
  pr->inner_rows = uint32_t(rows.inner_rows);
  pr->hidden = uint32_t(hidden);
  pr->eps = eps;
  pr->weight_offset = gemma ? 1.f : 0.f;
  return Status::Ok();
}

Status run(const NormProblem& problem, const TensorView& input, cudaStream_t stream, const char* what) {
  detail::DeviceGuard guard(input.device);
  const auto launch = [&](auto dtype) {
    return detail::run_rmsnorm_kernel<decltype(dtype)::value>(problem, stream);
  };
  return detail::cuda_status(detail::dispatch_float_dtype(input.dtype, launch), what);
}

}  // namespace

Status rmsnorm(const RMSNormArgs& args, cudaStream_t stream) {
  NormProblem problem{};
  Status st = make_problem(args.input, nullptr, args.weight, args.out, args.eps, args.gemma, &problem);
  if (!st.ok()) return st;
  return run(problem, args.input, stream, args.gemma ? "gemma_rmsnorm" : "rmsnorm");
}

Status fused_add_rmsnorm(const FusedAddRMSNormArgs& args, cudaStream_t stream) {
  NormProblem problem{};
  Status st = make_problem(args.input, &args.residual, args.weight, args.input, args.eps, args.gemma,
                           &problem);
  if (!st.ok()) return st;
  return run(problem, args.input, stream,
             args.gemma ? "gemma_fused_add_rmsnorm" : "fused_add_rmsnorm");
}

}  // namespace fi_core

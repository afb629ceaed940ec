// Host entry points of single-request decode: validation, then dispatch to an instantiation.
#include <cmath>
#include <cstdint>
#include <limits>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "single_decode_problem.h"

namespace fi_core {
namespace {

using detail::SingleDecodeProblem;

Status make_problem(const SingleDecodeArgs& a, SingleDecodeProblem* pr) {
  Checker c;
  c.present(a.q, "q").on_cuda(a.q, "q").dtype_in(a.q, "q", {DType::kFloat16, DType::kBFloat16});
  c.ndim(a.q, "q", 2, "[num_qo_heads, head_dim]").last_dim_contiguous(a.q, "q");
  c.request_kv(a.k, a.v, a.q, a.kv_layout);
  if (!c.ok()) return c.status();
  const bool nhd = a.kv_layout == KVLayout::kNHD;
  const char* kv_dims = nhd ? "[kv_len, num_kv_heads, head_dim]" : "[num_kv_heads, kv_len, head_dim]";

  const int64_t num_qo_heads = a.q.shape[0], head_dim = a.q.shape[1];
  const int n_axis = nhd ? 0 : 1, h_axis = nhd ? 1 : 0;
  const int64_t kv_len = a.k.shape[n_axis], num_kv_heads = a.k.shape[h_axis];
  std::vector<int64_t> kv_shape = {a.k.shape[0], a.k.shape[1], head_dim};
  c.shape(a.k, "k", kv_shape, kv_dims).shape(a.v, "v", kv_shape, kv_dims);
  c.require(detail::head_dim_in_build(int(head_dim)), [&] {
    return "head_dim: " + std::to_string(head_dim) + " (q.shape[1]) is not in this build; it has " +
           detail::head_dims_in_build();
  });
  c.require(num_kv_heads > 0 && num_qo_heads % num_kv_heads == 0, [&] {
    return "q: expected num_qo_heads (q.shape[0] = " + std::to_string(num_qo_heads) +
           ") to be a positive multiple of num_kv_heads (" + std::to_string(num_kv_heads) + ")";
  });
  c.require(kv_len < std::numeric_limits<int32_t>::max(), [&] {
    return "k: expected kv_len below 2^31, got " + std::to_string(kv_len);
  });

  c.present(a.out, "out").on_cuda(a.out, "out").dtype_in(a.out, "out", {a.q.dtype});
  c.shape(a.out, "out", {num_qo_heads, head_dim}, "[num_qo_heads, head_dim]");
  c.last_dim_contiguous(a.out, "out").same_device(a.out, "out", a.q, "q");
  if (a.lse.present()) {
    c.on_cuda(a.lse, "lse").dtype_in(a.lse, "lse", {DType::kFloat32});
    c.shape(a.lse, "lse", {num_qo_heads}, "[num_qo_heads]").last_dim_contiguous(a.lse, "lse");
    c.same_device(a.lse, "lse", a.q, "q");
  }
  // Each lane moves 8 elements at once.
  c.rows_aligned(a.q, "q", 16).rows_aligned(a.out, "out", 16);
  c.rows_aligned(a.k, "k", int(8 * dtype_size(a.k.dtype))).rows_aligned(a.v, "v", int(8 * dtype_size(a.v.dtype)));

  c.attention_options(a.pos_encoding_mode, a.window_left, a.logits_soft_cap, a.sm_scale, a.rope_scale,
                      a.rope_theta);
  for (auto [value, name] : {std::pair{a.q_scale, "q_scale"}, {a.k_scale, "k_scale"}, {a.v_scale, "v_scale"}})
    c.require(std::isfinite(value), [&] { return std::string(name) + ": expected a finite number, got " + std::to_string(value); });
  if (!c.ok()) return c.status();

  pr->q = a.q.data;
  pr->k = a.k.data;
  pr->v = a.v.data;
  pr->out = a.out.data;
  pr->lse = a.lse.present() ? static_cast<float*>(a.lse.data) : nullptr;
  pr->workspace = a.workspace.present() ? a.workspace.data : nullptr;
  pr->workspace_bytes = a.workspace.present() ? size_t(a.workspace.numel()) * dtype_size(a.workspace.dtype) : 0;
  pr->q_stride_h = a.q.strides[0];
  pr->o_stride_h = a.out.strides[0];
  pr->k_stride_n = a.k.strides[n_axis];
  pr->k_stride_h = a.k.strides[h_axis];
  pr->v_stride_n = a.v.strides[n_axis];
  pr->v_stride_h = a.v.strides[h_axis];
  pr->kv_len = uint32_t(kv_len);
  pr->num_qo_heads = uint32_t(num_qo_heads);
  pr->num_kv_heads = uint32_t(num_kv_heads);
  pr->window_left = a.window_left;
  pr->pos_encoding_mode = a.pos_encoding_mode;
  const float sm_scale = a.sm_scale > 0.f ? a.sm_scale : 1.f / std::sqrt(float(head_dim));
  pr->sm_scale = sm_scale * a.q_scale * a.k_scale;
  pr->logits_soft_cap = a.logits_soft_cap;
  pr->rope_scale = a.rope_scale;
  pr->rope_theta = a.rope_theta;
  pr->v_scale = a.v_scale;
  pr->use_tensor_cores = a.use_tensor_cores;
  pr->device = a.q.device;
  return Status::Ok();
}

struct PlanOp {
  const SingleDecodeProblem& problem;
  SingleDecodePlanInfo* plan;
  template <int D, DType Q, DType KV>
  cudaError_t call() const {
    return detail::plan_single_decode_kernel<D, Q, KV>(problem, plan);
  }
};

struct RunOp {
  const SingleDecodeProblem& problem;
  cudaStream_t stream;
  template <int D, DType Q, DType KV>
  cudaError_t call() const {
    return detail::run_single_decode_kernel<D, Q, KV>(problem, stream);
  }
};

}  // namespace

Status plan_single_decode(const SingleDecodeArgs& args, SingleDecodePlanInfo* plan) {
  SingleDecodeProblem problem{};
  Status st = make_problem(args, &problem);
  if (!st.ok()) return st;
  detail::DeviceGuard guard(problem.device);
  return detail::cuda_status(detail::dispatch_attention(int(args.q.shape[1]), args.q.dtype, args.k.dtype,
                                                        PlanOp{problem, plan}),
                             "single_decode plan");
}

Status single_decode(const SingleDecodeArgs& args, cudaStream_t stream) {
  SingleDecodeProblem problem{};
  Status st = make_problem(args, &problem);
  if (!st.ok()) return st;
  detail::DeviceGuard guard(problem.device);
  SingleDecodePlanInfo plan;
  st = detail::cuda_status(detail::dispatch_attention(int(args.q.shape[1]), args.q.dtype,
                                                      args.k.dtype, PlanOp{problem, &plan}),
                           "single_decode plan");
  if (!st.ok()) return st;
  if (plan.workspace_bytes > problem.workspace_bytes) {
    return Status{StatusCode::kValueError,
                  "workspace: expected at least " + std::to_string(plan.workspace_bytes) +
                      " bytes for " + std::to_string(plan.num_chunks) + " KV chunks, got " +
                      std::to_string(problem.workspace_bytes)};
  }
  if (problem.workspace_bytes > 0) {
    Checker c;
    c.on_cuda(args.workspace, "workspace").same_device(args.workspace, "workspace", args.q, "q");
    c.rows_aligned(args.workspace, "workspace", 16);
    if (!c.ok()) return c.status();
  }
  return detail::cuda_status(detail::dispatch_attention(int(args.q.shape[1]), args.q.dtype, args.k.dtype,
                                                        RunOp{problem, stream}),
                             "single_decode");
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace fi_core

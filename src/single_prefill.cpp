// Host entry point of single-request prefill: validation, then dispatch to an instantiation.
#include <cmath>
#include <cstdint>
#include <limits>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "single_prefill_problem.h"

namespace fi_core {
namespace {

using detail::SinglePrefillProblem;

Status make_problem(const SinglePrefillArgs& a, SinglePrefillProblem* pr) {
  Checker c;
  c.present(a.q, "q").on_cuda(a.q, "q").dtype_in(a.q, "q", {DType::kFloat16, DType::kBFloat16});
  c.ndim(a.q, "q", 3, "[qo_len, num_qo_heads, head_dim]").last_dim_contiguous(a.q, "q");
  c.request_kv(a.k, a.v, a.q, a.kv_layout);
  c.require(!c.ok() || detail::prefill_dtypes_built(a.q.dtype, a.k.dtype), [&] {
    return std::string("k: expected the dtype of q (") + dtype_name(a.q.dtype) +
           ") or an fp8 dtype (float8_e4m3fn, float8_e5m2), got " + dtype_name(a.k.dtype);
  });
  if (!c.ok()) return c.status();
  const bool nhd = a.kv_layout == KVLayout::kNHD;
  const char* kv_dims = nhd ? "[kv_len, num_kv_heads, head_dim]" : "[num_kv_heads, kv_len, head_dim]";

  const int64_t qo_len = a.q.shape[0], num_qo_heads = a.q.shape[1], head_dim = a.q.shape[2];
  const int n_axis = nhd ? 0 : 1, h_axis = nhd ? 1 : 0;
  const int64_t kv_len = a.k.shape[n_axis], num_kv_heads = a.k.shape[h_axis];
  const std::vector<int64_t> kv_shape = {a.k.shape[0], a.k.shape[1], head_dim};
  c.shape(a.k, "k", kv_shape, kv_dims).shape(a.v, "v", kv_shape, kv_dims);
  c.attention_heads(head_dim, "q.shape[2]", num_qo_heads, num_kv_heads);
  c.require(qo_len <= kv_len, [&] {
    return "q: expected qo_len (q.shape[0]) <= kv_len (" + std::to_string(kv_len) + "), got " +
           std::to_string(qo_len);
  });
  c.require(kv_len < std::numeric_limits<int32_t>::max(), [&] {
    return "k: expected kv_len below 2^31, got " + std::to_string(kv_len);
  });
  // KV heads are the grid's y dimension (checked through the query heads, their multiple).
  c.require(num_qo_heads <= 65535, [&] {
    return "q: expected at most 65535 query heads (q.shape[1]), got " + std::to_string(num_qo_heads);
  });
  // Packed query rows (token x group size) are divided with a fast divisor exact below 2^31.
  c.require(!c.ok() || qo_len * (num_qo_heads / num_kv_heads) < std::numeric_limits<int32_t>::max(), [&] {
    return "q: expected qo_len x (num_qo_heads / num_kv_heads) below 2^31, got " + std::to_string(qo_len) +
           " x " + std::to_string(num_qo_heads / num_kv_heads);
  });

  c.present(a.out, "out").on_cuda(a.out, "out").dtype_in(a.out, "out", {a.q.dtype});
  c.shape(a.out, "out", {qo_len, num_qo_heads, head_dim}, "[qo_len, num_qo_heads, head_dim]");
  c.last_dim_contiguous(a.out, "out").same_device(a.out, "out", a.q, "q");
  if (a.lse.present()) {
    c.on_cuda(a.lse, "lse").dtype_in(a.lse, "lse", {DType::kFloat32});
    c.shape(a.lse, "lse", {qo_len, num_qo_heads}, "[qo_len, num_qo_heads]").last_dim_contiguous(a.lse, "lse");
    c.same_device(a.lse, "lse", a.q, "q");
  }
  if (a.packed_custom_mask.present()) {
    c.packed_mask(a.packed_custom_mask, "packed_custom_mask", (qo_len * kv_len + 7) / 8, false,
                  "ceil(qo_len * kv_len / 8) = ceil(" + std::to_string(qo_len) + " * " + std::to_string(kv_len) +
                      " / 8)",
                  a.q, "q");
  }
  // Rows move as 16-byte chunks.
  c.rows_aligned(a.q, "q", 16).rows_aligned(a.out, "out", 16).rows_aligned(a.k, "k", 16).rows_aligned(a.v, "v", 16);

  c.attention_options(a.pos_encoding_mode, a.window_left, a.logits_soft_cap, a.sm_scale, a.rope_scale,
                      a.rope_theta);
  c.finite(a.k_scale, "k_scale", true, "a finite number").finite(a.v_scale, "v_scale", true, "a finite number");
  if (!c.ok()) return c.status();

  pr->q = a.q.data;
  pr->k = a.k.data;
  pr->v = a.v.data;
  pr->out = a.out.data;
  pr->lse = a.lse.present() ? static_cast<float*>(a.lse.data) : nullptr;
  pr->q_stride_n = a.q.strides[0];
  pr->q_stride_h = a.q.strides[1];
  pr->o_stride_n = a.out.strides[0];
  pr->o_stride_h = a.out.strides[1];
  pr->k_stride_n = a.k.strides[n_axis];
  pr->k_stride_h = a.k.strides[h_axis];
  pr->v_stride_n = a.v.strides[n_axis];
  pr->v_stride_h = a.v.strides[h_axis];
  pr->lse_stride_n = a.lse.present() ? a.lse.strides[0] : 0;
  pr->qo_len = uint32_t(qo_len);
  pr->kv_len = uint32_t(kv_len);
  pr->num_qo_heads = uint32_t(num_qo_heads);
  pr->num_kv_heads = uint32_t(num_kv_heads);
  detail::PrefillVariant& v = pr->variant;
  v.causal = a.causal;
  v.window_left = a.window_left;
  v.custom_mask = a.packed_custom_mask.present() ? static_cast<const uint8_t*>(a.packed_custom_mask.data) : nullptr;
  v.use_alibi = a.pos_encoding_mode == PosEncodingMode::kALiBi;
  v.use_rope = a.pos_encoding_mode == PosEncodingMode::kRoPELlama;
  // k_scale folds into the logits' scale, as in FlashInfer (before the soft cap; ALiBi unscaled).
  v.sm_scale = (a.sm_scale > 0.f ? a.sm_scale : 1.f / std::sqrt(float(head_dim))) * a.k_scale;
  v.logits_soft_cap = a.logits_soft_cap;
  v.rope_scale = a.rope_scale;
  v.rope_theta = a.rope_theta;
  v.v_scale = a.v_scale;
  pr->device = a.q.device;
  return Status::Ok();
}

struct RunOp {
  const SinglePrefillProblem& problem;
  cudaStream_t stream;
  // make_problem has rejected the pairs that are not built.
  template <int D, DType Q, DType KV>
  cudaError_t call() const {
    if constexpr (detail::prefill_dtypes_built(Q, KV)) {
      return detail::run_single_prefill_kernel<D, Q, KV>(problem, stream);
    } else {
      return cudaErrorInvalidValue;
    }
  }
};

}  // namespace

Status single_prefill(const SinglePrefillArgs& args, cudaStream_t stream) {
  SinglePrefillProblem problem{};
  Status st = make_problem(args, &problem);
  if (!st.ok()) return st;
  detail::DeviceGuard guard(problem.device);
  return detail::cuda_status(detail::dispatch_attention(int(args.q.shape[2]), args.q.dtype, args.k.dtype,
                                                        RunOp{problem, stream}),
                             "single_prefill");
}

}  // namespace fi_core

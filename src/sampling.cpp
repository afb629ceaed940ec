// Host entry points of the sampling and renormalization operators: validation, then launch.
#include <cstdint>
#include <string>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "sampling_problem.h"

namespace fi_core {
namespace {

using flashinfer::sampling::SamplingParams;

constexpr const char* kProbDims = "[batch_size, vocab_size]";

// The fields sampling and renormalization share: the probability rows and the top-k / top-p
// filters (validated by the caller). One output row per probability row unless `indices` says.
SamplingParams rows_and_filters(const TensorView& probs, uint32_t batch, bool use_top_k,
                                const TensorView& top_k, int32_t top_k_val, bool use_top_p,
                                const TensorView& top_p, float top_p_val) {
  SamplingParams p{};
  p.probs = static_cast<const float*>(probs.data);
  p.probs_stride = probs.strides[0];
  p.num_prob_rows = p.batch_size = batch;
  p.vocab_size = uint32_t(probs.shape[1]);
  p.use_top_k = use_top_k;
  p.top_k_arr = top_k.present() ? static_cast<const int32_t*>(top_k.data) : nullptr;
  p.top_k = top_k_val;
  p.use_top_p = use_top_p;
  p.top_p_arr = top_p.present() ? static_cast<const float*>(top_p.data) : nullptr;
  p.top_p = top_p_val;
  return p;
}

// probs: float32 [rows, vocab] on a CUDA device with a contiguous last dimension.
void check_probs(Checker& c, const TensorView& probs) {
  c.present(probs, "probs").on_cuda(probs, "probs").dtype_in(probs, "probs", {DType::kFloat32});
  c.ndim(probs, "probs", 2, kProbDims).last_dim_contiguous(probs, "probs");
  if (!c.ok()) return;
  c.require(probs.shape[1] >= 1 && probs.shape[1] < INT32_MAX, [&] {
    return "probs: expected a vocab_size in [1, 2^31), got " + std::to_string(probs.shape[1]);
  });
  c.require(probs.shape[0] < INT32_MAX, [&] {
    return "probs: expected fewer than 2^31 rows, got " + std::to_string(probs.shape[0]);
  });
}

// An optional per-row array: [batch_size] of `dtype` on probs' device.
void check_per_row(Checker& c, const TensorView& t, const char* name, DType dtype, int64_t batch,
                   const TensorView& probs) {
  if (!t.present()) return;
  c.on_cuda(t, name).dtype_in(t, name, {dtype}).shape(t, name, {batch}, "[batch_size]");
  c.last_dim_contiguous(t, name).same_device(t, name, probs, "probs");
}

// The filters shared by sampling and renormalization; scalars are checked only when no array
// replaces them.
void check_filters(Checker& c, bool use_top_k, const TensorView& top_k, int32_t top_k_val,
                   bool use_top_p, const TensorView& top_p, float top_p_val, int64_t batch,
                   const TensorView& probs) {
  if (use_top_k) {
    check_per_row(c, top_k, "top_k", DType::kInt32, batch, probs);
    if (!top_k.present())
      c.require(top_k_val >= 1, [&] {
        return "top_k: expected an integer >= 1, got " + std::to_string(top_k_val);
      });
  }
  if (use_top_p) {
    check_per_row(c, top_p, "top_p", DType::kFloat32, batch, probs);
    if (!top_p.present()) c.finite(top_p_val, "top_p", top_p_val > 0.f && top_p_val <= 1.f, "a number in (0, 1]");
  }
}

}  // namespace

Status sampling_from_probs(const SamplingArgs& args, cudaStream_t stream) {
  Checker c;
  check_probs(c, args.probs);
  if (!c.ok()) return c.status();
  int64_t batch = args.probs.shape[0];
  if (args.indices.present()) {
    const TensorView& ix = args.indices;
    c.on_cuda(ix, "indices").dtype_in(ix, "indices", {DType::kInt32, DType::kInt64});
    c.ndim(ix, "indices", 1, "[batch_size]").last_dim_contiguous(ix, "indices");
    c.same_device(ix, "indices", args.probs, "probs");
    if (!c.ok()) return c.status();
    batch = ix.shape[0];
    c.require(batch < INT32_MAX, [&] {
      return "indices: expected fewer than 2^31 entries, got " + std::to_string(batch);
    });
  }
  c.present(args.samples, "samples").on_cuda(args.samples, "samples");
  c.dtype_in(args.samples, "samples", {DType::kInt32});
  c.shape(args.samples, "samples", {batch}, "[batch_size]").last_dim_contiguous(args.samples, "samples");
  c.same_device(args.samples, "samples", args.probs, "probs");
  check_filters(c, args.use_top_k, args.top_k, args.top_k_val, args.use_top_p, args.top_p,
                args.top_p_val, batch, args.probs);
  if (args.use_min_p) {
    check_per_row(c, args.min_p, "min_p", DType::kFloat32, batch, args.probs);
    if (!args.min_p.present())
      c.finite(args.min_p_val, "min_p", args.min_p_val >= 0.f && args.min_p_val <= 1.f, "a number in [0, 1]");
  }
  if (!c.ok()) return c.status();

  SamplingParams pr = rows_and_filters(args.probs, uint32_t(batch), args.use_top_k, args.top_k,
                                       args.top_k_val, args.use_top_p, args.top_p, args.top_p_val);
  pr.num_prob_rows = uint32_t(args.probs.shape[0]);
  pr.indices = args.indices.present() ? args.indices.data : nullptr;
  pr.indices_int64 = args.indices.dtype == DType::kInt64;
  pr.use_min_p = args.use_min_p;
  pr.min_p_arr = args.min_p.present() ? static_cast<const float*>(args.min_p.data) : nullptr;
  pr.min_p = args.min_p_val;
  pr.top_k_first = args.top_k_first;
  pr.seed = args.seed;
  pr.offset = args.offset;
  pr.samples = static_cast<int32_t*>(args.samples.data);
  if (batch == 0) return Status::Ok();
  detail::DeviceGuard guard(args.probs.device);
  return detail::cuda_status(detail::run_sampling_kernel(pr, stream), "sampling_from_probs");
}

Status renorm_probs(const RenormProbsArgs& args, cudaStream_t stream) {
  Checker c;
  check_probs(c, args.probs);
  if (!c.ok()) return c.status();
  const int64_t batch = args.probs.shape[0];
  c.present(args.out, "out").on_cuda(args.out, "out").dtype_in(args.out, "out", {DType::kFloat32});
  c.shape(args.out, "out", {batch, args.probs.shape[1]}, kProbDims).last_dim_contiguous(args.out, "out");
  c.same_device(args.out, "out", args.probs, "probs");
  check_filters(c, args.use_top_k, args.top_k, args.top_k_val, args.use_top_p, args.top_p,
                args.top_p_val, batch, args.probs);
  if (!c.ok()) return c.status();

  SamplingParams pr = rows_and_filters(args.probs, uint32_t(batch), args.use_top_k, args.top_k,
                                       args.top_k_val, args.use_top_p, args.top_p, args.top_p_val);
  pr.top_k_first = true;
  pr.renormed = static_cast<float*>(args.out.data);
  pr.renormed_stride = args.out.strides[0];
  if (batch == 0) return Status::Ok();
  detail::DeviceGuard guard(args.probs.device);
  return detail::cuda_status(detail::run_sampling_kernel(pr, stream),
                             args.use_top_k ? "top_k_renorm_probs" : "top_p_renorm_probs");
}

}  // namespace fi_core

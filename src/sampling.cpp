// Host entry points of the sampling, renormalization, masking and speculative sampling operators:
// validation, then launch.
#include <cstdint>
#include <string>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "sampling_problem.h"

namespace fi_core {
namespace {

using flashinfer::sampling::SamplingMode;
using flashinfer::sampling::SamplingParams;
using flashinfer::sampling::SpeculativeParams;

constexpr const char* kRowDims = "[batch_size, vocab_size]";
const std::initializer_list<DType> kLogitDTypes = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

// The rows and the top-k / top-p filters (validated by the caller) that every row operator
// shares. One output row per input row unless `indices` says otherwise.
SamplingParams rows_and_filters(const TensorView& input, SamplingMode mode, bool use_top_k,
                                const TensorView& top_k, int32_t top_k_val, bool use_top_p,
                                const TensorView& top_p, float top_p_val) {
  SamplingParams p{};
  p.input = input.data;
  p.input_stride = input.strides[0];
  p.num_input_rows = p.batch_size = uint32_t(input.shape[0]);
  p.vocab_size = uint32_t(input.shape[1]);
  p.mode = mode;
  p.use_top_k = use_top_k;
  p.top_k_arr = top_k.present() ? static_cast<const int32_t*>(top_k.data) : nullptr;
  p.top_k = top_k_val;
  p.use_top_p = use_top_p;
  p.top_p_arr = top_p.present() ? static_cast<const float*>(top_p.data) : nullptr;
  p.top_p = top_p_val;
  p.top_k_first = true;
  return p;
}

// Rows [rows, vocab] of one of `dtypes` on a CUDA device with a contiguous last dimension.
void check_rows(Checker& c, const TensorView& t, const char* name, std::initializer_list<DType> dtypes) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, dtypes);
  c.ndim(t, name, 2, kRowDims).last_dim_contiguous(t, name);
  if (!c.ok()) return;
  c.require(t.shape[1] >= 1 && t.shape[1] < INT32_MAX, [&] {
    return std::string(name) + ": expected a vocab_size in [1, 2^31), got " + std::to_string(t.shape[1]);
  });
  c.require(t.shape[0] < INT32_MAX, [&] {
    return std::string(name) + ": expected fewer than 2^31 rows, got " + std::to_string(t.shape[0]);
  });
}

// An output like `input` (same dtype and shape, on its device).
void check_output_rows(Checker& c, const TensorView& out, const TensorView& input, const char* input_name) {
  c.present(out, "out").on_cuda(out, "out").dtype_in(out, "out", {input.dtype});
  c.shape(out, "out", {input.shape[0], input.shape[1]}, kRowDims).last_dim_contiguous(out, "out");
  c.same_device(out, "out", input, input_name);
}

// An optional per-row array: [batch_size] of `dtype` on the input's device.
void check_per_row(Checker& c, const TensorView& t, const char* name, DType dtype, int64_t batch,
                   const TensorView& input, const char* input_name) {
  if (!t.present()) return;
  c.on_cuda(t, name).dtype_in(t, name, {dtype}).shape(t, name, {batch}, "[batch_size]");
  c.last_dim_contiguous(t, name).same_device(t, name, input, input_name);
}

// The top-k / top-p filters; scalars are checked only when no array replaces them.
void check_filters(Checker& c, bool use_top_k, const TensorView& top_k, int32_t top_k_val,
                   bool use_top_p, const TensorView& top_p, float top_p_val, int64_t batch,
                   const TensorView& input, const char* input_name) {
  if (use_top_k) {
    check_per_row(c, top_k, "top_k", DType::kInt32, batch, input, input_name);
    if (!top_k.present())
      c.require(top_k_val >= 1, [&] {
        return "top_k: expected an integer >= 1, got " + std::to_string(top_k_val);
      });
  }
  if (use_top_p) {
    check_per_row(c, top_p, "top_p", DType::kFloat32, batch, input, input_name);
    if (!top_p.present()) c.finite(top_p_val, "top_p", top_p_val > 0.f && top_p_val <= 1.f, "a number in (0, 1]");
  }
}

Status launch_rows(const SamplingParams& p, const TensorView& input, bool logits, cudaStream_t stream,
                   const char* what) {
  if (p.batch_size == 0) return Status::Ok();
  detail::DeviceGuard guard(input.device);
  const cudaError_t err = logits ? detail::run_logits_kernel(p, input.dtype, stream)
                                 : detail::run_sampling_kernel(p, stream);
  return detail::cuda_status(err, what);
}

// A 1-D int32 [batch_size] count array on the device of draft_probs.
void check_counts(Checker& c, const TensorView& t, const char* name, int64_t batch, const TensorView& ref) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, {DType::kInt32});
  c.shape(t, name, {batch}, "[batch_size]").last_dim_contiguous(t, name);
  c.same_device(t, name, ref, "draft_probs");
}

}  // namespace

Status sampling_from_probs(const SamplingArgs& args, cudaStream_t stream) {
  const char* name = args.from_logits ? "logits" : "probs";
  Checker c;
  if (args.from_logits) check_rows(c, args.input, name, kLogitDTypes);
  else check_rows(c, args.input, name, {DType::kFloat32});
  if (!c.ok()) return c.status();
  int64_t batch = args.input.shape[0];
  if (args.indices.present()) {
    const TensorView& ix = args.indices;
    c.on_cuda(ix, "indices").dtype_in(ix, "indices", {DType::kInt32, DType::kInt64});
    c.ndim(ix, "indices", 1, "[batch_size]").last_dim_contiguous(ix, "indices");
    c.same_device(ix, "indices", args.input, name);
    if (!c.ok()) return c.status();
    batch = ix.shape[0];
    c.require(batch < INT32_MAX, [&] {
      return "indices: expected fewer than 2^31 entries, got " + std::to_string(batch);
    });
  }
  c.present(args.samples, "samples").on_cuda(args.samples, "samples");
  c.dtype_in(args.samples, "samples", {DType::kInt32});
  c.shape(args.samples, "samples", {batch}, "[batch_size]").last_dim_contiguous(args.samples, "samples");
  c.same_device(args.samples, "samples", args.input, name);
  check_filters(c, args.use_top_k, args.top_k, args.top_k_val, args.use_top_p, args.top_p,
                args.top_p_val, batch, args.input, name);
  if (args.use_min_p) {
    check_per_row(c, args.min_p, "min_p", DType::kFloat32, batch, args.input, name);
    if (!args.min_p.present())
      c.finite(args.min_p_val, "min_p", args.min_p_val >= 0.f && args.min_p_val <= 1.f, "a number in [0, 1]");
  }
  if (!c.ok()) return c.status();

  SamplingParams p = rows_and_filters(args.input, SamplingMode::kSample, args.use_top_k, args.top_k,
                                      args.top_k_val, args.use_top_p, args.top_p, args.top_p_val);
  p.batch_size = uint32_t(batch);
  p.indices = args.indices.present() ? args.indices.data : nullptr;
  p.indices_int64 = args.indices.dtype == DType::kInt64;
  p.use_min_p = args.use_min_p;
  p.min_p_arr = args.min_p.present() ? static_cast<const float*>(args.min_p.data) : nullptr;
  p.min_p = args.min_p_val;
  p.top_k_first = args.top_k_first;
  p.seed = args.seed;
  p.offset = args.offset;
  p.samples = static_cast<int32_t*>(args.samples.data);
  return launch_rows(p, args.input, args.from_logits, stream,
                     args.from_logits ? "sampling_from_logits" : "sampling_from_probs");
}

Status renorm_probs(const RenormProbsArgs& args, cudaStream_t stream) {
  Checker c;
  check_rows(c, args.probs, "probs", {DType::kFloat32});
  if (!c.ok()) return c.status();
  const int64_t batch = args.probs.shape[0];
  check_output_rows(c, args.out, args.probs, "probs");
  check_filters(c, args.use_top_k, args.top_k, args.top_k_val, args.use_top_p, args.top_p,
                args.top_p_val, batch, args.probs, "probs");
  if (!c.ok()) return c.status();

  SamplingParams p = rows_and_filters(args.probs, SamplingMode::kRenorm, args.use_top_k, args.top_k,
                                      args.top_k_val, args.use_top_p, args.top_p, args.top_p_val);
  p.out = args.out.data;
  p.out_stride = args.out.strides[0];
  return launch_rows(p, args.probs, false, stream, args.use_top_k ? "top_k_renorm_probs" : "top_p_renorm_probs");
}

Status top_k_mask_logits(const MaskLogitsArgs& args, cudaStream_t stream) {
  Checker c;
  check_rows(c, args.logits, "logits", kLogitDTypes);
  if (!c.ok()) return c.status();
  check_output_rows(c, args.out, args.logits, "logits");
  check_filters(c, true, args.top_k, args.top_k_val, false, TensorView{}, 1.f, args.logits.shape[0],
                args.logits, "logits");
  if (!c.ok()) return c.status();

  SamplingParams p = rows_and_filters(args.logits, SamplingMode::kMaskLogits, true, args.top_k,
                                      args.top_k_val, false, TensorView{}, 1.f);
  p.out = args.out.data;
  p.out_stride = args.out.strides[0];
  return launch_rows(p, args.logits, true, stream, "top_k_mask_logits");
}

Status chain_speculative_sampling(const SpeculativeArgs& args, cudaStream_t stream) {
  constexpr const char* kDraftDims = "[batch_size, num_speculative_tokens, vocab_size]";
  Checker c;
  const TensorView &draft = args.draft_probs, &ids = args.draft_token_ids, &target = args.target_probs;
  c.present(draft, "draft_probs").on_cuda(draft, "draft_probs").dtype_in(draft, "draft_probs", {DType::kFloat32});
  c.ndim(draft, "draft_probs", 3, kDraftDims).last_dim_contiguous(draft, "draft_probs");
  if (!c.ok()) return c.status();
  const int64_t batch = draft.shape[0], steps = draft.shape[1], vocab = draft.shape[2];
  c.require(vocab >= 1 && vocab < INT32_MAX, [&] {
    return "draft_probs: expected a vocab_size in [1, 2^31), got " + std::to_string(vocab);
  });
  c.require(batch < INT32_MAX && steps < INT32_MAX - 1, [&] {
    return "draft_probs: expected fewer than 2^31 requests and speculative tokens, got shape " + shape_string(draft);
  });
  c.present(ids, "draft_token_ids").on_cuda(ids, "draft_token_ids").dtype_in(ids, "draft_token_ids", {DType::kInt32});
  c.shape(ids, "draft_token_ids", {batch, steps}, "[batch_size, num_speculative_tokens]");
  c.same_device(ids, "draft_token_ids", draft, "draft_probs");
  c.present(target, "target_probs").on_cuda(target, "target_probs").dtype_in(target, "target_probs", {DType::kFloat32});
  c.shape(target, "target_probs", {batch, steps + 1, vocab}, "[batch_size, num_speculative_tokens + 1, vocab_size]");
  c.last_dim_contiguous(target, "target_probs").same_device(target, "target_probs", draft, "draft_probs");
  const TensorView& out = args.output_token_ids;
  c.present(out, "output_token_ids").on_cuda(out, "output_token_ids").dtype_in(out, "output_token_ids", {DType::kInt32});
  c.shape(out, "output_token_ids", {batch, steps + 1}, "[batch_size, num_speculative_tokens + 1]");
  c.same_device(out, "output_token_ids", draft, "draft_probs");
  check_counts(c, args.accepted_token_num, "maybe_output_accepted_token_num", batch, draft);
  check_counts(c, args.emitted_draft_token_num, "maybe_output_emitted_draft_token_num", batch, draft);
  if (!c.ok()) return c.status();

  SpeculativeParams p{};
  p.draft_probs = static_cast<const float*>(draft.data);
  p.draft_stride_batch = draft.strides[0];
  p.draft_stride_step = draft.strides[1];
  p.draft_token_ids = static_cast<const int32_t*>(ids.data);
  p.draft_ids_stride_batch = ids.strides[0];
  p.draft_ids_stride_step = ids.strides[1];
  p.target_probs = static_cast<const float*>(target.data);
  p.target_stride_batch = target.strides[0];
  p.target_stride_step = target.strides[1];
  p.batch_size = uint32_t(batch);
  p.num_speculative_tokens = uint32_t(steps);
  p.vocab_size = uint32_t(vocab);
  p.output_token_ids = static_cast<int32_t*>(out.data);
  p.output_stride_batch = out.strides[0];
  p.output_stride_step = out.strides[1];
  p.accepted_token_num = static_cast<int32_t*>(args.accepted_token_num.data);
  p.emitted_draft_token_num = static_cast<int32_t*>(args.emitted_draft_token_num.data);
  p.add_to_accepted = args.add_to_accepted;
  p.add_to_emitted = args.add_to_emitted;
  p.seed = args.seed;
  p.offset = args.offset;
  if (batch == 0) return Status::Ok();
  detail::DeviceGuard guard(draft.device);
  return detail::cuda_status(detail::run_speculative_kernel(p, stream), "chain_speculative_sampling");
}

}  // namespace fi_core

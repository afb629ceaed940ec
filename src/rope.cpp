// Host entry point of rotary embeddings (positions from pos_ids or indptr/offsets; angles from
// rope_scale/rope_theta, Llama 3.1 scaling, or a cos/sin cache): validation, then dispatch.
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "llm_ops_problem.h"

namespace fi_core {
namespace {

using detail::RopeProblem;

constexpr int64_t kMaxHeadDim = 512;  // flashinfer::rope::kRopeMaxRotaryDim

// Heads of q or k: [nnz, heads, head_dim], or [nnz, heads * head_size] when head_size > 0.
struct Heads {
  int64_t nnz = 0, count = 0, dim = 0, stride_n = 0, stride_h = 0;
};

Heads heads_of(const TensorView& t, int64_t head_size) {
  Heads h;
  h.nnz = t.shape[0];
  h.stride_n = t.strides[0];
  if (t.ndim == 3) {
    h.count = t.shape[1], h.dim = t.shape[2], h.stride_h = t.strides[1];
  } else {
    h.count = t.shape[1] / head_size, h.dim = head_size, h.stride_h = head_size;
  }
  return h;
}

void check_qk(Checker& c, const TensorView& t, const char* name, const TensorView& q, int64_t head_size) {
  const bool packed = head_size > 0;
  c.present(t, name).on_cuda(t, name);
  if (&t == &q) c.dtype_in(t, name, {DType::kFloat16, DType::kBFloat16, DType::kFloat32});
  else c.dtype_in(t, name, {q.dtype}).same_device(t, name, q, "q");
  if (packed) {
    c.require(t.ndim == 2 || t.ndim == 3, [&] {
      return std::string(name) + ": expected 2 dimensions [nnz, num_heads * head_size] or 3 [nnz, " +
             "num_heads, head_size], got " + std::to_string(t.ndim) + " with shape " + shape_string(t);
    });
  } else {
    c.ndim(t, name, 3, "[nnz, num_heads, head_dim]");
  }
  c.last_dim_contiguous(t, name);
  if (!c.ok() || !packed) return;
  const int64_t last = t.shape[t.ndim - 1];
  if (t.ndim == 3) {
    c.require(last == head_size, [&] {
      return std::string(name) + ": expected a last dimension equal to head_size (" +
             std::to_string(head_size) + "), got " + std::to_string(last);
    });
  } else {
    c.require(last % head_size == 0, [&] {
      return std::string(name) + ": expected a last dimension that is a multiple of head_size (" +
             std::to_string(head_size) + "), got " + std::to_string(last);
    });
  }
}

// An output shaped and typed like its input `in` (q or k).
void check_output(Checker& c, const TensorView& t, const char* name, const TensorView& in,
                  const char* in_name) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, {in.dtype});
  const std::vector<int64_t> shape(in.shape, in.shape + in.ndim);
  c.shape(t, name, shape, in_name).last_dim_contiguous(t, name).same_device(t, name, in, "q");
}

void check_index_array(Checker& c, const TensorView& t, const char* name, const TensorView& q,
                       std::initializer_list<DType> dtypes) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, dtypes).last_dim_contiguous(t, name);
  c.same_device(t, name, q, "q");
}

Status make_problem(const RopeArgs& a, RopeProblem* pr) {
  Checker c;
  c.require(a.head_size >= 0, [&] {
    return "head_size: expected a positive number, got " + std::to_string(a.head_size);
  });
  check_qk(c, a.q, "q", a.q, a.head_size);
  check_qk(c, a.k, "k", a.q, a.head_size);
  if (!c.ok()) return c.status();
  const Heads q = heads_of(a.q, a.head_size), k = heads_of(a.k, a.head_size);
  c.require(k.nnz == q.nnz, [&] {
    return "k: expected shape[0] equal to nnz of q (" + std::to_string(q.nnz) + "), got " +
           std::to_string(k.nnz);
  });
  c.require(k.dim == q.dim, [&] {
    return "k: expected head_dim " + std::to_string(q.dim) + " (that of q), got " + std::to_string(k.dim);
  });
  c.require(q.dim <= kMaxHeadDim, [&] {
    return "head_dim: expected at most " + std::to_string(kMaxHeadDim) + ", got " + std::to_string(q.dim);
  });
  c.require(q.nnz < INT32_MAX, [&] { return "q: expected nnz below 2^31, got " + std::to_string(q.nnz); });
  c.require(q.count + k.count < INT32_MAX, [&] {
    return "q, k: expected fewer than 2^31 heads in all, got " + std::to_string(q.count + k.count);
  });
  check_output(c, a.q_rope, "q_rope", a.q, "of q");
  check_output(c, a.k_rope, "k_rope", a.k, "of k");

  // Positions: pos_ids, or indptr with offsets.
  const bool by_request = a.indptr.present() || a.offsets.present();
  c.require(a.pos_ids.present() != by_request, [&] {
    return std::string("pos_ids: expected either pos_ids or indptr and offsets, got ") +
           (by_request ? "both" : "neither");
  });
  int64_t batch_size = 0;
  if (a.pos_ids.present()) {
    check_index_array(c, a.pos_ids, "pos_ids", a.q, {DType::kInt32, DType::kInt64});
    c.shape(a.pos_ids, "pos_ids", {q.nnz}, "[nnz]");
  } else if (by_request) {
    check_index_array(c, a.indptr, "indptr", a.q, {DType::kInt32, DType::kInt64});
    c.require(a.indptr.ndim == 1 && a.indptr.shape[0] >= 1, [&] {
      return "indptr: expected shape [batch_size + 1], got " + shape_string(a.indptr);
    });
    if (c.ok()) batch_size = a.indptr.shape[0] - 1;
    check_index_array(c, a.offsets, "offsets", a.q, {a.indptr.dtype});
    c.shape(a.offsets, "offsets", {batch_size}, "[batch_size]");
    c.require(batch_size < INT32_MAX, [&] {
      return "indptr: expected batch_size below 2^31, got " + std::to_string(batch_size);
    });
  }

  // Rotated dims and angles.
  int64_t rotary_dim = a.rotary_dim == 0 ? q.dim : a.rotary_dim;
  if (a.cos_sin_cache.present()) {
    const TensorView& cache = a.cos_sin_cache;
    c.on_cuda(cache, "cos_sin_cache").dtype_in(cache, "cos_sin_cache", {DType::kFloat32});
    c.ndim(cache, "cos_sin_cache", 2, "[max_position, rotary_dim]");
    c.last_dim_contiguous(cache, "cos_sin_cache").same_device(cache, "cos_sin_cache", a.q, "q");
    if (c.ok()) rotary_dim = cache.shape[1];
    c.require(rotary_dim % 2 == 0 && rotary_dim >= 2 && rotary_dim <= q.dim, [&] {
      return "cos_sin_cache: expected shape [max_position, rotary_dim] with an even rotary_dim in "
             "[2, head_dim = " + std::to_string(q.dim) + "], got " + shape_string(cache);
    });
  } else {
    c.require(rotary_dim % 2 == 0 && rotary_dim >= 2 && rotary_dim <= q.dim, [&] {
      return "rotary_dim: expected an even number in [2, head_dim = " + std::to_string(q.dim) +
             "], got " + std::to_string(rotary_dim);
    });
  }
  c.finite(a.rope_scale, "rope_scale", a.rope_scale > 0.f, "a positive number");
  c.finite(a.rope_theta, "rope_theta", a.rope_theta > 0.f, "a positive number");
  if (a.llama31) {
    c.finite(a.low_freq_factor, "low_freq_factor", a.low_freq_factor > 0.f, "a positive number");
    c.finite(a.high_freq_factor, "high_freq_factor", a.high_freq_factor > a.low_freq_factor,
             "a number above low_freq_factor");
    c.finite(a.old_context_len, "old_context_len", a.old_context_len > 0.f, "a positive number");
  }
  if (!c.ok()) return c.status();

  pr->q = a.q.data;
  pr->k = a.k.data;
  pr->q_rope = a.q_rope.data;
  pr->k_rope = a.k_rope.data;
  const Heads q_rope = heads_of(a.q_rope, a.head_size), k_rope = heads_of(a.k_rope, a.head_size);
  pr->q_stride_n = q.stride_n, pr->q_stride_h = q.stride_h;
  pr->k_stride_n = k.stride_n, pr->k_stride_h = k.stride_h;
  pr->q_rope_stride_n = q_rope.stride_n, pr->q_rope_stride_h = q_rope.stride_h;
  pr->k_rope_stride_n = k_rope.stride_n, pr->k_rope_stride_h = k_rope.stride_h;
  pr->nnz = uint32_t(q.nnz);
  pr->num_q_heads = uint32_t(q.count);
  pr->num_k_heads = uint32_t(k.count);
  pr->head_dim = uint32_t(q.dim);
  pr->rotary_dim = uint32_t(rotary_dim);
  pr->pos_ids = a.pos_ids.present() ? a.pos_ids.data : nullptr;
  pr->indptr = by_request ? a.indptr.data : nullptr;
  pr->offsets = by_request ? a.offsets.data : nullptr;
  pr->batch_size = uint32_t(batch_size);
  pr->index_dtype = a.pos_ids.present() ? a.pos_ids.dtype : a.indptr.dtype;
  pr->cos_sin_cache =
      a.cos_sin_cache.present() ? static_cast<const float*>(a.cos_sin_cache.data) : nullptr;
  pr->cache_stride = a.cos_sin_cache.present() ? a.cos_sin_cache.strides[0] : 0;
  pr->cache_len = a.cos_sin_cache.present() ? a.cos_sin_cache.shape[0] : 0;
  pr->interleave = a.interleave;
  pr->rope_scale = a.rope_scale;
  pr->rope_theta = a.rope_theta;
  pr->llama31 = a.llama31;
  pr->low_freq_factor = a.low_freq_factor;
  pr->high_freq_factor = a.high_freq_factor;
  pr->old_context_len = a.old_context_len;
  return Status::Ok();
}

}  // namespace

Status apply_rope(const RopeArgs& args, cudaStream_t stream) {
  RopeProblem problem{};
  Status st = make_problem(args, &problem);
  if (!st.ok()) return st;
  detail::DeviceGuard guard(args.q.device);
  const auto launch = [&](auto dtype) {
    return detail::run_rope_kernel<decltype(dtype)::value>(problem, stream);
  };
  return detail::cuda_status(detail::dispatch_float_dtype(args.q.dtype, launch), "apply_rope");
}

}  // namespace fi_core

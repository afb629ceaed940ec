#include "checks.h"

#include <cmath>
#include <cstdint>
#include <sstream>

#include "dispatch.h"

namespace fi_core {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat8E4M3: return "float8_e4m3fn";
    case DType::kFloat8E5M2: return "float8_e5m2";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kBool: return "bool";
    default: return "an unsupported dtype";
  }
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16: return 2;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat64:
    case DType::kInt64: return 8;
    default: return 1;
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

std::string shape_string(const TensorView& t) {
  std::ostringstream s;
  s << "(";
  for (int i = 0; i < t.ndim; ++i) s << (i ? ", " : "") << t.shape[i];
  s << (t.ndim == 1 ? ",)" : ")");
  return s.str();
}

std::string device_string(int device) {
  return device < 0 ? std::string("host memory") : "cuda:" + std::to_string(device);
}

Checker& Checker::fail(StatusCode code, std::string message) {
  if (ok()) status_ = Status{code, std::move(message)};
  return *this;
}

Checker& Checker::present(const TensorView& t, const char* name) {
  if (ok() && !t.present()) fail(StatusCode::kTypeError, std::string(name) + ": expected an array, got None");
  return *this;
}

Checker& Checker::on_cuda(const TensorView& t, const char* name) {
  if (ok() && t.device < 0)
    fail(StatusCode::kTypeError,
         std::string(name) + ": expected a CUDA array, got an array in host memory");
  return *this;
}

Checker& Checker::on_host(const TensorView& t, const char* name) {
  if (ok() && t.device >= 0)
    fail(StatusCode::kTypeError, std::string(name) + ": expected a host (CPU) array, got an array on " +
                                     device_string(t.device));
  return *this;
}

Checker& Checker::contiguous(const TensorView& t, const char* name) {
  if (!ok()) return *this;
  int64_t expected = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.shape[i] > 1 && t.strides[i] != expected)
      return fail(StatusCode::kValueError,
                  std::string(name) + ": expected a contiguous array, got strides of a strided view");
    expected *= t.shape[i];
  }
  return *this;
}

Checker& Checker::dtype_in(const TensorView& t, const char* name,
                           std::initializer_list<DType> allowed) {
  if (!ok()) return *this;
  for (DType d : allowed)
    if (t.dtype == d) return *this;
  std::string expected;
  size_t i = 0;
  for (DType d : allowed) {
    expected += (i == 0 ? "" : (i + 1 == allowed.size() ? " or " : ", "));
    expected += dtype_name(d);
    ++i;
  }
  return fail(StatusCode::kTypeError,
              std::string(name) + ": expected dtype " + expected + ", got " + dtype_name(t.dtype));
}

Checker& Checker::ndim(const TensorView& t, const char* name, int ndim, const char* dims) {
  if (ok() && t.ndim != ndim)
    fail(StatusCode::kValueError, std::string(name) + ": expected " + std::to_string(ndim) +
                                      " dimensions " + dims + ", got " + std::to_string(t.ndim) +
                                      " with shape " + shape_string(t));
  return *this;
}

Checker& Checker::shape(const TensorView& t, const char* name, const std::vector<int64_t>& expected,
                        const char* dims) {
  if (!ok()) return *this;
  bool same = t.ndim == int(expected.size());
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == expected[i];
  if (!same) {
    TensorView e;
    e.ndim = int(expected.size());
    for (int i = 0; i < e.ndim; ++i) e.shape[i] = expected[i];
    fail(StatusCode::kValueError, std::string(name) + ": expected shape " + dims + " = " +
                                      shape_string(e) + ", got " + shape_string(t));
  }
  return *this;
}

Checker& Checker::last_dim_contiguous(const TensorView& t, const char* name) {
  if (ok() && t.ndim > 0 && t.shape[t.ndim - 1] > 1 && t.strides[t.ndim - 1] != 1)
    fail(StatusCode::kValueError, std::string(name) +
                                      ": expected a contiguous last dimension (stride 1), got stride " +
                                      std::to_string(t.strides[t.ndim - 1]));
  return *this;
}

Checker& Checker::same_device(const TensorView& t, const char* name, const TensorView& ref,
                              const char* ref_name) {
  if (ok() && t.device != ref.device)
    fail(StatusCode::kValueError, std::string(name) + ": expected the device of " + ref_name + " (" +
                                      device_string(ref.device) + "), got " +
                                      device_string(t.device));
  return *this;
}

Checker& Checker::rows_aligned(const TensorView& t, const char* name, int bytes) {
  if (!ok()) return *this;
  const size_t elem = dtype_size(t.dtype);
  bool aligned = reinterpret_cast<uintptr_t>(t.data) % bytes == 0;
  for (int i = 0; aligned && i + 1 < t.ndim; ++i)
    aligned = t.shape[i] <= 1 || (t.strides[i] * int64_t(elem)) % bytes == 0;
  if (!aligned)
    fail(StatusCode::kValueError, std::string(name) + ": expected the data pointer and row strides " +
                                      "aligned to " + std::to_string(bytes) +
                                      " bytes, got a misaligned view (slice the array on row boundaries)");
  return *this;
}

Checker& Checker::row_groups(std::initializer_list<const TensorView*> arrays, const char* names,
                             RowGroups* groups) {
  if (!ok()) return *this;
  const TensorView& first = **arrays.begin();
  const int lead = first.ndim - 1;
  // Each level: its innermost dimension and the product of the sizes merged into it.
  struct Level {
    int dim;
    int64_t size;
  };
  std::vector<Level> levels;
  groups->num_rows = 1;
  for (int d = 0; d < lead; ++d) {
    groups->num_rows *= first.shape[d];
    if (first.shape[d] == 1) continue;
    bool merges = !levels.empty();
    for (const TensorView* t : arrays)
      merges = merges && t->strides[levels.back().dim] == t->strides[d] * t->shape[d];
    if (merges) {
      levels.back() = {d, levels.back().size * first.shape[d]};
    } else {
      levels.push_back({d, first.shape[d]});
    }
  }
  if (groups->num_rows == 0) levels.clear();  // no rows: strides do not matter
  if (levels.size() > 2) {
    std::ostringstream s;
    s << names << ": expected leading dimensions that merge into at most two strided levels, got";
    for (const TensorView* t : arrays) {
      s << " shape " << shape_string(*t) << " with strides (";
      for (int i = 0; i < t->ndim; ++i) s << (i ? ", " : "") << t->strides[i];
      s << ");";
    }
    std::string message = s.str();
    message.back() = ' ';
    message += "(copy the array to make it contiguous)";
    return fail(StatusCode::kValueError, message);
  }
  groups->inner_rows = levels.size() == 2 ? levels[1].size : 1;
  groups->outer_stride.clear();
  groups->inner_stride.clear();
  for (const TensorView* t : arrays) {
    groups->outer_stride.push_back(levels.empty() ? 0 : t->strides[levels[0].dim]);
    groups->inner_stride.push_back(levels.size() == 2 ? t->strides[levels[1].dim] : 0);
  }
  return *this;
}

Checker& Checker::finite(float value, const char* name, bool in_range, const char* what) {
  if (ok() && !(std::isfinite(value) && in_range)) {
    std::ostringstream s;
    s << name << ": expected " << what << ", got " << value;
    fail(StatusCode::kValueError, s.str());
  }
  return *this;
}

Checker& Checker::attention_options(PosEncodingMode pos_encoding_mode, int32_t window_left,
                                    float logits_soft_cap, float sm_scale, float rope_scale,
                                    float rope_theta) {
  require(pos_encoding_mode == PosEncodingMode::kNone || pos_encoding_mode == PosEncodingMode::kRoPELlama ||
              pos_encoding_mode == PosEncodingMode::kALiBi,
          [&] {
            return "pos_encoding_mode: expected NONE (0), ROPE_LLAMA (1) or ALIBI (2), got " +
                   std::to_string(int(pos_encoding_mode));
          });
  require(window_left >= -1, [&] {
    return "window_left: expected -1 (no window) or >= 0, got " + std::to_string(window_left);
  });
  finite(logits_soft_cap, "logits_soft_cap", logits_soft_cap >= 0.f, ">= 0 (0 = off)");
  finite(sm_scale, "sm_scale", sm_scale >= 0.f, "a positive number (0 = 1/sqrt(head_dim))");
  finite(rope_scale, "rope_scale", rope_scale > 0.f, "a positive number");
  return finite(rope_theta, "rope_theta", rope_theta > 0.f, "a positive number");
}

Checker& Checker::request_kv(const TensorView& k, const TensorView& v, const TensorView& q,
                             KVLayout kv_layout) {
  require(kv_layout == KVLayout::kNHD || kv_layout == KVLayout::kHND, [&] {
    return "kv_layout: expected NHD (0) or HND (1), got " + std::to_string(int(kv_layout));
  });
  const char* dims = kv_layout == KVLayout::kNHD ? "[kv_len, num_kv_heads, head_dim]"
                                                 : "[num_kv_heads, kv_len, head_dim]";
  present(k, "k").on_cuda(k, "k");
  dtype_in(k, "k", {DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kFloat8E5M2});
  ndim(k, "k", 3, dims).last_dim_contiguous(k, "k").same_device(k, "k", q, "q");
  present(v, "v").on_cuda(v, "v").dtype_in(v, "v", {k.dtype}).ndim(v, "v", 3, dims);
  return last_dim_contiguous(v, "v").same_device(v, "v", q, "q");
}

Checker& Checker::packed_mask(const TensorView& t, const char* name, int64_t bytes, bool at_least,
                              const std::string& what, const TensorView& ref, const char* ref_name) {
  present(t, name).on_cuda(t, name).dtype_in(t, name, {DType::kUInt8}).ndim(t, name, 1, "[num_bytes]");
  contiguous(t, name).same_device(t, name, ref, ref_name);
  return require(!ok() || (at_least ? t.shape[0] >= bytes : t.shape[0] == bytes), [&] {
    return std::string(name) + ": expected " + (at_least ? "room for at least " : "") + std::to_string(bytes) +
           " bytes (" + what + "), got " + std::to_string(t.shape[0]);
  });
}

Checker& Checker::attention_heads(int64_t head_dim, const char* head_dim_source, int64_t num_qo_heads,
                                  int64_t num_kv_heads) {
  require(detail::head_dim_in_build(int(head_dim)), [&] {
    return "head_dim: " + std::to_string(head_dim) + " (" + head_dim_source +
           ") is not in this build; it has " + detail::head_dims_in_build();
  });
  return require(num_kv_heads > 0 && num_qo_heads > 0 && num_qo_heads % num_kv_heads == 0, [&] {
    return "num_qo_heads: expected a positive multiple of num_kv_heads (" +
           std::to_string(num_kv_heads) + "), got " + std::to_string(num_qo_heads);
  });
}

}  // namespace fi_core

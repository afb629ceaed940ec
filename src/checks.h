// Argument checks shared by the host entry points. A Checker records the first failure; its
// messages follow one pattern: "<argument>: expected <what>, got <what was given>".
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "fi_core/api.h"

namespace fi_core {

std::string shape_string(const TensorView& t);
std::string device_string(int device);

// Leading dimensions (all but the last) shared by several arrays, merged wherever every array
// allows it into at most two strided levels: row r of array a starts at element
// (r / inner_rows) * outer_stride[a] + (r % inner_rows) * inner_stride[a].
struct RowGroups {
  int64_t num_rows = 1, inner_rows = 1;
  std::vector<int64_t> outer_stride, inner_stride;  // one per array
};

class Checker {
 public:
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  Checker& fail(StatusCode code, std::string message);
  // `cond` false -> ValueError with `message` (built by the caller only when needed).
  template <typename MakeMessage>
  Checker& require(bool cond, MakeMessage&& make_message) {
    if (ok() && !cond) fail(StatusCode::kValueError, make_message());
    return *this;
  }

  Checker& present(const TensorView& t, const char* name);
  Checker& on_cuda(const TensorView& t, const char* name);
  Checker& on_host(const TensorView& t, const char* name);
  // Every dimension packed (strides of a C-contiguous array).
  Checker& contiguous(const TensorView& t, const char* name);
  Checker& dtype_in(const TensorView& t, const char* name, std::initializer_list<DType> allowed);
  Checker& ndim(const TensorView& t, const char* name, int ndim, const char* dims);
  Checker& shape(const TensorView& t, const char* name, const std::vector<int64_t>& expected,
                 const char* dims);
  Checker& last_dim_contiguous(const TensorView& t, const char* name);
  Checker& same_device(const TensorView& t, const char* name, const TensorView& ref,
                       const char* ref_name);
  // Data pointer and every stride but the last aligned to `bytes` (vectorized rows).
  Checker& rows_aligned(const TensorView& t, const char* name, int bytes);
  // The rows of `arrays` (same leading shape, checked by the caller) as RowGroups; fails when
  // their leading strides need more than two levels. `names` names the arrays in messages.
  Checker& row_groups(std::initializer_list<const TensorView*> arrays, const char* names,
                      RowGroups* groups);
  // A float option: "<name>: expected <what>, got <value>" unless finite and `in_range`.
  Checker& finite(float value, const char* name, bool in_range, const char* what);
  // The options every attention kernel takes: position encoding, sliding window, soft cap,
  // softmax scale (0 = default), RoPE scale and theta.
  Checker& attention_options(PosEncodingMode pos_encoding_mode, int32_t window_left,
                             float logits_soft_cap, float sm_scale, float rope_scale, float rope_theta);
  // Contiguous (non-paged) k and v of one request: the layout code, then k and v as CUDA arrays
  // [kv_len, num_kv_heads, head_dim] (NHD) or [num_kv_heads, kv_len, head_dim] (HND) of one
  // 16-bit or fp8 dtype, with a contiguous last dimension, on q's device.
  Checker& request_kv(const TensorView& k, const TensorView& v, const TensorView& q, KVLayout kv_layout);
  // A bit-packed custom attention mask (or a buffer for one): a contiguous 1-D uint8 CUDA array on
  // ref's device with exactly `bytes` bytes (at_least: at least `bytes`); `what` says what the
  // count is made of.
  Checker& packed_mask(const TensorView& t, const char* name, int64_t bytes, bool at_least, const std::string& what,
                       const TensorView& ref, const char* ref_name);
  // head_dim compiled into this build, num_qo_heads a positive multiple of num_kv_heads.
  Checker& attention_heads(int64_t head_dim, const char* head_dim_source, int64_t num_qo_heads,
                           int64_t num_kv_heads);

 private:
  Status status_;
};

size_t dtype_size(DType dtype);

}  // namespace fi_core

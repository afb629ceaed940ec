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
  Checker& dtype_in(const TensorView& t, const char* name, std::initializer_list<DType> allowed);
  Checker& ndim(const TensorView& t, const char* name, int ndim, const char* dims);
  Checker& shape(const TensorView& t, const char* name, const std::vector<int64_t>& expected,
                 const char* dims);
  Checker& last_dim_contiguous(const TensorView& t, const char* name);
  Checker& same_device(const TensorView& t, const char* name, const TensorView& ref,
                       const char* ref_name);
  // Data pointer and every stride but the last aligned to `bytes` (vectorized rows).
  Checker& rows_aligned(const TensorView& t, const char* name, int bytes);

 private:
  Status status_;
};

size_t dtype_size(DType dtype);

}  // namespace fi_core

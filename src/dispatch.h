// Maps run-time (head_dim, dtypes) onto the compiled instantiations; device and error helpers.
#pragma once

#include <cuda_runtime_api.h>

#include <string>
#include <type_traits>

#include "fi_core/api.h"
#include "fi_core_build_config.h"

namespace fi_core {
namespace detail {

inline bool head_dim_in_build(int head_dim) {
#define FI_CORE_MATCH(D) if (head_dim == D) return true;
  FI_CORE_FOR_EACH_HEAD_DIM(FI_CORE_MATCH)
#undef FI_CORE_MATCH
  return false;
}

inline std::string head_dims_in_build() {
  std::string list;
#define FI_CORE_APPEND(D) list += (list.empty() ? "" : ", ") + std::to_string(D);
  FI_CORE_FOR_EACH_HEAD_DIM(FI_CORE_APPEND)
#undef FI_CORE_APPEND
  return list;
}

// Calls op.template call<HEAD_DIM, Q, KV>() for the matching instantiation. The caller has
// validated the three values against the build, so the fall-through is unreachable.
template <int HEAD_DIM, DType Q, typename Op>
cudaError_t dispatch_kv_dtype(DType kv, const Op& op) {
  switch (kv) {
    case DType::kFloat16: return op.template call<HEAD_DIM, Q, DType::kFloat16>();
    case DType::kBFloat16: return op.template call<HEAD_DIM, Q, DType::kBFloat16>();
    case DType::kFloat8E4M3: return op.template call<HEAD_DIM, Q, DType::kFloat8E4M3>();
    case DType::kFloat8E5M2: return op.template call<HEAD_DIM, Q, DType::kFloat8E5M2>();
    default: return cudaErrorInvalidValue;
  }
}

template <int HEAD_DIM, typename Op>
cudaError_t dispatch_q_dtype(DType q, DType kv, const Op& op) {
  return q == DType::kFloat16 ? dispatch_kv_dtype<HEAD_DIM, DType::kFloat16>(kv, op)
                              : dispatch_kv_dtype<HEAD_DIM, DType::kBFloat16>(kv, op);
}

template <typename Op>
cudaError_t dispatch_attention(int head_dim, DType q, DType kv, const Op& op) {
#define FI_CORE_CASE(D) \
  if (head_dim == D) return dispatch_q_dtype<D>(q, kv, op);
  FI_CORE_FOR_EACH_HEAD_DIM(FI_CORE_CASE)
#undef FI_CORE_CASE
  return cudaErrorInvalidValue;
}

// Calls op.template call<D>() for the element dtype D of a per-token operator (norms,
// activations, RoPE); the caller has validated it.
// `fn` receives the dtype as a std::integral_constant<DType, D>.
template <typename Fn>
cudaError_t dispatch_float_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat16: return fn(std::integral_constant<DType, DType::kFloat16>{});
    case DType::kBFloat16: return fn(std::integral_constant<DType, DType::kBFloat16>{});
    case DType::kFloat32: return fn(std::integral_constant<DType, DType::kFloat32>{});
    default: return cudaErrorInvalidValue;
  }
}

// Runs `fn` with `device` current, restoring the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) == cudaSuccess && previous_ != device)
      switched_ = cudaSetDevice(device) == cudaSuccess;
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool switched_ = false;
};

// A CUDA failure as a Status; clears the (non-sticky) error so none is left set.
inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  cudaGetLastError();
  return Status{StatusCode::kCudaError, std::string(what) + ": CUDA error " + cudaGetErrorName(err) +
                                            ": " + cudaGetErrorString(err)};
}

}  // namespace detail
}  // namespace fi_core

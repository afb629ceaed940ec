// Shared pieces of the nanobind bindings: DLPack arrays -> fi_core::TensorView, Status -> Python
// exceptions, launching without the GIL. Each kernel family binds itself in its own *_ext.cpp.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "fi_core/api.h"

namespace fi_core_bindings {

namespace nb = nanobind;
using namespace nb::literals;

// Any DLPack array. Read-only is requested so that frameworks which flag their exports read-only
// (JAX) are accepted; the host API writes only to the output arrays it is handed.
using Array = nb::ndarray<nb::ro>;
using OptionalArray = std::optional<Array>;

inline fi_core::DType to_dtype(nb::dlpack::dtype dt) {
  using Code = nb::dlpack::dtype_code;
  using fi_core::DType;
  if (dt.lanes != 1) return DType::kOther;
  switch (Code(dt.code)) {
    case Code::Float:
      return dt.bits == 16 ? DType::kFloat16
             : dt.bits == 32 ? DType::kFloat32
             : dt.bits == 64 ? DType::kFloat64
                             : DType::kOther;
    case Code::Bfloat: return dt.bits == 16 ? DType::kBFloat16 : DType::kOther;
    case Code::Float8_E4M3FN: return DType::kFloat8E4M3;
    case Code::Float8_E5M2: return DType::kFloat8E5M2;
    case Code::Int:
      return dt.bits == 8 ? DType::kInt8
             : dt.bits == 16 ? DType::kInt16
             : dt.bits == 32 ? DType::kInt32
             : dt.bits == 64 ? DType::kInt64
                             : DType::kOther;
    case Code::UInt: return dt.bits == 8 ? DType::kUInt8 : DType::kOther;
    case Code::Bool: return DType::kBool;
    default: return DType::kOther;
  }
}

// A dtype by name (the Python layer spells framework dtypes this way); kOther when unknown.
inline fi_core::DType dtype_from_name(const std::string& name) {
  for (int d = 0; d < int(fi_core::DType::kOther); ++d)
    if (name == fi_core::dtype_name(fi_core::DType(d))) return fi_core::DType(d);
  return fi_core::DType::kOther;
}

inline fi_core::TensorView view(const OptionalArray& a, const char* name) {
  fi_core::TensorView t;
  if (!a) return t;
  if (a->ndim() > size_t(fi_core::kMaxTensorDims))
    throw nb::value_error((std::string(name) + ": expected at most " +
                           std::to_string(fi_core::kMaxTensorDims) + " dimensions, got " +
                           std::to_string(a->ndim())).c_str());
  t.data = const_cast<void*>(a->data());
  t.dtype = to_dtype(a->dtype());
  t.device = a->device_type() == nb::device::cuda::value ? a->device_id() : -1;
  t.ndim = int(a->ndim());
  for (int i = 0; i < t.ndim; ++i) {
    t.shape[i] = int64_t(a->shape(i));
    t.strides[i] = a->stride(i);
  }
  return t;
}

// fp8 arrays arrive as uint8 views (not every framework exports fp8 through DLPack); the
// Python layer names their real dtype.
inline void reinterpret_fp8(fi_core::TensorView& t, const std::optional<std::string>& fp8_dtype) {
  if (!fp8_dtype || t.dtype != fi_core::DType::kUInt8) return;
  if (*fp8_dtype == "float8_e4m3fn") t.dtype = fi_core::DType::kFloat8E4M3;
  else if (*fp8_dtype == "float8_e5m2") t.dtype = fi_core::DType::kFloat8E5M2;
}

inline void throw_if_error(const fi_core::Status& st) {
  switch (st.code) {
    case fi_core::StatusCode::kOk: return;
    case fi_core::StatusCode::kTypeError: throw nb::type_error(st.message.c_str());
    case fi_core::StatusCode::kValueError: throw nb::value_error(st.message.c_str());
    default: throw std::runtime_error(st.message);
  }
}

// Launches are asynchronous; `synchronize` waits for the stream (for callers such as JAX that
// cannot order work on an external stream). Runs without the GIL; errors are raised after.
inline fi_core::Status launch_and_wait(const std::function<fi_core::Status()>& launch, uintptr_t stream,
                                bool synchronize) {
  nb::gil_scoped_release release;
  fi_core::Status st = launch();
  if (st.ok() && synchronize) {
    cudaError_t err = cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream));
    if (err != cudaSuccess) {
      cudaGetLastError();
      st = {fi_core::StatusCode::kCudaError,
            std::string("CUDA error ") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err)};
    }
  }
  return st;
}

inline cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

void bind_decode(nb::module_& m);
void bind_ops(nb::module_& m);
void bind_sampling(nb::module_& m);
void bind_page(nb::module_& m);
void bind_cascade(nb::module_& m);
void bind_prefill(nb::module_& m);

}  // namespace fi_core_bindings

// fi_core host API, core types: TensorView (a DLPack-like, non-owning view with element strides),
// dtypes and Status. Every entry point validates its arguments before launching anything and
// reports problems through a Status whose message names the argument, what was expected and
// what was given.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fi_core {

enum class DType : int32_t {
  kFloat16,
  kBFloat16,
  kFloat32,
  kFloat64,
  kFloat8E4M3,  // e4m3fn
  kFloat8E5M2,
  kInt8,
  kUInt8,
  kInt16,
  kInt32,
  kInt64,
  kBool,
  kOther,
};
const char* dtype_name(DType dtype);

enum class KVLayout : int32_t { kNHD = 0, kHND = 1 };
enum class PosEncodingMode : int32_t { kNone = 0, kRoPELlama = 1, kALiBi = 2 };

constexpr int kMaxTensorDims = 8;

// A non-owning view of an array. Shape and strides count elements. `device` is the CUDA device
// ordinal, or -1 for memory that is not on a CUDA device. A view with ndim == 0 is "absent".
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kOther;
  int device = -1;
  int ndim = 0;
  int64_t shape[kMaxTensorDims] = {};
  int64_t strides[kMaxTensorDims] = {};

  bool present() const { return ndim > 0; }
  int64_t numel() const;
};

enum class StatusCode : int32_t {
  kOk = 0,
  kTypeError,   // wrong kind of array: host memory, wrong dtype
  kValueError,  // wrong shape, stride, device, option value, or a configuration not in this build
  kCudaError,   // the CUDA runtime reported an error
};

struct Status {
  StatusCode code = StatusCode::kOk;
  std::string message;

  bool ok() const { return code == StatusCode::kOk; }
  static Status Ok() { return {}; }
};

// ---------------------------------------------------------------------------------------------
// What this build contains.
struct BuildInfo {
  std::string version;
  std::vector<std::string> cuda_archs;  // e.g. "80", "90a"
  std::vector<int> head_dims;
  std::vector<std::string> q_dtypes;
  std::vector<std::string> kv_dtypes;
  std::string cuda_version;     // nvcc that built the kernels
  std::string cutlass_version;  // CuTe/CUTLASS headers compiled into the build
  std::string cutlass_source;   // where they came from
};
BuildInfo build_info();

// Number of visible CUDA devices; 0 when there is no driver or GPU.
int cuda_device_count();

}  // namespace fi_core

// Host-side facts about a kernel that depend only on the device (resident CTAs per SM, the opt-in
// to large dynamic shared memory): computed once per device instead of on every plan or launch,
// where the CUDA queries would cost microseconds of host time.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

namespace flashinfer {

// One positive int per device; 0 until computed. Declare it `static` next to the kernel it
// describes: each kernel has its own.
class PerDeviceValue {
 public:
  // The value for `device`, from compute(int* value) the first time.
  template <typename Compute>
  cudaError_t get(int device, int* value, Compute&& compute) {
    const bool cacheable = device >= 0 && device < kMaxDevices;
    if (cacheable && (*value = values_[device].load()) > 0) return cudaSuccess;
    const cudaError_t err = compute(value);
    if (err == cudaSuccess && cacheable && *value > 0) values_[device].store(*value);
    return err;
  }

 private:
  static constexpr int kMaxDevices = 64;
  std::atomic<int> values_[kMaxDevices] = {};
};

// Lets `kernel` use `bytes` of dynamic shared memory on the current device (needed above 48 KB).
// The attribute belongs to the device that is current when it is set, so it is set once per
// device; `opted_in` is the kernel's own record.
template <typename Kernel>
cudaError_t allow_dynamic_smem(PerDeviceValue& opted_in, Kernel kernel, size_t bytes) {
  int device = 0, done = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  return opted_in.get(device, &done, [&](int* value) {
    *value = 1;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  });
}

}  // namespace flashinfer

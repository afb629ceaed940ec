// Where a batch plan's schedule lives in device memory (the caller's workspace), as the plan's
// upload (batch_plan.h) leaves it and the kernel bridges (batch_*_kernels.cuh) read it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fi_core {
namespace detail {

struct DeviceSchedule {
  const void* work = nullptr;             // grid columns (DecodeWork / PrefillWork)
  const int32_t* state_indptr = nullptr;  // partial states per request (decode) or query token (prefill)
  const int32_t* mask_indptr = nullptr;   // batch prefill with a custom mask: each request's first byte
  const int32_t* page_table = nullptr;    // paged KV
  float* partial_lse = nullptr;
  float* partial_o = nullptr;
  size_t workspace_bytes = 0;  // of the workspace the plan uses
};

}  // namespace detail
}  // namespace fi_core

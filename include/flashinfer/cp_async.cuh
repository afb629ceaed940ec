// Asynchronous global -> shared copies (cp.async, sm_80+): the copy is in flight while the
// issuing thread keeps computing, which is what keeps a memory-bound kernel's loads overlapped.
#pragma once

#include <cuda_runtime.h>

namespace flashinfer {
namespace cp_async {

// Copies kBytes (4, 8 or 16) from global to shared memory; with `valid` false the destination is
// zero-filled and nothing is read.
template <int kBytes>
__device__ __forceinline__ void copy(void* smem_dst, const void* global_src, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async moves 4, 8 or 16 bytes");
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? kBytes : 0;
  if constexpr (kBytes == 16) {
    // .cg: stream through L2 only; the KV cache is read once.
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src),
                 "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(global_src),
                 "n"(kBytes), "r"(src_bytes));
  }
}

__device__ __forceinline__ void commit_group() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace cp_async
}  // namespace flashinfer

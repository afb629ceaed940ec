// Row addressing shared by the row-wise operators (norms, gated activations): an array whose last
// dimension is contiguous, its leading dimensions collapsed to at most two strided levels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace flashinfer {

// Row r of `rows` rows starts at (r / inner_rows) * outer + (r % inner_rows) * inner elements:
// [rows, d] has inner_rows 1; [batch, heads, d] views (e.g. heads of a packed QKV buffer) have
// inner_rows = heads.
struct RowStrides {
  int64_t outer = 0, inner = 0;
};

__host__ __device__ __forceinline__ int64_t row_offset(uint32_t row, uint32_t inner_rows,
                                                       RowStrides s) {
  return int64_t(row / inner_rows) * s.outer + int64_t(row % inner_rows) * s.inner;
}

// Whether every row of an array of T starts 16-byte aligned (its base and both strides): checked
// once on the host, it lets a kernel use unconditional vector accesses.
template <typename T>
inline bool rows_aligned16(const T* base, RowStrides s) {
  constexpr int64_t kBytes = sizeof(T);
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && s.outer * kBytes % 16 == 0 &&
         s.inner * kBytes % 16 == 0;
}

}  // namespace flashinfer

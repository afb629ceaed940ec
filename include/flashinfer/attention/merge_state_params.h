// Parameters of the two-state merge (merge_state.cuh), in a plain C++ header so that host code
// compiled without nvcc can fill them directly.
#pragma once

#include <cstdint>

#include "../rows.cuh"

namespace flashinfer {
namespace attention {

// v arrays are [num_rows, num_heads, head_dim] with a contiguous head_dim, of the element type the
// kernel is instantiated for; s arrays are float32 [num_rows, num_heads]. The (row, head) pair
// r = row * num_heads + head starts at row_offset(r, num_heads, strides) elements.
struct MergeStateParams {
  const void* v_a;
  const float* s_a;
  const void* v_b;
  const float* s_b;
  void* v_out;   // may be v_a or v_b itself (in place)
  float* s_out;  // may be s_a or s_b itself
  const uint8_t* mask;  // optional [num_rows] (stride mask_stride): rows whose byte is 0 are not written
  int64_t mask_stride;
  RowStrides v_a_strides, s_a_strides, v_b_strides, s_b_strides, v_out_strides, s_out_strides;
  uint32_t num_pairs;  // num_rows * num_heads
  uint32_t num_heads, head_dim;
};

}  // namespace attention
}  // namespace flashinfer

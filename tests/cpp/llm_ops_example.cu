// Uses the per-token operators from C++ without Python: the host API (validated, dispatched over
// dtypes; link libfi_core_kernels.a) and the header templates directly.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "fi_core/api.h"
#include "flashinfer/activation.cuh"
#include "flashinfer/norm.cuh"
#include "flashinfer/rope.cuh"

namespace {

fi_core::TensorView view(void* data, fi_core::DType dtype, std::initializer_list<int64_t> shape) {
  fi_core::TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = 0;
  t.ndim = int(shape.size());
  int i = 0;
  for (int64_t n : shape) t.shape[i++] = n;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) t.strides[d] = stride, stride *= t.shape[d];
  return t;
}

}  // namespace

// Host API: one decoder layer's per-token work for `tokens` tokens of a bf16 model.
fi_core::Status layer_ops_with_host_api(void* hidden, void* residual, void* norm_weight, void* gate_up,
                                        void* act_out, void* q, void* k, void* positions, int tokens,
                                        cudaStream_t stream) {
  using fi_core::DType;
  fi_core::FusedAddRMSNormArgs norm;
  norm.input = view(hidden, DType::kBFloat16, {tokens, 4096});
  norm.residual = view(residual, DType::kBFloat16, {tokens, 4096});
  norm.weight = view(norm_weight, DType::kBFloat16, {4096});
  fi_core::Status st = fi_core::fused_add_rmsnorm(norm, stream);
  if (!st.ok()) return st;

  fi_core::ActAndMulArgs act;
  act.input = view(gate_up, DType::kBFloat16, {tokens, 2 * 14336});
  act.out = view(act_out, DType::kBFloat16, {tokens, 14336});
  act.activation = fi_core::Activation::kSilu;
  st = fi_core::act_and_mul(act, stream);
  if (!st.ok()) return st;

  fi_core::RopeArgs rope;  // in place, Llama 3.1 scaling
  rope.q = rope.q_rope = view(q, DType::kBFloat16, {tokens, 32, 128});
  rope.k = rope.k_rope = view(k, DType::kBFloat16, {tokens, 8, 128});
  rope.pos_ids = view(positions, DType::kInt32, {tokens});
  rope.rope_scale = 8.f;
  rope.rope_theta = 5e5f;
  rope.llama31 = true;
  return fi_core::apply_rope(rope, stream);
}

// Header templates: the engine fills the parameter structs itself.
cudaError_t layer_ops_with_templates(__nv_bfloat16* hidden, __nv_bfloat16* residual,
                                     const __nv_bfloat16* weight, const __nv_bfloat16* gate_up,
                                     __nv_bfloat16* act_out, __nv_bfloat16* q, __nv_bfloat16* k,
                                     const int64_t* positions, uint32_t tokens, cudaStream_t stream) {
  flashinfer::norm::RMSNormParams<__nv_bfloat16> norm{};
  norm.input = hidden, norm.output = hidden, norm.residual = residual, norm.weight = weight;
  norm.input_strides = norm.output_strides = norm.residual_strides = {4096, 0};
  norm.num_rows = tokens, norm.inner_rows = 1, norm.hidden = 4096, norm.eps = 1e-6f;
  cudaError_t err = flashinfer::norm::RMSNorm(norm, stream);
  if (err != cudaSuccess) return err;

  flashinfer::activation::ActAndMulParams<__nv_bfloat16> act{};
  act.input = gate_up, act.output = act_out;
  act.input_strides = {2 * 14336, 0}, act.output_strides = {14336, 0};
  act.num_rows = tokens, act.inner_rows = 1, act.d = 14336;
  err = flashinfer::activation::ActAndMul<flashinfer::activation::GeluTanh>(act, stream);
  if (err != cudaSuccess) return err;

  using Rope = flashinfer::rope::ApplyRope<__nv_bfloat16, int64_t>;
  Rope::Params rope{};
  rope.q = rope.q_rope = q, rope.k = rope.k_rope = k;
  rope.q_stride_n = rope.q_rope_stride_n = 32 * 128, rope.q_stride_h = rope.q_rope_stride_h = 128;
  rope.k_stride_n = rope.k_rope_stride_n = 8 * 128, rope.k_stride_h = rope.k_rope_stride_h = 128;
  rope.nnz = tokens, rope.num_q_heads = 32, rope.num_k_heads = 8, rope.head_dim = 128, rope.rotary_dim = 128;
  rope.pos_ids = positions;
  flashinfer::rope::rope_frequencies(128, 1.f, 1e4f, nullptr, rope.freq);
  return Rope::run(rope, /*interleave=*/false, stream);
}

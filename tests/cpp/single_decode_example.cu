// Uses fi_core from C++ without Python, two ways: the host API (validated, dispatched over the
// compiled matrix; link libfi_core_kernels.a) and the header templates directly (any head dim,
// instantiated by the including engine).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>

#include "fi_core/api.h"
#include "flashinfer/attention/single_decode.cuh"

// Host API: q [32, 128] bf16, k/v [kv_len, 8, 128] bf16 in NHD, all device pointers.
fi_core::Status decode_with_host_api(void* q, void* k, void* v, void* out, void* workspace,
                                     size_t workspace_bytes, int kv_len, cudaStream_t stream) {
  auto view = [](void* data, fi_core::DType dtype, std::initializer_list<int64_t> shape) {
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
  };
  fi_core::SingleDecodeArgs args;
  args.q = view(q, fi_core::DType::kBFloat16, {32, 128});
  args.k = view(k, fi_core::DType::kBFloat16, {kv_len, 8, 128});
  args.v = view(v, fi_core::DType::kBFloat16, {kv_len, 8, 128});
  args.out = view(out, fi_core::DType::kBFloat16, {32, 128});
  args.workspace = view(workspace, fi_core::DType::kUInt8, {int64_t(workspace_bytes)});
  fi_core::SingleDecodePlanInfo plan;
  fi_core::Status st = fi_core::plan_single_decode(args, &plan);
  if (!st.ok()) return st;
  if (plan.workspace_bytes > workspace_bytes) {
    std::fprintf(stderr, "need %zu bytes of workspace\n", plan.workspace_bytes);
  }
  return fi_core::single_decode(args, stream);
}

// Header templates: the engine owns the plan and the scratch buffer.
cudaError_t decode_with_templates(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                  __nv_bfloat16* out, float* scratch, uint32_t kv_len, cudaStream_t stream) {
  using Decode = flashinfer::attention::SingleDecode<128, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16>;
  Decode::Params p{};
  p.q = q, p.k = k, p.v = v, p.o = out;
  p.q_stride_h = 128, p.o_stride_h = 128;
  p.k_stride_n = p.v_stride_n = 8 * 128;
  p.k_stride_h = p.v_stride_h = 128;
  p.kv_len = kv_len, p.num_qo_heads = 32, p.num_kv_heads = 8;
  p.window_left = -1;
  p.logits = flashinfer::attention::LogitsVariant::make(0.08838834764f, 0.f, false);
  p.apply_rope = false;
  p.v_scale = 1.f;
  Decode::Plan plan;
  cudaError_t err = Decode::plan(p, 0, /*use_tensor_cores=*/-1, &plan);
  if (err != cudaSuccess) return err;
  return Decode::run(p, plan, scratch, stream);
}

// Bindings: decode attention.
#include "common.h"

namespace fi_core_bindings {
namespace {

fi_core::SingleDecodeArgs single_decode_args(
    const OptionalArray& q, const OptionalArray& k, const OptionalArray& v, const OptionalArray& out,
    const OptionalArray& lse, const OptionalArray& workspace, const std::optional<std::string>& kv_fp8_dtype,
    int kv_layout, int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
    float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale) {
  fi_core::SingleDecodeArgs a;
  a.q = view(q, "q");
  a.k = view(k, "k");
  a.v = view(v, "v");
  reinterpret_fp8(a.k, kv_fp8_dtype);
  reinterpret_fp8(a.v, kv_fp8_dtype);
  a.out = view(out, "out");
  a.lse = view(lse, "lse");
  a.workspace = view(workspace, "workspace");
  a.kv_layout = fi_core::KVLayout(kv_layout);
  a.pos_encoding_mode = fi_core::PosEncodingMode(pos_encoding_mode);
  a.window_left = window_left;
  a.logits_soft_cap = logits_soft_cap;
  a.sm_scale = sm_scale;
  a.rope_scale = rope_scale;
  a.rope_theta = rope_theta;
  a.q_scale = q_scale;
  a.k_scale = k_scale;
  a.v_scale = v_scale;
  return a;
}

}  // namespace

void bind_decode(nb::module_& m) {
#define FI_CORE_SINGLE_DECODE_ARGS                                                             \
  "q"_a.none(), "k"_a.none(), "v"_a.none(), "out"_a.none(), "lse"_a.none(), "workspace"_a.none(), \
      "kv_fp8_dtype"_a.none(), "kv_layout"_a, "pos_encoding_mode"_a, "window_left"_a,           \
      "logits_soft_cap"_a, "sm_scale"_a, "rope_scale"_a, "rope_theta"_a, "q_scale"_a,            \
      "k_scale"_a, "v_scale"_a

  m.def(
      "plan_single_decode",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         OptionalArray workspace, std::optional<std::string> kv_fp8_dtype, int kv_layout,
         int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
         float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale) {
        const auto args = single_decode_args(q, k, v, out, lse, workspace, kv_fp8_dtype, kv_layout,
                                             pos_encoding_mode, window_left, logits_soft_cap,
                                             sm_scale, rope_scale, rope_theta, q_scale, k_scale, v_scale);
        fi_core::SingleDecodePlanInfo plan;
        throw_if_error(fi_core::plan_single_decode(args, &plan));
        return std::make_tuple(plan.num_chunks, plan.chunk_len, plan.workspace_bytes);
      },
      FI_CORE_SINGLE_DECODE_ARGS,
      "Validates a single-decode call; returns (num_chunks, chunk_len, workspace_bytes).");

  m.def(
      "single_decode",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         OptionalArray workspace, std::optional<std::string> kv_fp8_dtype, int kv_layout,
         int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
         float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale,
         uintptr_t stream, bool synchronize) {
        const auto args = single_decode_args(q, k, v, out, lse, workspace, kv_fp8_dtype, kv_layout,
                                             pos_encoding_mode, window_left, logits_soft_cap,
                                             sm_scale, rope_scale, rope_theta, q_scale, k_scale, v_scale);
        throw_if_error(launch_and_wait(
            [&] { return fi_core::single_decode(args, as_stream(stream)); },
            stream, synchronize));
      },
      FI_CORE_SINGLE_DECODE_ARGS, "stream"_a, "synchronize"_a,
      "Launches single-request decode on `stream` (a cudaStream_t as an integer).");
#undef FI_CORE_SINGLE_DECODE_ARGS
}

}  // namespace fi_core_bindings

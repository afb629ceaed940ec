// Bindings: prefill attention.
#include "common.h"

namespace fi_core_bindings {

void bind_prefill(nb::module_& m) {
  m.def(
      "single_prefill",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         std::optional<std::string> kv_fp8_dtype, bool causal, int kv_layout, int pos_encoding_mode,
         int window_left, float logits_soft_cap, float sm_scale, float rope_scale, float rope_theta,
         uintptr_t stream, bool synchronize) {
        fi_core::SinglePrefillArgs a;
        a.q = view(q, "q");
        a.k = view(k, "k");
        a.v = view(v, "v");
        reinterpret_fp8(a.k, kv_fp8_dtype);
        reinterpret_fp8(a.v, kv_fp8_dtype);
        a.out = view(out, "out");
        a.lse = view(lse, "lse");
        a.causal = causal;
        a.kv_layout = fi_core::KVLayout(kv_layout);
        a.pos_encoding_mode = fi_core::PosEncodingMode(pos_encoding_mode);
        a.window_left = window_left;
        a.logits_soft_cap = logits_soft_cap;
        a.sm_scale = sm_scale;
        a.rope_scale = rope_scale;
        a.rope_theta = rope_theta;
        throw_if_error(launch_and_wait([&] { return fi_core::single_prefill(a, as_stream(stream)); },
                                       stream, synchronize));
      },
      "q"_a.none(), "k"_a.none(), "v"_a.none(), "out"_a.none(), "lse"_a.none(), "kv_fp8_dtype"_a.none(),
      "causal"_a, "kv_layout"_a, "pos_encoding_mode"_a, "window_left"_a, "logits_soft_cap"_a,
      "sm_scale"_a, "rope_scale"_a, "rope_theta"_a, "stream"_a, "synchronize"_a,
      "Launches single-request prefill on `stream` (a cudaStream_t as an integer).");
}

}  // namespace fi_core_bindings

// Bindings: RMSNorm, gated activations, RoPE.
#include "common.h"

namespace fi_core_bindings {

void bind_ops(nb::module_& m) {
  m.def(
      "rmsnorm",
      [](OptionalArray input, OptionalArray weight, OptionalArray out, float eps, bool gemma,
         uintptr_t stream, bool synchronize) {
        fi_core::RMSNormArgs args;
        args.input = view(input, "input");
        args.weight = view(weight, "weight");
        args.out = view(out, "out");
        args.eps = eps;
        args.gemma = gemma;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::rmsnorm(args, as_stream(stream)); }, stream,
            synchronize));
      },
      "input"_a.none(), "weight"_a.none(), "out"_a.none(), "eps"_a, "gemma"_a, "stream"_a,
      "synchronize"_a, "out = RMSNorm(input) * weight (gemma: * (1 + weight)), launched on `stream`.");

  m.def(
      "fused_add_rmsnorm",
      [](OptionalArray input, OptionalArray residual, OptionalArray weight, float eps, bool gemma,
         uintptr_t stream, bool synchronize) {
        fi_core::FusedAddRMSNormArgs args;
        args.input = view(input, "input");
        args.residual = view(residual, "residual");
        args.weight = view(weight, "weight");
        args.eps = eps;
        args.gemma = gemma;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::fused_add_rmsnorm(args, as_stream(stream)); },
            stream, synchronize));
      },
      "input"_a.none(), "residual"_a.none(), "weight"_a.none(), "eps"_a, "gemma"_a, "stream"_a,
      "synchronize"_a, "In place: residual += input, input = RMSNorm(residual) * weight.");

  m.def(
      "act_and_mul",
      [](OptionalArray input, OptionalArray out, int activation, uintptr_t stream, bool synchronize) {
        fi_core::ActAndMulArgs args;
        args.input = view(input, "input");
        args.out = view(out, "out");
        args.activation = fi_core::Activation(activation);
        throw_if_error(launch_and_wait(
            [&] { return fi_core::act_and_mul(args, as_stream(stream)); }, stream,
            synchronize));
      },
      "input"_a.none(), "out"_a.none(), "activation"_a, "stream"_a, "synchronize"_a,
      "out = act(input[..., :d]) * input[..., d:] (activation 0 silu, 1 gelu, 2 gelu_tanh).");

  m.def(
      "apply_rope",
      [](OptionalArray q, OptionalArray k, OptionalArray q_rope, OptionalArray k_rope,
         OptionalArray pos_ids, OptionalArray indptr, OptionalArray offsets,
         OptionalArray cos_sin_cache, int64_t head_size, int32_t rotary_dim, bool interleave,
         float rope_scale, float rope_theta, bool llama31, float low_freq_factor,
         float high_freq_factor, float old_context_len, uintptr_t stream, bool synchronize) {
        fi_core::RopeArgs args;
        args.q = view(q, "q");
        args.k = view(k, "k");
        args.q_rope = view(q_rope, "q_rope");
        args.k_rope = view(k_rope, "k_rope");
        args.pos_ids = view(pos_ids, "pos_ids");
        args.indptr = view(indptr, "indptr");
        args.offsets = view(offsets, "offsets");
        args.cos_sin_cache = view(cos_sin_cache, "cos_sin_cache");
        args.head_size = head_size;
        args.rotary_dim = rotary_dim;
        args.interleave = interleave;
        args.rope_scale = rope_scale;
        args.rope_theta = rope_theta;
        args.llama31 = llama31;
        args.low_freq_factor = low_freq_factor;
        args.high_freq_factor = high_freq_factor;
        args.old_context_len = old_context_len;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::apply_rope(args, as_stream(stream)); }, stream,
            synchronize));
      },
      "q"_a.none(), "k"_a.none(), "q_rope"_a.none(), "k_rope"_a.none(), "pos_ids"_a.none(),
      "indptr"_a.none(), "offsets"_a.none(), "cos_sin_cache"_a.none(), "head_size"_a,
      "rotary_dim"_a, "interleave"_a, "rope_scale"_a, "rope_theta"_a, "llama31"_a,
      "low_freq_factor"_a, "high_freq_factor"_a, "old_context_len"_a, "stream"_a, "synchronize"_a,
      "Rotary embedding of q and k into q_rope and k_rope (which may be q and k), on `stream`.");
}

}  // namespace fi_core_bindings

// Bindings: sorting-free sampling.
#include "common.h"

namespace fi_core_bindings {

void bind_sampling(nb::module_& m) {
  m.def(
      "sampling_from_probs",
      [](OptionalArray probs, OptionalArray samples, OptionalArray indices, bool use_top_k,
         OptionalArray top_k, int32_t top_k_val, bool use_top_p, OptionalArray top_p,
         float top_p_val, bool use_min_p, OptionalArray min_p, float min_p_val, bool top_k_first,
         uint64_t seed, uint64_t offset, uintptr_t stream, bool synchronize) {
        fi_core::SamplingArgs args;
        args.probs = view(probs, "probs");
        args.samples = view(samples, "samples");
        args.indices = view(indices, "indices");
        args.use_top_k = use_top_k;
        args.top_k = view(top_k, "top_k");
        args.top_k_val = top_k_val;
        args.use_top_p = use_top_p;
        args.top_p = view(top_p, "top_p");
        args.top_p_val = top_p_val;
        args.use_min_p = use_min_p;
        args.min_p = view(min_p, "min_p");
        args.min_p_val = min_p_val;
        args.top_k_first = top_k_first;
        args.seed = seed;
        args.offset = offset;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::sampling_from_probs(args, as_stream(stream)); },
            stream, synchronize));
      },
      "probs"_a.none(), "samples"_a.none(), "indices"_a.none(), "use_top_k"_a, "top_k"_a.none(),
      "top_k_val"_a, "use_top_p"_a, "top_p"_a.none(), "top_p_val"_a, "use_min_p"_a,
      "min_p"_a.none(), "min_p_val"_a, "top_k_first"_a, "seed"_a, "offset"_a, "stream"_a,
      "synchronize"_a, "samples[i] ~ probs[indices[i] or i] after the enabled filters, on `stream`.");

  m.def(
      "renorm_probs",
      [](OptionalArray probs, OptionalArray out, bool use_top_k, OptionalArray top_k,
         int32_t top_k_val, bool use_top_p, OptionalArray top_p, float top_p_val, uintptr_t stream,
         bool synchronize) {
        fi_core::RenormProbsArgs args;
        args.probs = view(probs, "probs");
        args.out = view(out, "out");
        args.use_top_k = use_top_k;
        args.top_k = view(top_k, "top_k");
        args.top_k_val = top_k_val;
        args.use_top_p = use_top_p;
        args.top_p = view(top_p, "top_p");
        args.top_p_val = top_p_val;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::renorm_probs(args, as_stream(stream)); },
            stream, synchronize));
      },
      "probs"_a.none(), "out"_a.none(), "use_top_k"_a, "top_k"_a.none(), "top_k_val"_a,
      "use_top_p"_a, "top_p"_a.none(), "top_p_val"_a, "stream"_a, "synchronize"_a,
      "out = probs restricted to the top-k or top-p set, renormalized, on `stream`.");
}

}  // namespace fi_core_bindings

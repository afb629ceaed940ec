// Bindings: sorting-free sampling, renormalization, top-k masking and speculative sampling.
#include "common.h"

namespace fi_core_bindings {

void bind_sampling(nb::module_& m) {
  m.def(
      "sampling_from_probs",
      [](OptionalArray input, bool from_logits, OptionalArray samples, OptionalArray indices, bool use_top_k,
         OptionalArray top_k, int32_t top_k_val, bool use_top_p, OptionalArray top_p,
         float top_p_val, bool use_min_p, OptionalArray min_p, float min_p_val, bool top_k_first,
         uint64_t seed, uint64_t offset, uintptr_t stream, bool synchronize) {
        fi_core::SamplingArgs args;
        args.input = view(input, from_logits ? "logits" : "probs");
        args.from_logits = from_logits;
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
      "input"_a.none(), "from_logits"_a, "samples"_a.none(), "indices"_a.none(), "use_top_k"_a, "top_k"_a.none(),
      "top_k_val"_a, "use_top_p"_a, "top_p"_a.none(), "top_p_val"_a, "use_min_p"_a,
      "min_p"_a.none(), "min_p_val"_a, "top_k_first"_a, "seed"_a, "offset"_a, "stream"_a,
      "synchronize"_a,
      "samples[i] ~ input[indices[i] or i] (probabilities, or the softmax of logits) after the enabled "
      "filters, on `stream`.");

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

  m.def(
      "top_k_mask_logits",
      [](OptionalArray logits, OptionalArray out, OptionalArray top_k, int32_t top_k_val, uintptr_t stream,
         bool synchronize) {
        fi_core::MaskLogitsArgs args;
        args.logits = view(logits, "logits");
        args.out = view(out, "out");
        args.top_k = view(top_k, "top_k");
        args.top_k_val = top_k_val;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::top_k_mask_logits(args, as_stream(stream)); }, stream, synchronize));
      },
      "logits"_a.none(), "out"_a.none(), "top_k"_a.none(), "top_k_val"_a, "stream"_a, "synchronize"_a,
      "out = logits on each row's top-k set, -inf elsewhere, on `stream`.");

  m.def(
      "chain_speculative_sampling",
      [](OptionalArray draft_probs, OptionalArray draft_token_ids, OptionalArray target_probs,
         OptionalArray output_token_ids, OptionalArray accepted, OptionalArray emitted, bool add_to_accepted,
         bool add_to_emitted, uint64_t seed, uint64_t offset, uintptr_t stream, bool synchronize) {
        fi_core::SpeculativeArgs args;
        args.draft_probs = view(draft_probs, "draft_probs");
        args.draft_token_ids = view(draft_token_ids, "draft_token_ids");
        args.target_probs = view(target_probs, "target_probs");
        args.output_token_ids = view(output_token_ids, "output_token_ids");
        args.accepted_token_num = view(accepted, "maybe_output_accepted_token_num");
        args.emitted_draft_token_num = view(emitted, "maybe_output_emitted_draft_token_num");
        args.add_to_accepted = add_to_accepted;
        args.add_to_emitted = add_to_emitted;
        args.seed = seed;
        args.offset = offset;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::chain_speculative_sampling(args, as_stream(stream)); }, stream, synchronize));
      },
      "draft_probs"_a.none(), "draft_token_ids"_a.none(), "target_probs"_a.none(),
      "output_token_ids"_a.none(), "accepted_token_num"_a.none(), "emitted_draft_token_num"_a.none(),
      "add_to_accepted"_a, "add_to_emitted"_a, "seed"_a, "offset"_a, "stream"_a, "synchronize"_a,
      "Chain speculative sampling: output_token_ids and the counts (added to or stored), on `stream`.");
}

}  // namespace fi_core_bindings

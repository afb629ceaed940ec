// Bindings: merging attention states.
#include "common.h"

namespace fi_core_bindings {

void bind_cascade(nb::module_& m) {
  m.def(
      "merge_state",
      [](OptionalArray v_a, OptionalArray s_a, OptionalArray v_b, OptionalArray s_b, OptionalArray out,
         OptionalArray lse, uintptr_t stream, bool synchronize) {
        fi_core::MergeStateArgs args;
        args.v_a = view(v_a, "v_a");
        args.s_a = view(s_a, "s_a");
        args.v_b = view(v_b, "v_b");
        args.s_b = view(s_b, "s_b");
        args.out = view(out, "out");
        args.lse = view(lse, "lse");
        throw_if_error(launch_and_wait(
            [&] { return fi_core::merge_state(args, as_stream(stream)); }, stream, synchronize));
      },
      "v_a"_a.none(), "s_a"_a.none(), "v_b"_a.none(), "s_b"_a.none(), "out"_a.none(), "lse"_a.none(),
      "stream"_a, "synchronize"_a, "(out, lse) = the merge of states (v_a, s_a) and (v_b, s_b).");

  m.def(
      "merge_state_in_place",
      [](OptionalArray v, OptionalArray s, OptionalArray v_other, OptionalArray s_other,
         OptionalArray mask, uintptr_t stream, bool synchronize) {
        fi_core::MergeStateInPlaceArgs args;
        args.v = view(v, "v");
        args.s = view(s, "s");
        args.v_other = view(v_other, "v_other");
        args.s_other = view(s_other, "s_other");
        args.mask = view(mask, "mask");
        throw_if_error(launch_and_wait(
            [&] { return fi_core::merge_state_in_place(args, as_stream(stream)); }, stream, synchronize));
      },
      "v"_a.none(), "s"_a.none(), "v_other"_a.none(), "s_other"_a.none(), "mask"_a.none(), "stream"_a,
      "synchronize"_a, "(v, s) = the merge of (v, s) and (v_other, s_other), in place, where mask allows.");

  m.def(
      "merge_states",
      [](OptionalArray v, OptionalArray s, OptionalArray out, OptionalArray lse, uintptr_t stream,
         bool synchronize) {
        fi_core::MergeStatesArgs args;
        args.v = view(v, "v");
        args.s = view(s, "s");
        args.out = view(out, "out");
        args.lse = view(lse, "lse");
        throw_if_error(launch_and_wait(
            [&] { return fi_core::merge_states(args, as_stream(stream)); }, stream, synchronize));
      },
      "v"_a.none(), "s"_a.none(), "out"_a.none(), "lse"_a.none(), "stream"_a, "synchronize"_a,
      "(out, lse) = the merge of the num_states states of each row of (v, s).");
}

}  // namespace fi_core_bindings

// Bindings: bit packing (packbits, segment_packbits).
#include "common.h"

namespace fi_core_bindings {

void bind_quantization(nb::module_& m) {
  m.def(
      "packbits",
      [](OptionalArray x, OptionalArray out, int bitorder, uintptr_t stream, bool synchronize) {
        fi_core::PackbitsArgs args;
        args.x = view(x, "x");
        args.out = view(out, "out");
        args.bitorder = fi_core::BitOrder(bitorder);
        throw_if_error(launch_and_wait([&] { return fi_core::packbits(args, as_stream(stream)); }, stream,
                                       synchronize));
      },
      "x"_a.none(), "out"_a.none(), "bitorder"_a, "stream"_a, "synchronize"_a,
      "Packs x (1-D, nonzero = 1) into out (uint8 [(len(x) + 7) // 8]); bitorder 0 = big, 1 = little.");

  m.def(
      "plan_segment_packbits",
      [](OptionalArray x, OptionalArray indptr, OptionalArray new_indptr) {
        throw_if_error(fi_core::plan_segment_packbits(view(x, "x"), view(indptr, "indptr"),
                                                      view(new_indptr, "new_indptr")));
      },
      "x"_a.none(), "indptr"_a.none(), "new_indptr"_a.none(),
      "Checks x and the host indptr and writes the packed offsets into new_indptr (host int32).");

  m.def(
      "segment_packbits",
      [](OptionalArray x, OptionalArray indptr, OptionalArray segments, OptionalArray out, int bitorder,
         uintptr_t stream, bool synchronize) {
        fi_core::SegmentPackbitsArgs args;
        args.x = view(x, "x");
        args.indptr = view(indptr, "indptr");
        args.segments = view(segments, "segments");
        args.out = view(out, "out");
        args.bitorder = fi_core::BitOrder(bitorder);
        throw_if_error(launch_and_wait([&] { return fi_core::segment_packbits(args, as_stream(stream)); }, stream,
                                       synchronize));
      },
      "x"_a.none(), "indptr"_a.none(), "segments"_a.none(), "out"_a.none(), "bitorder"_a, "stream"_a,
      "synchronize"_a,
      "Packs each segment x[indptr[s]:indptr[s + 1]] (host indptr) on its own into out; segments (device int32 "
      "[2, batch_size + 1]) receives indptr and the packed offsets.");
}

}  // namespace fi_core_bindings

// Bindings: paged KV-cache management.
#include "common.h"

namespace fi_core_bindings {

void bind_page(nb::module_& m) {
  m.def(
      "append_paged_kv_cache",
      [](OptionalArray append_key, OptionalArray append_value, OptionalArray batch_indices,
         OptionalArray positions, OptionalArray paged_kv_cache, OptionalArray k_cache,
         OptionalArray v_cache, OptionalArray kv_indices, OptionalArray kv_indptr,
         OptionalArray kv_last_page_len, int kv_layout, std::optional<std::string> append_fp8_dtype,
         std::optional<std::string> cache_fp8_dtype, uintptr_t stream, bool synchronize) {
        fi_core::AppendPagedKVCacheArgs args;
        args.append_key = view(append_key, "append_key");
        args.append_value = view(append_value, "append_value");
        args.paged_kv_cache = view(paged_kv_cache, "paged_kv_cache");
        args.k_cache = view(k_cache, "k_cache");
        args.v_cache = view(v_cache, "v_cache");
        for (fi_core::TensorView* t : {&args.append_key, &args.append_value}) reinterpret_fp8(*t, append_fp8_dtype);
        for (fi_core::TensorView* t : {&args.paged_kv_cache, &args.k_cache, &args.v_cache})
          reinterpret_fp8(*t, cache_fp8_dtype);
        args.batch_indices = view(batch_indices, "batch_indices");
        args.positions = view(positions, "positions");
        args.kv_indices = view(kv_indices, "kv_indices");
        args.kv_indptr = view(kv_indptr, "kv_indptr");
        args.kv_last_page_len = view(kv_last_page_len, "kv_last_page_len");
        args.kv_layout = fi_core::KVLayout(kv_layout);
        throw_if_error(launch_and_wait(
            [&] { return fi_core::append_paged_kv_cache(args, as_stream(stream)); }, stream, synchronize));
      },
      "append_key"_a.none(), "append_value"_a.none(), "batch_indices"_a.none(), "positions"_a.none(),
      "paged_kv_cache"_a.none(), "k_cache"_a.none(), "v_cache"_a.none(), "kv_indices"_a.none(),
      "kv_indptr"_a.none(), "kv_last_page_len"_a.none(), "kv_layout"_a, "append_fp8_dtype"_a.none(),
      "cache_fp8_dtype"_a.none(), "stream"_a, "synchronize"_a,
      "Writes the appended keys/values into their page slots (paged_kv_cache, or k_cache and v_cache); "
      "fp8 arrays come as uint8 views with their format named.");

  m.def(
      "get_batch_indices_positions",
      [](OptionalArray append_indptr, OptionalArray seq_lens, OptionalArray batch_indices,
         OptionalArray positions, int64_t nnz, uintptr_t stream, bool synchronize) {
        fi_core::BatchIndicesPositionsArgs args;
        args.append_indptr = view(append_indptr, "append_indptr");
        args.seq_lens = view(seq_lens, "seq_lens");
        args.batch_indices = view(batch_indices, "batch_indices");
        args.positions = view(positions, "positions");
        args.nnz = nnz;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::get_batch_indices_positions(args, as_stream(stream)); }, stream,
            synchronize));
      },
      "append_indptr"_a.none(), "seq_lens"_a.none(), "batch_indices"_a.none(), "positions"_a.none(),
      "nnz"_a, "stream"_a, "synchronize"_a, "Fills batch_indices and positions (int32 [nnz]) of a ragged batch.");

  m.def(
      "get_seq_lens",
      [](OptionalArray kv_indptr, OptionalArray kv_last_page_len, OptionalArray out, int64_t page_size,
         uintptr_t stream, bool synchronize) {
        fi_core::SeqLensArgs args;
        args.kv_indptr = view(kv_indptr, "kv_indptr");
        args.kv_last_page_len = view(kv_last_page_len, "kv_last_page_len");
        args.out = view(out, "out");
        args.page_size = page_size;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::get_seq_lens(args, as_stream(stream)); }, stream, synchronize));
      },
      "kv_indptr"_a.none(), "kv_last_page_len"_a.none(), "out"_a.none(), "page_size"_a, "stream"_a,
      "synchronize"_a, "Fills out (int32 [batch_size]) with the sequence lengths of a page table.");
}

}  // namespace fi_core_bindings

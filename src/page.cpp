// Host entry points of the paged KV-cache operators: validation, then launch.
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "fi_core/api.h"
#include "page_problem.h"

namespace fi_core {
namespace {

using flashinfer::page::IndexArray;
using flashinfer::page::PagedRows;
using flashinfer::page::TokenRows;

constexpr const char* kTokenDims = "[nnz, num_kv_heads, head_dim]";
constexpr int64_t kMaxLength = INT32_MAX;  // tokens, requests, page sizes: 32-bit in the kernels
constexpr std::initializer_list<DType> kIndexDTypes = {DType::kInt32, DType::kInt64};

std::vector<int64_t> shape_of(const TensorView& t) { return {t.shape, t.shape + t.ndim}; }

// `t` has `shape` and one of `dtypes`, a contiguous last dimension and the device of `ref`.
void check_array(Checker& c, const TensorView& t, const char* name, std::initializer_list<DType> dtypes,
                 const std::vector<int64_t>& shape, const char* dims, const TensorView& ref,
                 const char* ref_name) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, dtypes).shape(t, name, shape, dims);
  c.last_dim_contiguous(t, name).same_device(t, name, ref, ref_name);
}

// A 1-D array of `dtypes` on the device of `ref`, of any length; its length when valid, else -1.
int64_t check_vector(Checker& c, const TensorView& t, const char* name, std::initializer_list<DType> dtypes,
                     const char* dims, const TensorView& ref, const char* ref_name) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, dtypes).ndim(t, name, 1, dims);
  c.last_dim_contiguous(t, name).same_device(t, name, ref, ref_name);
  return c.ok() ? t.shape[0] : -1;
}

// The number of requests of an indptr array [batch_size + 1]; -1 when invalid.
int64_t check_indptr(Checker& c, const TensorView& t, const char* name, const TensorView& ref,
                     const char* ref_name) {
  const int64_t length = check_vector(c, t, name, kIndexDTypes, "[batch_size + 1]", ref, ref_name);
  c.require(length >= 1 && length <= kMaxLength, [&] {
    return std::string(name) + ": expected shape [batch_size + 1] with 1 to 2^31 - 1 entries, got " +
           shape_string(t);
  });
  return c.ok() ? length - 1 : -1;
}

IndexArray index_array(const TensorView& t) { return {t.data, t.dtype == DType::kInt64}; }

// Stride of dimension `dim` in bytes; 0 for a dimension of one element, whose stride means
// nothing (and must not narrow the kernel's accesses).
int64_t stride_bytes(const TensorView& t, int dim) {
  return t.shape[dim] > 1 ? t.strides[dim] * int64_t(dtype_size(t.dtype)) : 0;
}

TokenRows token_rows(const TensorView& t) {
  return {static_cast<const char*>(t.data), stride_bytes(t, 0), stride_bytes(t, 1)};
}

// Dimension of page slots and of heads in a 4-D cache view.
int slot_dim(KVLayout layout) { return layout == KVLayout::kNHD ? 1 : 2; }
int head_dim_of_cache(KVLayout layout) { return layout == KVLayout::kNHD ? 2 : 1; }

PagedRows paged_rows(const TensorView& t, KVLayout layout) {
  return {static_cast<char*>(t.data), stride_bytes(t, 0), stride_bytes(t, slot_dim(layout)),
          stride_bytes(t, head_dim_of_cache(layout))};
}

// paged_kv_cache[:, half] (0: keys, 1: values) as a 4-D cache view.
TensorView cache_half(const TensorView& kv, int half) {
  TensorView t;
  t.data = static_cast<char*>(kv.data) + half * kv.strides[1] * int64_t(dtype_size(kv.dtype));
  t.dtype = kv.dtype;
  t.device = kv.device;
  t.ndim = 4;
  for (int src = 0, dst = 0; src < 5; ++src) {
    if (src == 1) continue;
    t.shape[dst] = kv.shape[src];
    t.strides[dst] = kv.strides[src];
    ++dst;
  }
  return t;
}

// A cache array, `single` (paged_kv_cache: keys and values) or k_cache: its own number of pages
// and page size, the heads and head_dim of append_key.
void check_cache(Checker& c, const TensorView& cache, const char* name, bool single, KVLayout layout,
                 const TensorView& key) {
  const bool nhd = layout == KVLayout::kNHD;
  const char* dims = single ? (nhd ? "[num_pages, 2, page_size, num_kv_heads, head_dim] (NHD)"
                                   : "[num_pages, 2, num_kv_heads, page_size, head_dim] (HND)")
                            : (nhd ? "[num_pages, page_size, num_kv_heads, head_dim] (NHD)"
                                   : "[num_pages, num_kv_heads, page_size, head_dim] (HND)");
  const int ndim = single ? 5 : 4, skip = single ? 1 : 0;  // the halves' dimension comes first
  c.present(cache, name).on_cuda(cache, name).dtype_in(cache, name, {key.dtype});
  c.ndim(cache, name, ndim, dims);
  if (!c.ok()) return;
  std::vector<int64_t> expected = shape_of(cache);
  if (single) expected[1] = 2;
  expected[skip + head_dim_of_cache(layout)] = key.shape[1];
  expected[ndim - 1] = key.shape[2];
  check_array(c, cache, name, {key.dtype}, expected, dims, key, "append_key");
  const int64_t page_size = cache.shape[skip + slot_dim(layout)];
  c.require(page_size >= 1 && page_size <= kMaxLength, [&] {
    return std::string(name) + ": expected a page_size in [1, 2^31), got shape " + shape_string(cache);
  });
}

}  // namespace

Status append_paged_kv_cache(const AppendPagedKVCacheArgs& args, cudaStream_t stream) {
  Checker c;
  const TensorView& key = args.append_key;
  c.present(key, "append_key").on_cuda(key, "append_key");
  c.dtype_in(key, "append_key", {DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kFloat8E5M2});
  c.ndim(key, "append_key", 3, kTokenDims).last_dim_contiguous(key, "append_key");
  c.require(args.kv_layout == KVLayout::kNHD || args.kv_layout == KVLayout::kHND, [&] {
    return "kv_layout: expected NHD (0) or HND (1), got " + std::to_string(int(args.kv_layout));
  });
  if (!c.ok()) return c.status();
  const int64_t nnz = key.shape[0], heads = key.shape[1];
  const int64_t row_bytes = key.shape[2] * int64_t(dtype_size(key.dtype));
  check_array(c, args.append_value, "append_value", {key.dtype}, shape_of(key), kTokenDims, key, "append_key");
  c.require(nnz <= kMaxLength, [&] {
    return "append_key: expected fewer than 2^31 tokens, got " + std::to_string(nnz);
  });
  c.require(2 * heads * row_bytes <= kMaxLength, [&] {
    return "append_key: expected a token (keys and values of all heads) below 2 GiB, got shape " +
           shape_string(key);
  });

  const bool single = args.paged_kv_cache.present() || !args.k_cache.present();
  if (single) {
    c.require(!args.k_cache.present() && !args.v_cache.present(), [] {
      return std::string("k_cache, v_cache: expected None when paged_kv_cache is given, got arrays");
    });
    check_cache(c, args.paged_kv_cache, "paged_kv_cache", true, args.kv_layout, key);
  } else {
    check_cache(c, args.k_cache, "k_cache", false, args.kv_layout, key);
    if (c.ok())
      check_array(c, args.v_cache, "v_cache", {key.dtype}, shape_of(args.k_cache), "(the shape of k_cache)", key,
                  "append_key");
  }

  check_array(c, args.batch_indices, "batch_indices", kIndexDTypes, {nnz}, "[nnz]", key, "append_key");
  check_array(c, args.positions, "positions", kIndexDTypes, {nnz}, "[nnz]", key, "append_key");
  const int64_t batch = check_indptr(c, args.kv_indptr, "kv_indptr", key, "append_key");
  const int64_t num_indices =
      check_vector(c, args.kv_indices, "kv_indices", kIndexDTypes, "[number of page-table entries]", key,
                   "append_key");
  check_array(c, args.kv_last_page_len, "kv_last_page_len", kIndexDTypes, {batch}, "[batch_size]", key,
              "append_key");
  if (!c.ok()) return c.status();

  const TensorView k_cache = single ? cache_half(args.paged_kv_cache, 0) : args.k_cache;
  const TensorView v_cache = single ? cache_half(args.paged_kv_cache, 1) : args.v_cache;
  flashinfer::page::AppendPagedKVCacheParams p{};
  p.append_key = token_rows(key);
  p.append_value = token_rows(args.append_value);
  p.k_cache = paged_rows(k_cache, args.kv_layout);
  p.v_cache = paged_rows(v_cache, args.kv_layout);
  p.batch_indices = index_array(args.batch_indices);
  p.positions = index_array(args.positions);
  p.kv_indptr = index_array(args.kv_indptr);
  p.kv_indices = index_array(args.kv_indices);
  p.num_indices = num_indices;
  p.num_pages = k_cache.shape[0];
  p.batch_size = uint32_t(batch);
  p.page_size = uint32_t(k_cache.shape[slot_dim(args.kv_layout)]);
  p.nnz = uint32_t(nnz);
  p.num_heads = uint32_t(heads);
  p.row_bytes = uint32_t(row_bytes);
  if (nnz == 0) return Status::Ok();
  detail::DeviceGuard guard(key.device);
  return detail::cuda_status(detail::run_append_paged_kv_cache_kernel(p, stream), "append_paged_kv_cache");
}

Status get_batch_indices_positions(const BatchIndicesPositionsArgs& args, cudaStream_t stream) {
  Checker c;
  const TensorView& indptr = args.append_indptr;
  const int64_t batch = check_indptr(c, indptr, "append_indptr", indptr, "append_indptr");
  if (!c.ok()) return c.status();
  check_array(c, args.seq_lens, "seq_lens", kIndexDTypes, {batch}, "[batch_size]", indptr, "append_indptr");
  const int64_t nnz = args.nnz;
  c.require(nnz >= 0 && nnz <= kMaxLength, [&] {
    return "nnz: expected an integer in [0, 2^31), got " + std::to_string(nnz);
  });
  check_array(c, args.batch_indices, "batch_indices", {DType::kInt32}, {nnz}, "[nnz]", indptr, "append_indptr");
  check_array(c, args.positions, "positions", {DType::kInt32}, {nnz}, "[nnz]", indptr, "append_indptr");
  if (!c.ok()) return c.status();

  flashinfer::page::BatchIndicesPositionsParams p{};
  p.append_indptr = index_array(indptr);
  p.seq_lens = index_array(args.seq_lens);
  p.batch_indices = static_cast<int32_t*>(args.batch_indices.data);
  p.positions = static_cast<int32_t*>(args.positions.data);
  p.batch_size = uint32_t(batch);
  p.nnz = uint32_t(nnz);
  if (nnz == 0) return Status::Ok();
  detail::DeviceGuard guard(indptr.device);
  return detail::cuda_status(detail::run_batch_indices_positions_kernel(p, stream),
                             "get_batch_indices_positions");
}

Status get_seq_lens(const SeqLensArgs& args, cudaStream_t stream) {
  Checker c;
  const TensorView& indptr = args.kv_indptr;
  const int64_t batch = check_indptr(c, indptr, "kv_indptr", indptr, "kv_indptr");
  if (!c.ok()) return c.status();
  check_array(c, args.kv_last_page_len, "kv_last_page_len", kIndexDTypes, {batch}, "[batch_size]", indptr,
              "kv_indptr");
  check_array(c, args.out, "out", {DType::kInt32}, {batch}, "[batch_size]", indptr, "kv_indptr");
  c.require(args.page_size >= 1 && args.page_size <= kMaxLength, [&] {
    return "page_size: expected an integer in [1, 2^31), got " + std::to_string(args.page_size);
  });
  if (!c.ok()) return c.status();

  flashinfer::page::SeqLensParams p{};
  p.kv_indptr = index_array(indptr);
  p.kv_last_page_len = index_array(args.kv_last_page_len);
  p.seq_lens = static_cast<int32_t*>(args.out.data);
  p.batch_size = uint32_t(batch);
  p.page_size = uint32_t(args.page_size);
  if (batch == 0) return Status::Ok();
  detail::DeviceGuard guard(indptr.device);
  return detail::cuda_status(detail::run_seq_lens_kernel(p, stream), "get_seq_lens");
}

}  // namespace fi_core

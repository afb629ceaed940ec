// What the plan() of batch decode and batch prefill share (see batch_plan.h).
#include "batch_plan.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "dispatch.h"

namespace fi_core {
namespace detail {

std::string indexed(const char* name, int64_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

Checker& host_int32_vector(Checker& c, const TensorView& t, const char* name, const char* dims) {
  c.present(t, name).on_host(t, name).dtype_in(t, name, {DType::kInt32}).ndim(t, name, 1, dims);
  return c.contiguous(t, name);
}

Checker& device_int32_buffer(Checker& c, const TensorView& t, const char* name, int64_t min_len,
                             const TensorView& workspace) {
  c.present(t, name).on_cuda(t, name).dtype_in(t, name, {DType::kInt32}).ndim(t, name, 1, "[capacity]");
  c.contiguous(t, name).same_device(t, name, workspace, "workspace");
  return c.require(!c.ok() || t.shape[0] >= min_len, [&] {
    return std::string(name) + ": expected room for at least " + std::to_string(min_len) + " entries, got " +
           std::to_string(t.shape[0]);
  });
}

Checker& check_indptr(Checker& c, const TensorView& t, const char* name) {
  if (!c.ok()) return c;
  const auto* indptr = static_cast<const int32_t*>(t.data);
  c.require(indptr[0] >= 0, [&] {
    return std::string(name) + ": expected " + indexed(name, 0) + " >= 0, got " + std::to_string(indptr[0]);
  });
  for (int64_t b = 0; b + 1 < t.shape[0] && c.ok(); ++b) {
    c.require(indptr[b + 1] >= indptr[b], [&] {
      return std::string(name) + ": expected non-decreasing values, got " + indexed(name, b + 1) + " = " +
             std::to_string(indptr[b + 1]) + " < " + indexed(name, b) + " = " + std::to_string(indptr[b]);
    });
  }
  return c;
}

Checker& check_split_options(Checker& c, int64_t fixed_split_size, bool disable_split_kv, int64_t keys_per_unit,
                             const char* unit) {
  c.require(fixed_split_size >= 0, [&] {
    return "fixed_split_size: expected a positive number of " + std::string(unit) + ", got " +
           std::to_string(fixed_split_size);
  });
  c.require(fixed_split_size == 0 || !disable_split_kv, [] {
    return std::string("fixed_split_size, disable_split_kv: expected at most one of them, got both");
  });
  keys_per_unit = std::max<int64_t>(keys_per_unit, 1);  // a bad page size is reported by its own check
  c.require(fixed_split_size < (int64_t(1) << 31) / keys_per_unit, [&] {
    return "fixed_split_size: expected chunks of fewer than 2^31 keys, got " + std::to_string(fixed_split_size) +
           " " + unit + (keys_per_unit > 1 ? " of " + std::to_string(keys_per_unit) : std::string());
  });
  return c;
}

uint32_t fixed_chunk_keys(int64_t fixed_split_size, bool disable_split_kv, int64_t keys_per_unit) {
  return disable_split_kv ? std::numeric_limits<uint32_t>::max() : uint32_t(fixed_split_size * keys_per_unit);
}

Checker& check_page_ids(Checker& c, const TensorView& indices, const char* name, int32_t first, int32_t used,
                        const char* used_source, int64_t* min_num_pages) {
  *min_num_pages = 0;
  c.require(used <= indices.shape[0], [&] {
    return std::string(name) + ": expected at least " + used_source + " = " + std::to_string(used) +
           " entries, got " + std::to_string(indices.shape[0]);
  });
  if (!c.ok() || indices.device >= 0) return c;
  const auto* ids = static_cast<const int32_t*>(indices.data);
  for (int32_t i = first; i < used && c.ok(); ++i) {
    c.require(ids[i] >= 0, [&] {
      return std::string(name) + ": expected page ids >= 0, got " + indexed(name, i) + " = " + std::to_string(ids[i]);
    });
    *min_num_pages = std::max<int64_t>(*min_num_pages, int64_t(ids[i]) + 1);
  }
  return c;
}

PinnedStaging::~PinnedStaging() {
  if (copied_ != nullptr) {
    cudaEventSynchronize(copied_);
    cudaEventDestroy(copied_);
  }
  if (memory_ != nullptr) cudaFreeHost(memory_);
}

cudaError_t PinnedStaging::reserve(size_t bytes) {
  if (copied_ != nullptr) {
    const cudaError_t err = cudaEventSynchronize(copied_);
    if (err != cudaSuccess) return err;
  }
  if (bytes <= bytes_) return cudaSuccess;
  if (memory_ != nullptr) cudaFreeHost(memory_);
  memory_ = nullptr;
  bytes_ = 0;
  const cudaError_t err = cudaHostAlloc(&memory_, bytes, cudaHostAllocPortable);
  if (err == cudaSuccess) bytes_ = bytes;
  return err;
}

cudaError_t PinnedStaging::record(cudaStream_t stream) {
  if (copied_ == nullptr) {
    const cudaError_t err = cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming);
    if (err != cudaSuccess) return err;
  }
  return cudaEventRecord(copied_, stream);
}

Status upload_schedule(const ScheduleUpload& u, const TensorView& workspace, PinnedStaging& staging,
                       cudaStream_t stream, const char* what, DeviceSchedule* out) {
  const size_t ints = sizeof(int32_t);
  const bool paged = u.page_ids.present();
  const bool ids_on_device = paged && u.page_ids.device >= 0;
  const size_t staged_ids = paged && !ids_on_device ? u.num_page_ids : 0;
  const size_t work_offset = 0;
  const size_t indptr_offset = align_to_region(work_offset + u.work_bytes);
  const size_t mask_indptr_offset = align_to_region(indptr_offset + u.state_indptr_len * ints);
  const size_t table_offset = align_to_region(mask_indptr_offset + u.mask_indptr_len * ints);
  const size_t table_end = table_offset + staged_ids * ints;
  // In CUDA-graph mode the page table is not kept in the workspace.
  const size_t lse_offset = align_to_region(u.use_cuda_graph ? table_offset : table_end);
  const size_t o_offset = align_to_region(lse_offset + u.partial_states * u.num_qo_heads * sizeof(float));
  const size_t needed = o_offset + u.partial_states * u.num_qo_heads * u.head_dim * sizeof(float);
  const size_t have = size_t(workspace.numel()) * dtype_size(workspace.dtype);
  if (needed > have)
    return {StatusCode::kValueError, "workspace: expected at least " + std::to_string(needed) +
                                         " bytes for this plan, got " + std::to_string(have)};

  // In CUDA-graph mode the values for the caller's graph buffers follow the page table in the
  // staging.
  const std::vector<ScheduleUpload::GraphCopy> no_copies;
  const auto& graph_copies = u.use_cuda_graph ? u.graph_copies : no_copies;
  std::vector<size_t> copy_offsets;
  size_t staging_end = align_to_region(table_end);
  for (const ScheduleUpload::GraphCopy& g : graph_copies) {
    copy_offsets.push_back(staging_end);
    staging_end += g.count * ints;
  }
  Status st = cuda_status(staging.reserve(staging_end), (std::string(what) + ": pinned staging").c_str());
  if (!st.ok()) return st;
  uint8_t* host = staging.data();
  if (u.work_bytes > 0) std::memcpy(host + work_offset, u.work, u.work_bytes);
  if (u.state_indptr_len > 0) std::memcpy(host + indptr_offset, u.state_indptr, u.state_indptr_len * ints);
  if (u.mask_indptr_len > 0) std::memcpy(host + mask_indptr_offset, u.mask_indptr, u.mask_indptr_len * ints);
  if (staged_ids > 0) std::memcpy(host + table_offset, u.page_ids.data, staged_ids * ints);
  for (size_t i = 0; i < graph_copies.size(); ++i)
    if (graph_copies[i].count > 0) std::memcpy(host + copy_offsets[i], graph_copies[i].values, graph_copies[i].count * ints);

  auto* device = static_cast<uint8_t*>(workspace.data);
  auto copy = [&](void* dst, size_t offset, size_t bytes) {
    return bytes == 0 ? cudaSuccess : cudaMemcpyAsync(dst, host + offset, bytes, cudaMemcpyHostToDevice, stream);
  };
  cudaError_t err = copy(device, 0, u.use_cuda_graph ? table_offset : table_end);
  const int32_t* page_table = ids_on_device ? static_cast<const int32_t*>(u.page_ids.data)
                                            : reinterpret_cast<const int32_t*>(device + table_offset);
  if (u.use_cuda_graph) {
    if (paged) {
      page_table = static_cast<const int32_t*>(u.page_ids_buffer.data);
      if (err == cudaSuccess && ids_on_device && u.page_ids.data != u.page_ids_buffer.data && u.num_page_ids > 0)
        err = cudaMemcpyAsync(u.page_ids_buffer.data, u.page_ids.data, u.num_page_ids * ints,
                              cudaMemcpyDeviceToDevice, stream);
      if (err == cudaSuccess && !ids_on_device) err = copy(u.page_ids_buffer.data, table_offset, u.num_page_ids * ints);
    }
    for (size_t i = 0; i < graph_copies.size() && err == cudaSuccess; ++i)
      if (graph_copies[i].buffer.present())
        err = copy(graph_copies[i].buffer.data, copy_offsets[i], graph_copies[i].count * ints);
  }
  if (err == cudaSuccess) err = staging.record(stream);
  st = cuda_status(err, (std::string(what) + ": copy to the device").c_str());
  if (!st.ok()) return st;

  out->work = device + work_offset;
  out->state_indptr = reinterpret_cast<const int32_t*>(device + indptr_offset);
  out->mask_indptr = u.mask_indptr_len > 0 ? reinterpret_cast<const int32_t*>(device + mask_indptr_offset) : nullptr;
  out->page_table = page_table;
  out->partial_lse = reinterpret_cast<float*>(device + lse_offset);
  out->partial_o = reinterpret_cast<float*>(device + o_offset);
  out->workspace_bytes = needed;
  return Status::Ok();
}

}  // namespace detail
}  // namespace fi_core

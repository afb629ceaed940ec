// What the plan() of batch decode and batch prefill share: the host-side checks of their index
// arrays, the workspace's region alignment, and the pinned staging buffer their schedules are
// copied to the device from.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "device_schedule.h"

namespace fi_core {
namespace detail {

// Regions of a plan's workspace start at multiples of this many bytes.
constexpr size_t kWorkspaceRegionAlign = 256;
inline size_t align_to_region(size_t n) {
  return (n + kWorkspaceRegionAlign - 1) / kWorkspaceRegionAlign * kWorkspaceRegionAlign;
}

// "name[i]", for messages.
std::string indexed(const char* name, int64_t i);

// A 1-D int32 array on the host (dims names its shape in messages).
Checker& host_int32_vector(Checker& c, const TensorView& t, const char* name, const char* dims);
// A caller-owned CUDA-graph buffer: 1-D int32 on the workspace's device, room for min_len entries.
Checker& device_int32_buffer(Checker& c, const TensorView& t, const char* name, int64_t min_len,
                             const TensorView& workspace);
// A host indptr (checked by host_int32_vector): first entry >= 0, non-decreasing.
Checker& check_indptr(Checker& c, const TensorView& t, const char* name);
// Page ids `indices` (1-D int32, checked by the caller) of which entries [first, used) are used:
// at least `used` of them (`used_source` names where that count comes from). Used ids on the
// host must be >= 0, and *min_num_pages becomes the largest + 1 (run() checks the cache against
// it); ids on the GPU are used in place, unread, and *min_num_pages is 0.
Checker& check_page_ids(Checker& c, const TensorView& indices, const char* name, int32_t first, int32_t used,
                        const char* used_source, int64_t* min_num_pages);

// plan()'s split options (FlashInfer's fixed_split_size / disable_split_kv), counted in units of
// keys_per_unit keys (pages, or single keys for ragged prefill; `unit` names them in messages):
// at most one of the two, a size >= 0 (0: automatic) whose chunks stay below 2^31 keys.
Checker& check_split_options(Checker& c, int64_t fixed_split_size, bool disable_split_kv, int64_t keys_per_unit,
                             const char* unit);
// The schedulers' fixed_chunk_len for checked options: 0 (automatic), the chunk in keys, or a
// length no request reaches (every request or tile whole).
uint32_t fixed_chunk_keys(int64_t fixed_split_size, bool disable_split_kv, int64_t keys_per_unit);

// Pinned host memory a plan's schedule is staged in, and the event that marks the end of its
// last copy to the device: the memory is rewritten only after that copy has finished.
class PinnedStaging {
 public:
  PinnedStaging() = default;
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;
  ~PinnedStaging();

  // At least `bytes` of staging memory, once the previous copy out of it has finished.
  cudaError_t reserve(size_t bytes);
  uint8_t* data() const { return static_cast<uint8_t*>(memory_); }
  // Marks the end of the copies just issued on `stream`.
  cudaError_t record(cudaStream_t stream);

 private:
  void* memory_ = nullptr;
  size_t bytes_ = 0;
  cudaEvent_t copied_ = nullptr;
};

// A plan's schedule and where it goes in the caller's workspace:
//   [work items | state_indptr | mask_indptr | page table | partial lse | partial o]
// The first four are staged in pinned memory and copied with one asynchronous copy. Page ids
// already on the GPU are read in place instead of staged. In CUDA-graph mode the page table lives
// in the caller's buffer (host ids are copied there from the staging, GPU ids device to device),
// and the caller's other graph buffers get copies of the plan's index arrays.
struct ScheduleUpload {
  struct GraphCopy {  // a caller's CUDA-graph buffer (absent: skipped) and the host values for it
    TensorView buffer;
    const int32_t* values;
    size_t count;
  };
  const void* work;
  size_t work_bytes;
  const int32_t* state_indptr;
  size_t state_indptr_len;
  const int32_t* mask_indptr = nullptr;  // batch prefill with a custom mask: each request's first byte
  size_t mask_indptr_len = 0;
  TensorView page_ids;  // absent: no page table (ragged KV)
  size_t num_page_ids = 0;
  bool use_cuda_graph = false;
  TensorView page_ids_buffer;  // CUDA-graph mode with page ids
  std::vector<GraphCopy> graph_copies;
  size_t partial_states = 0;  // rows of partial lse / o, each num_qo_heads x head_dim
  int64_t num_qo_heads = 0, head_dim = 0;
};

// Checks that the workspace has room (ValueError), stages and copies the schedule on `stream`
// (`what` names the plan in CUDA errors); `out` says where it landed.
Status upload_schedule(const ScheduleUpload& u, const TensorView& workspace, PinnedStaging& staging,
                       cudaStream_t stream, const char* what, DeviceSchedule* out);

}  // namespace detail
}  // namespace fi_core

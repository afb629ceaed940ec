// What this build contains. Compiled by nvcc with the CuTe/CUTLASS headers, which also proves
// that the toolchain of the Hopper (FA3) path works on this machine.
#include <cute/layout.hpp>
#include <cute/tensor.hpp>
#include <cutlass/version.h>

#include <string>

#include "fi_core/api.h"
#include "fi_core_build_config.h"

namespace fi_core {
namespace {

// The decode kernel's lane layout in CuTe terms: head_dim 128 as 16 lanes x 8 elements per token,
// 2 tokens per warp. A compile-time check that CuTe's layout algebra is usable in this build.
using DecodeLaneLayout = cute::Layout<cute::Shape<cute::_16, cute::_2>, cute::Stride<cute::_1, cute::_16>>;
static_assert(cute::size(DecodeLaneLayout{}) == 32, "a warp covers 16 lanes x 2 tokens");

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    if (end > start) parts.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.version = FI_CORE_VERSION;
  info.cuda_archs = split(FI_CORE_CUDA_ARCHS, ';');
#define FI_CORE_PUSH(D) info.head_dims.push_back(D);
  FI_CORE_FOR_EACH_HEAD_DIM(FI_CORE_PUSH)
#undef FI_CORE_PUSH
  info.q_dtypes = {"float16", "bfloat16"};
  info.kv_dtypes = {"float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"};
  info.cuda_version = FI_CORE_CUDA_VERSION;
  info.cutlass_version = std::to_string(CUTLASS_MAJOR) + "." + std::to_string(CUTLASS_MINOR) + "." +
                         std::to_string(CUTLASS_PATCH);
  info.cutlass_source = FI_CORE_CUTLASS_SOURCE;
  return info;
}

}  // namespace fi_core

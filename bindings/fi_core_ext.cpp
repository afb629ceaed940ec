// nanobind module fi_core._C: DLPack arrays in, fi_core host API calls out. Thin by design:
// argument checking lives in the host API (src/), framework adaptation in python/fi_core/.
// Each kernel family binds itself (bindings/*_ext.cpp).
#include "common.h"

namespace fi_core_bindings {

void bind_quantization(nb::module_& m);  // quantization_ext.cpp

namespace {

nb::dict build_info_dict() {
  const fi_core::BuildInfo info = fi_core::build_info();
  nb::dict d;
  d["version"] = info.version;
  d["cuda_archs"] = info.cuda_archs;
  d["head_dims"] = info.head_dims;
  d["q_dtypes"] = info.q_dtypes;
  d["kv_dtypes"] = info.kv_dtypes;
  d["cuda_version"] = info.cuda_version;
  d["cutlass_version"] = info.cutlass_version;
  d["cutlass_source"] = info.cutlass_source;
  return d;
}

}  // namespace
}  // namespace fi_core_bindings

NB_MODULE(_C, m) {
  using namespace fi_core_bindings;
  m.doc() = "fi_core kernels (ahead-of-time compiled); use the fi_core package, not this module";
  m.def("build_info", &build_info_dict);
  m.def("cuda_device_count", &fi_core::cuda_device_count);
  bind_decode(m);
  bind_ops(m);
  bind_sampling(m);
  bind_page(m);
  bind_cascade(m);
  bind_prefill(m);
  bind_quantization(m);
}

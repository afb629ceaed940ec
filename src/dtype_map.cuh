// fi_core::DType -> CUDA element type, for the generated kernel instantiations.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "fi_core/api.h"

namespace fi_core {
namespace detail {

template <DType D>
struct CudaType;
template <>
struct CudaType<DType::kFloat16> { using type = half; };
template <>
struct CudaType<DType::kBFloat16> { using type = __nv_bfloat16; };
template <>
struct CudaType<DType::kFloat8E4M3> { using type = __nv_fp8_e4m3; };
template <>
struct CudaType<DType::kFloat8E5M2> { using type = __nv_fp8_e5m2; };
template <>
struct CudaType<DType::kFloat32> { using type = float; };

template <DType D>
using cuda_type_t = typename CudaType<D>::type;

}  // namespace detail
}  // namespace fi_core

# The build matrix, declared once. Each list can be narrowed by a CMake cache variable
# (-DFI_CORE_CUDA_ARCHS=90a) or, when that is not given, by the environment variable of the same
# name (FI_CORE_CUDA_ARCHS="80;90a", FI_CORE_HEAD_DIMS="128"). Narrowing removes the generated
# instantiations themselves, so it shortens the build.

set(FI_CORE_RELEASE_CUDA_ARCHS "80;90a")
set(FI_CORE_RELEASE_HEAD_DIMS "64;128;256")
# q/o dtypes x KV dtypes compiled for every head dim (names of fi_core::DType enumerators).
set(FI_CORE_Q_DTYPES "kFloat16;kBFloat16")
set(FI_CORE_KV_DTYPES "kFloat16;kBFloat16;kFloat8E4M3;kFloat8E5M2")

function(fi_core_matrix_option name release_default description)
  if(NOT DEFINED ${name} OR "${${name}}" STREQUAL "")
    if(DEFINED ENV{${name}} AND NOT "$ENV{${name}}" STREQUAL "")
      set(value "$ENV{${name}}")
    else()
      set(value "${release_default}")
    endif()
    set(${name} "${value}" CACHE STRING "${description}" FORCE)
  endif()
  # Accept "80,90a" and "80 90a" as well as CMake's "80;90a".
  string(REPLACE "," ";" normalized "${${name}}")
  string(REPLACE " " ";" normalized "${normalized}")
  list(REMOVE_ITEM normalized "")
  set(${name} "${normalized}" PARENT_SCOPE)
endfunction()

fi_core_matrix_option(FI_CORE_CUDA_ARCHS "${FI_CORE_RELEASE_CUDA_ARCHS}"
                      "CUDA architectures to compile for (subset of 80;90a)")
fi_core_matrix_option(FI_CORE_HEAD_DIMS "${FI_CORE_RELEASE_HEAD_DIMS}"
                      "Attention head dims to instantiate (subset of 64;128;256)")

foreach(arch IN LISTS FI_CORE_CUDA_ARCHS)
  if(NOT arch MATCHES "^[0-9]+a?$")
    message(FATAL_ERROR "FI_CORE_CUDA_ARCHS: expected entries like 80 or 90a, got '${arch}'")
  endif()
endforeach()
foreach(dim IN LISTS FI_CORE_HEAD_DIMS)
  if(NOT dim IN_LIST FI_CORE_RELEASE_HEAD_DIMS)
    message(FATAL_ERROR "FI_CORE_HEAD_DIMS: expected a subset of ${FI_CORE_RELEASE_HEAD_DIMS}, got '${dim}'")
  endif()
endforeach()

# Real (SASS) code only: the library never JIT-compiles PTX at run time.
set(FI_CORE_CMAKE_CUDA_ARCHS "")
foreach(arch IN LISTS FI_CORE_CUDA_ARCHS)
  list(APPEND FI_CORE_CMAKE_CUDA_ARCHS "${arch}-real")
endforeach()
set(FI_CORE_CUDA_ARCHS_STRING "${FI_CORE_CUDA_ARCHS}")

set(FI_CORE_HEAD_DIM_XMACRO "")
foreach(dim IN LISTS FI_CORE_HEAD_DIMS)
  string(APPEND FI_CORE_HEAD_DIM_XMACRO "X(${dim}) ")
endforeach()

# One generated .cu per kernel family x head dim x q dtype x kv dtype: builds parallelize and a
# compile error names one combination.
function(fi_core_generate_attention_sources out_var)
  set(sources "")
  set(gen_dir "${CMAKE_CURRENT_BINARY_DIR}/generated")
  foreach(family IN ITEMS single_decode batch_decode single_prefill batch_prefill_paged batch_prefill_ragged)
    foreach(HEAD_DIM IN LISTS FI_CORE_HEAD_DIMS)
      foreach(Q_DTYPE IN LISTS FI_CORE_Q_DTYPES)
        foreach(KV_DTYPE IN LISTS FI_CORE_KV_DTYPES)
          # The tensor-core prefill takes KV of q's 16-bit dtype, or fp8 KV.
          if(family MATCHES "prefill" AND NOT Q_DTYPE STREQUAL KV_DTYPE AND NOT KV_DTYPE MATCHES "^kFloat8")
            continue()
          endif()
          set(file "${gen_dir}/${family}_d${HEAD_DIM}_${Q_DTYPE}_${KV_DTYPE}.cu")
          configure_file("${PROJECT_SOURCE_DIR}/src/templates/${family}_inst.cu.in" "${file}" @ONLY)
          list(APPEND sources "${file}")
        endforeach()
      endforeach()
    endforeach()
  endforeach()
  set(${out_var} "${sources}" PARENT_SCOPE)
endfunction()

message(STATUS "fi_core matrix: archs=${FI_CORE_CUDA_ARCHS} head_dims=${FI_CORE_HEAD_DIMS}")

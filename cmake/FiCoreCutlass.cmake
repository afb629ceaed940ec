# CUTLASS/CuTe headers: third_party/cutlass when populated, else the pinned nvidia-cutlass wheel
# (a build requirement; it ships include/cute and include/cutlass under cutlass_library/source).
# Sets FI_CORE_CUTLASS_INCLUDE_DIR and FI_CORE_CUTLASS_SOURCE.

set(_third_party "${PROJECT_SOURCE_DIR}/third_party/cutlass/include")
if(EXISTS "${_third_party}/cute/tensor.hpp")
  set(FI_CORE_CUTLASS_INCLUDE_DIR "${_third_party}")
  set(FI_CORE_CUTLASS_SOURCE "third_party/cutlass")
else()
  find_package(Python 3.10 REQUIRED COMPONENTS Interpreter)
  # Locate the package without importing it (its __init__ pulls in optional dependencies).
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import importlib.util as u, os; s = u.find_spec('cutlass_library'); print(os.path.join(list(s.submodule_search_locations)[0], 'source', 'include'))"
    OUTPUT_VARIABLE _wheel_include
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _found)
  if(NOT _found EQUAL 0 OR NOT EXISTS "${_wheel_include}/cute/tensor.hpp")
    message(FATAL_ERROR
      "CUTLASS/CuTe headers not found: populate third_party/cutlass (a CUTLASS checkout) or "
      "`pip install nvidia-cutlass==4.2.0.0` into the build environment (${Python_EXECUTABLE}).")
  endif()
  set(FI_CORE_CUTLASS_INCLUDE_DIR "${_wheel_include}")
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import importlib.metadata as m; print(m.version('nvidia-cutlass'))"
    OUTPUT_VARIABLE _wheel_version OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  set(FI_CORE_CUTLASS_SOURCE "nvidia-cutlass ${_wheel_version} wheel")
endif()
message(STATUS "fi_core CUTLASS/CuTe: ${FI_CORE_CUTLASS_INCLUDE_DIR} (${FI_CORE_CUTLASS_SOURCE})")

"""What the build reports about itself, the main job without a GPU, and the C++ headers."""

import os
import subprocess
import sys

import pytest

import fi_core
from conftest import HAS_GPU, compile_cpp_example, nvcc_path

RELEASE_HEAD_DIMS = [64, 128, 256]
RELEASE_ARCHS = ["80", "90a"]


def env_list(name):
    value = os.environ.get(name)
    return None if not value else [x for x in value.replace(",", ";").replace(" ", ";").split(";") if x]


def test_build_info_describes_the_matrix():
    info = fi_core.build_info()
    assert info["version"] == fi_core.__version__
    assert info["head_dims"] and set(info["head_dims"]) <= set(RELEASE_HEAD_DIMS)
    assert info["cuda_archs"] and set(info["cuda_archs"]) <= set(RELEASE_ARCHS)
    assert info["q_dtypes"] == ["float16", "bfloat16"]
    assert info["kv_dtypes"] == ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
    assert info["cuda_version"].split(".")[0].isdigit()
    assert info["cutlass_version"].count(".") == 2
    assert "cutlass" in info["cutlass_source"]


def test_build_info_matches_the_requested_matrix():
    # When the environment narrowed the build (as CI does), the module must contain exactly that.
    dims, archs = env_list("FI_CORE_HEAD_DIMS"), env_list("FI_CORE_CUDA_ARCHS")
    if dims is None and archs is None:
        pytest.skip("FI_CORE_HEAD_DIMS / FI_CORE_CUDA_ARCHS not set: release matrix build")
    info = fi_core.build_info()
    if dims is not None:
        assert info["head_dims"] == [int(d) for d in dims]
    if archs is not None:
        assert info["cuda_archs"] == archs


def test_main_job_prints_the_matrix_and_handles_a_missing_gpu():
    result = subprocess.run([sys.executable, "-m", "fi_core"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    info = fi_core.build_info()
    assert "head dims:  " + ", ".join(str(d) for d in info["head_dims"]) in result.stdout
    assert "sm_" + info["cuda_archs"][0] in result.stdout
    if HAS_GPU:
        assert "self-check" in result.stdout and "PASS" in result.stdout
        assert "of device copy bandwidth" in result.stdout
    else:
        assert "No CUDA GPU found" in result.stdout


def test_get_include_holds_the_public_headers():
    include = fi_core.get_include()
    assert os.path.isfile(os.path.join(include, "fi_core", "api.h"))
    assert os.path.isfile(os.path.join(include, "flashinfer", "attention", "decode.cuh"))


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found: C++ header test skipped")
def test_cpp_translation_unit_compiles_against_public_headers(tmp_path):
    # tests/cpp/single_decode_example.cu uses both the header templates and the host API.
    compile_cpp_example("single_decode_example.cu", tmp_path)

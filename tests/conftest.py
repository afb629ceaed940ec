import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _gpu_available() -> bool:
    try:
        import fi_core
        return fi_core._C.cuda_device_count() > 0
    except Exception:
        return False


HAS_GPU = _gpu_available()
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU on this machine: GPU test skipped")

import random
import zlib

# Fresh random inputs on every run; the seed is printed so a failure can be replayed with
# FI_CORE_TEST_SEED=<seed>.
SESSION_SEED = int(os.environ.get("FI_CORE_TEST_SEED", random.randrange(2**31)))


def case_seed(*key) -> int:
    return (SESSION_SEED + zlib.crc32(repr(key).encode())) % (2**31)


def pytest_report_header(config):
    return f"fi_core test seed: FI_CORE_TEST_SEED={SESSION_SEED}; GPU present: {HAS_GPU}"


def nvcc_path():
    """nvcc on PATH or in /usr/local/cuda, else None."""
    for candidate in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def compile_cpp_example(name, tmp_path):
    """Compiles tests/cpp/<name> against the installed headers for the build's first arch."""
    import fi_core
    source = os.path.join(os.path.dirname(__file__), "cpp", name)
    obj = tmp_path / (name + ".o")
    arch = fi_core.build_info()["cuda_archs"][0]
    cmd = [nvcc_path(), "-std=c++17", "-c", source, "-o", str(obj), "-I", fi_core.get_include(),
           f"-gencode=arch=compute_{arch},code=sm_{arch}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert obj.stat().st_size > 0

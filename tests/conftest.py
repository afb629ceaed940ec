import os
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

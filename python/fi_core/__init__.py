"""fi_core: ahead-of-time compiled attention and LLM-serving kernels with FlashInfer's Python API.

Arrays from any framework that speaks DLPack (PyTorch, CuPy, JAX) are accepted; results come back
in the caller's framework. `import fi_core as flashinfer` works for the operations fi_core covers.
"""

from __future__ import annotations

import os

from . import _C
from .decode import single_decode_with_kv_cache

__version__ = _C.build_info()["version"]

__all__ = ["build_info", "get_include", "single_decode_with_kv_cache", "__version__"]


def build_info() -> dict:
    """What this build contains: CUDA archs, head dims, dtypes, CUDA and CUTLASS versions."""
    return dict(_C.build_info())


def get_include() -> str:
    """Directory holding the C++ headers (include/flashinfer, include/fi_core) of this build."""
    return os.path.join(os.path.dirname(__file__), "include")

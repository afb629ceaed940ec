"""A DLPack producer that claims to live on a CUDA device, so that argument validation can be
tested on machines without a GPU. Its data pointer is never dereferenced: validation must reject
or accept it before anything is launched."""

from __future__ import annotations

import ctypes

import pytest

# DLPack type codes (dlpack.h).
_CODES = {"float16": (2, 16), "bfloat16": (4, 16), "float32": (2, 32), "float64": (2, 64),
          "int32": (0, 32), "int64": (0, 64), "uint8": (1, 8), "int8": (0, 8),
          "float8_e4m3fn": (10, 8), "float8_e5m2": (12, 8)}
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8,
             "uint8": 1, "int8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

_DL_CUDA = 2
_fake_address = [1 << 32]


class FakeCudaArray:
    """shape/dtype/strides (in elements; row-major by default) of an array on cuda:`device`."""

    def __init__(self, shape, dtype="float16", strides=None, device=0, device_type=_DL_CUDA,
                 misalign_bytes=0):
        self.shape = tuple(shape)
        self.dtype = dtype
        if strides is None:
            strides, acc = [], 1
            for n in reversed(self.shape):
                strides.insert(0, acc)
                acc *= max(n, 1)
        self.strides = tuple(strides)
        self.device = device
        self.device_type = device_type
        # Distinct, 256-byte aligned fake addresses, optionally offset to test alignment checks.
        _fake_address[0] += 1 << 24
        self.address = _fake_address[0] + misalign_bytes
        self._keep = []

    def __dlpack_device__(self):
        return (self.device_type, self.device)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(ndim, 1))(*self.strides)
        code, bits = _CODES[self.dtype]
        managed = _DLManagedTensor()
        managed.dl_tensor = _DLTensor(self.address, _DLDevice(self.device_type, self.device), ndim,
                                      _DLDataType(code, bits, 1), shape, strides, 0)
        managed.manager_ctx = None
        managed.deleter = None
        self._keep.extend([shape, strides, managed])
        return _capsule_new(ctypes.addressof(managed), b"dltensor", None)


# Helpers of the validation tests that use these arrays.

def expect(exc, fn, *fragments):
    """fn() raises exc whose message contains every fragment."""
    with pytest.raises(exc) as info:
        fn()
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def reaches_launch(fn):
    """Validation accepted the call: without a GPU it fails only at the CUDA launch (with a GPU
    the fake arrays must not be launched on, so nothing is called)."""
    import fi_core
    if fi_core._C.cuda_device_count() == 0:
        with pytest.raises(RuntimeError, match="CUDA error"):
            fn()

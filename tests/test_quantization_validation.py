"""Every bad argument of packbits and segment_packbits raises TypeError/ValueError naming the
argument, what was expected and what was given, before anything is launched; valid calls pass
validation, and the packed offsets of segment_packbits (computed on the host) are right. Runs
without a GPU: the arrays are fake CUDA arrays (fake_arrays.py) whose memory is never touched."""

import numpy as np
import pytest

import fi_core
from conftest import case_seed
from fake_arrays import FakeCudaArray as Fake, expect, reaches_launch

X_DTYPES = "bool, int8, uint8, int16, int32 or int64"
N = 21  # bits: 3 bytes, the last one partial


def pack(x=None, out=None, bitorder="big"):
    x = Fake((N,), "uint8") if x is None else x
    out = Fake(((x.shape[0] + 7) // 8 if len(x.shape) == 1 else 0,), "uint8") if out is None else out
    return lambda: fi_core.packbits(x, bitorder, out=out)


def segment(x=None, indptr=(0, 5, 5, 21), bitorder="big"):
    x = Fake((N,), "uint8") if x is None else x
    return lambda: fi_core.segment_packbits(x, indptr, bitorder)


def test_exported():
    assert "packbits" in fi_core.__all__ and "segment_packbits" in fi_core.__all__


def test_packbits_x():
    expect(TypeError, pack(x=np.zeros(N, np.bool_)), "x: expected a CUDA array", "CPU")
    expect(TypeError, lambda: fi_core.packbits([1, 0, 1]), "x: expected a CUDA array supporting DLPack", "list")
    for dtype in ("float16", "float32", "bfloat16"):
        expect(TypeError, pack(x=Fake((N,), dtype)), f"x: expected dtype {X_DTYPES}, got {dtype}")
    # fp8 reaches the kernels as bytes: rejected by its name, not as uint8.
    expect(TypeError, pack(x=Fake((N,), "float8_e4m3fn")), f"x: expected dtype {X_DTYPES}, got float8_e4m3fn")
    expect(ValueError, pack(x=Fake((3, 7), "uint8")), "x: expected 1 dimensions [num_bits], got 2 with shape (3, 7)")
    expect(ValueError, pack(x=Fake((N,), "uint8", strides=(2,))),
           "x: expected a contiguous last dimension (stride 1), got stride 2")


def test_packbits_bitorder():
    for bad in ("bit", "LITTLE", "", None, 1):
        expect(ValueError, pack(bitorder=bad), "bitorder: expected one of 'big', 'little', got " + repr(bad))
    # The host API checks the code too (C++ callers).
    x, out = Fake((N,), "uint8"), Fake((3,), "uint8")
    with pytest.raises(ValueError, match=r"bitorder: expected big \(0\) or little \(1\), got 2"):
        fi_core._C.packbits(x, out, bitorder=2, stream=0, synchronize=False)


def test_packbits_out():
    expect(ValueError, pack(out=Fake((4,), "uint8")), "out: expected shape [(num_bits + 7) / 8] = (3,), got (4,)")
    expect(ValueError, pack(out=Fake((2,), "uint8")), "= (3,), got (2,)")
    expect(ValueError, pack(out=Fake((3, 1), "uint8")), "out: expected shape [(num_bits + 7) / 8] = (3,), got (3, 1)")
    expect(TypeError, pack(out=Fake((3,), "int32")), "out: expected dtype uint8, got int32")
    expect(TypeError, pack(out=np.zeros(3, np.uint8)), "out: expected a CUDA array", "CPU")
    expect(ValueError, pack(out=Fake((3,), "uint8", strides=(2,))), "out: expected a contiguous last dimension")
    expect(ValueError, pack(out=Fake((3,), "uint8", device=1)), "out: expected the device of x (cuda:0), got cuda:1")
    # Without out=, an array of an unknown framework cannot get an output.
    with pytest.raises(TypeError, match="out: fi_core cannot allocate arrays of type FakeCudaArray"):
        fi_core.packbits(Fake((N,), "uint8"))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "int64"])
@pytest.mark.parametrize("n", [1, 8, 9, 1000003])
def test_packbits_valid_reaches_launch(n, dtype):
    for bitorder in ("big", "little"):
        reaches_launch(pack(x=Fake((n,), dtype), bitorder=bitorder))


def test_packbits_empty_launches_nothing():
    out = Fake((0,), "uint8")
    assert fi_core.packbits(Fake((0,), "uint8"), out=out) is out  # no CUDA call, even without a GPU


def test_segment_x():
    expect(TypeError, segment(x=np.zeros(N, np.bool_)), "x: expected a CUDA array", "CPU")
    expect(TypeError, segment(x=Fake((N,), "float32")), f"x: expected dtype {X_DTYPES}, got float32")
    expect(ValueError, segment(x=Fake((3, 7), "uint8"), indptr=[0, 3]),
           "x: expected 1 dimensions [num_bits], got 2 with shape (3, 7)")
    expect(ValueError, segment(x=Fake((N,), "uint8", strides=(3,))), "x: expected a contiguous last dimension")
    expect(ValueError, segment(x=Fake((1 << 31,), "uint8"), indptr=[0, 1]),
           "x: expected fewer than 2^31 elements (segment offsets are int32, as in FlashInfer), got 2147483648")
    expect(ValueError, segment(bitorder="bit"), "bitorder: expected one of 'big', 'little', got 'bit'")


def test_segment_indptr():
    expect(ValueError, segment(indptr=[0, 5, 4, 21]), "indptr: expected non-decreasing values, got indptr[2] = 4 < indptr[1] = 5")
    expect(ValueError, segment(indptr=[0, 5, 22]), f"indptr: expected values at most len(x) = {N}, got indptr[2] = 22")
    expect(ValueError, segment(indptr=[3, 30]), f"indptr: expected values at most len(x) = {N}, got indptr[1] = 30")
    expect(ValueError, segment(indptr=[-1, 5]), "indptr: expected indptr[0] >= 0, got -1")
    expect(ValueError, segment(indptr=np.zeros(0, np.int32)), "indptr: expected shape [batch_size + 1] with 1 to 2^31 - 1 entries, got (0,)")
    expect(ValueError, segment(indptr=[[0, 5]]), "indptr: expected 1 dimensions [batch_size + 1], got 2 with shape (1, 2)")
    expect(ValueError, segment(indptr=7), "indptr: expected 1 dimension [batch_size + 1], got a scalar")
    expect(TypeError, segment(indptr=[0.0, 5.0]), "indptr: expected an integer array (int32), got dtype float64")
    expect(TypeError, segment(indptr=[]), "indptr: expected an integer array (int32), got dtype float64")
    expect(TypeError, segment(indptr=None), "indptr: expected an integer array, got None")
    expect(TypeError, segment(indptr=Fake((4,), "int32")), "indptr: expected an integer array (int32), got dtype object")
    expect(ValueError, segment(indptr=np.array([0, 1 << 40])), "indptr: expected values that fit in int32")


def test_segment_unknown_framework_after_validation():
    # Valid x and indptr: the offsets pass, then an unknown framework cannot allocate.
    expect(TypeError, segment(), "x: segment_packbits allocates its device offsets through x's framework",
           "FakeCudaArray")


def raw_segment(indptr=(0, 5, 5, 21), segments=None, out=None, bitorder=0, x=None):
    """The binding itself, where C++ callers' arguments (segments, out) are checked."""
    x = Fake((N,), "uint8") if x is None else x
    indptr = np.asarray(indptr, dtype=np.int32) if isinstance(indptr, tuple) else indptr
    segments = Fake((2, len(indptr)), "int32") if segments is None else segments
    out = Fake((3,), "uint8") if out is None else out  # (5 + 7) // 8 + 0 + (16 + 7) // 8
    return lambda: fi_core._C.segment_packbits(x, indptr, segments, out, bitorder=bitorder, stream=0,
                                               synchronize=False)


def test_segment_host_api_arrays():
    expect(ValueError, raw_segment(segments=Fake((2, 3), "int32")),
           "segments: expected shape [2, batch_size + 1] = (2, 4), got (2, 3)")
    expect(TypeError, raw_segment(segments=Fake((2, 4), "int64")), "segments: expected dtype int32, got int64")
    expect(TypeError, raw_segment(segments=np.zeros((2, 4), np.int32)), "segments: expected a CUDA array")
    expect(ValueError, raw_segment(segments=Fake((2, 4), "int32", strides=(8, 1))), "segments: expected a contiguous array")
    expect(ValueError, raw_segment(segments=Fake((2, 4), "int32", device=1)),
           "segments: expected the device of x (cuda:0), got cuda:1")
    expect(ValueError, raw_segment(out=Fake((4,), "uint8")), "out: expected shape [new_indptr[batch_size]] = (3,), got (4,)")
    expect(TypeError, raw_segment(out=Fake((3,), "int8")), "out: expected dtype uint8, got int8")
    expect(ValueError, raw_segment(bitorder=-1), r"bitorder: expected big (0) or little (1), got -1")
    expect(TypeError, raw_segment(indptr=np.zeros(4, np.int16)), "indptr: expected dtype int32 or int64, got int16")
    # A CUDA indptr never reaches the host API: the Python layer copies it to the host first.
    with pytest.raises(TypeError, match="indptr: expected a host"):
        fi_core._C.segment_packbits(Fake((N,), "uint8"), Fake((4,), "int32"), Fake((2, 4), "int32"),
                                    Fake((3,), "uint8"), bitorder=0, stream=0, synchronize=False)
    reaches_launch(raw_segment())
    reaches_launch(raw_segment(indptr=np.array([0, 5, 5, 21], np.int64), bitorder=1))


def test_segment_offsets_on_the_host():
    # plan_segment_packbits: the packed offsets, checked against the definition on random tables.
    rng = np.random.default_rng(case_seed("offsets"))
    for dtype in (np.int32, np.int64):
        lengths = rng.integers(0, 50, 300)
        lengths[rng.random(300) < 0.3] = 0
        start = int(rng.integers(0, 9))
        indptr = np.concatenate([[start], start + np.cumsum(lengths)]).astype(dtype)
        new_indptr = np.full(len(indptr), -7, np.int32)
        fi_core._C.plan_segment_packbits(Fake((int(indptr[-1]) + 3,), "uint8"), indptr, new_indptr)
        np.testing.assert_array_equal(new_indptr, np.concatenate([[0], np.cumsum((lengths + 7) // 8)]))
    one = np.zeros(1, np.int32)
    fi_core._C.plan_segment_packbits(Fake((0,), "uint8"), np.zeros(1, np.int64), one)  # no segments
    assert one.tolist() == [0]
    expect(ValueError, lambda: fi_core._C.plan_segment_packbits(Fake((N,), "uint8"), np.array([0, 5], np.int32),
                                                                np.zeros(3, np.int32)),
           "new_indptr: expected shape [batch_size + 1] = (2,), got (3,)")
    expect(TypeError, lambda: fi_core._C.plan_segment_packbits(Fake((N,), "uint8"), np.array([0, 5], np.int32),
                                                               np.zeros(2, np.int64)),
           "new_indptr: expected dtype int32, got int64")

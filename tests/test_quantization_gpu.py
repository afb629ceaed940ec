"""packbits and segment_packbits on the GPU against numpy.packbits, on fresh random inputs: lengths
0, 1, 7, 8, 9, 1000003 and others, both bit orders, every element dtype (nonzero = 1, not just 0/1),
unaligned views, segments of every length class (empty, partial bytes, whole bytes, long) with an
indptr on the host (numpy, list, torch CPU) or on the GPU (int32, int64), outputs poisoned first
when they are passed in, torch and CuPy arrays, and the caller's stream."""

import numpy as np
import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core

LENGTHS = [0, 1, 7, 8, 9, 63, 4097, 1000003]
ORDERS = ["little", "big"]
DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64"]
POISON = 0xA5


def random_bits(rng, n, dtype="bool"):
    """n random elements of `dtype` (numpy), about half zero; nonzero ones take varied values so that
    the kernel must test for nonzero, not read the low bit."""
    on = rng.random(n) < 0.5
    if dtype == "bool":
        return on
    info = np.iinfo(dtype)
    values = rng.integers(1, info.max, n, dtype=dtype, endpoint=True)
    values[rng.random(n) < 0.1] = info.max
    if info.min < 0:
        values[rng.random(n) < 0.2] = info.min  # negative values count as 1 too
    return np.where(on, values, 0).astype(dtype)


def on_gpu(a):
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def poisoned(n):
    return torch.full((n,), POISON, dtype=torch.uint8, device="cuda")


def reference_segments(bits, indptr, bitorder):
    """numpy.packbits of each segment, concatenated, and the packed offsets."""
    parts = [np.packbits(bits[indptr[i]:indptr[i + 1]] != 0, bitorder=bitorder) for i in range(len(indptr) - 1)]
    new_indptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int32)
    packed = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return packed.astype(np.uint8), new_indptr


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bitorder", ORDERS)
@pytest.mark.parametrize("n", LENGTHS, ids=lambda n: f"n{n}")
def test_packbits_matches_numpy(n, bitorder, dtype):
    rng = np.random.default_rng(case_seed("packbits", n, bitorder, dtype))
    bits = random_bits(rng, n, dtype)
    expected = np.packbits(bits != 0, bitorder=bitorder)
    x = on_gpu(bits)
    got = fi_core.packbits(x, bitorder=bitorder)
    assert got.dtype == torch.uint8 and got.device == x.device and tuple(got.shape) == ((n + 7) // 8,)
    np.testing.assert_array_equal(got.cpu().numpy(), expected)
    out = poisoned((n + 7) // 8)
    assert fi_core.packbits(x, bitorder, out=out) is out
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


def test_packbits_default_bit_order_is_big():
    # FlashInfer's documented example: the default bit order is "big", as in numpy.
    x = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool, device="cuda")
    assert [bin(b) for b in fi_core.packbits(x).tolist()] == ["0b10110011"]
    assert [bin(b) for b in fi_core.packbits(x, "little").tolist()] == ["0b11001101"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [1, 3, 5])
def test_packbits_unaligned_view(offset, dtype):
    # A contiguous view that starts off the vector alignment: the kernel must not use wide loads.
    rng = np.random.default_rng(case_seed("unaligned", offset, dtype))
    n = 8 * 517 + 5
    storage = on_gpu(random_bits(rng, n + offset, dtype))
    x = storage[offset:]
    for bitorder in ORDERS:
        expected = np.packbits(x.cpu().numpy() != 0, bitorder=bitorder)
        out = poisoned((n + 7) // 8)
        fi_core.packbits(x, bitorder, out=out)
        np.testing.assert_array_equal(out.cpu().numpy(), expected)


def random_indptr(rng, lengths, start=0):
    return np.concatenate([[start], start + np.cumsum(lengths)]).astype(np.int64)


# Segment length sets: every length class, empty segments between and at the ends, long ones.
SEGMENTS = {
    "mixed": [0, 1, 7, 8, 9, 0, 16, 17, 0, 100, 0],
    "one_long": [1000003],
    "long_and_short": [3, 1000003, 0, 5, 64],
    "all_empty": [0, 0, 0],
    "no_segments": [],
    "single_bit": [1],
}


@pytest.mark.parametrize("where", ["numpy", "list", "torch_cpu", "cuda_int32", "cuda_int64"])
@pytest.mark.parametrize("bitorder", ORDERS)
@pytest.mark.parametrize("case", list(SEGMENTS))
def test_segment_packbits_matches_numpy(case, bitorder, where):
    rng = np.random.default_rng(case_seed("segments", case, bitorder, where))
    lengths = np.array(SEGMENTS[case], dtype=np.int64)
    start = int(rng.integers(0, 13))  # indptr[0] > 0: x before the first segment is not packed
    indptr = random_indptr(rng, lengths, start)
    n = int(indptr[-1]) + int(rng.integers(0, 11))  # and x may run past the last one
    bits = random_bits(rng, n, "bool")
    expected, expected_indptr = reference_segments(bits, indptr, bitorder)
    given = {"numpy": indptr, "list": indptr.tolist(), "torch_cpu": torch.from_numpy(indptr),
             "cuda_int32": on_gpu(indptr.astype(np.int32)), "cuda_int64": on_gpu(indptr)}[where]
    x = on_gpu(bits)
    packed, new_indptr = fi_core.segment_packbits(x, given, bitorder=bitorder)
    assert packed.dtype == torch.uint8 and packed.device == x.device
    np.testing.assert_array_equal(packed.cpu().numpy(), expected)
    if where.startswith("cuda"):
        assert isinstance(new_indptr, torch.Tensor) and new_indptr.device == x.device
        new_indptr = new_indptr.cpu()
    elif where == "torch_cpu":
        assert isinstance(new_indptr, torch.Tensor) and new_indptr.device.type == "cpu"
    else:
        assert isinstance(new_indptr, np.ndarray)
    new_indptr = np.asarray(new_indptr)
    assert new_indptr.dtype == np.int32
    np.testing.assert_array_equal(new_indptr, expected_indptr)
    out = poisoned(len(expected))
    packed, _ = fi_core.segment_packbits(x, given, bitorder, out=out)
    assert packed is out
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


def test_segment_packbits_flashinfer_example():
    x = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.bool, device="cuda")
    packed, new_indptr = fi_core.segment_packbits(x, torch.tensor([0, 4, 7, 11], device="cuda"), bitorder="big")
    assert [bin(b) for b in packed.tolist()] == ["0b10110000", "0b100000", "0b11010000"]
    assert new_indptr.tolist() == [0, 1, 2, 3] and new_indptr.is_cuda


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64"])
@pytest.mark.parametrize("bitorder", ORDERS)
def test_segment_packbits_many_segments(bitorder, dtype):
    # Thousands of short segments (masks of 1-token requests next to long ones), any element dtype.
    rng = np.random.default_rng(case_seed("many", bitorder, dtype))
    lengths = rng.integers(0, 70, 5000)
    lengths[rng.random(5000) < 0.2] = 0
    indptr = random_indptr(rng, lengths)
    bits = random_bits(rng, int(indptr[-1]), dtype)
    expected, expected_indptr = reference_segments(bits, indptr, bitorder)
    out = poisoned(len(expected))
    _, new_indptr = fi_core.segment_packbits(on_gpu(bits), indptr, bitorder, out=out)
    np.testing.assert_array_equal(out.cpu().numpy(), expected)
    np.testing.assert_array_equal(new_indptr, expected_indptr)


def test_custom_mask_round_trip():
    # The prefill custom-mask format: per request a [qo_len, kv_len] boolean mask, row-major,
    # concatenated and packed little-endian per request; unpacking gives the masks back.
    rng = np.random.default_rng(case_seed("mask"))
    shapes = [(1, 17), (5, 5), (33, 100), (7, 0)]
    masks = [rng.random(s) < 0.5 for s in shapes]
    flat = np.concatenate([m.reshape(-1) for m in masks])
    indptr = random_indptr(rng, [m.size for m in masks])
    packed, new_indptr = fi_core.segment_packbits(on_gpu(flat), on_gpu(indptr.astype(np.int32)), bitorder="little")
    packed, new_indptr = packed.cpu().numpy(), new_indptr.cpu().numpy()
    for i, m in enumerate(masks):
        unpacked = np.unpackbits(packed[new_indptr[i]:new_indptr[i + 1]], bitorder="little")[: m.size]
        np.testing.assert_array_equal(unpacked.reshape(m.shape), m)


def test_launch_follows_torch_current_stream():
    # The side stream is busy before it writes x; a launch on any other stream reads stale bits.
    rng = np.random.default_rng(case_seed("stream"))
    bits = random_bits(rng, 100003)
    x_new = on_gpu(bits)
    x = torch.zeros_like(x_new)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        x.copy_(x_new)
        packed = fi_core.packbits(x, "little")
        segmented, _ = fi_core.segment_packbits(x, [0, 50000, 100003], "little")
    side.synchronize()
    np.testing.assert_array_equal(packed.cpu().numpy(), np.packbits(bits, bitorder="little"))
    np.testing.assert_array_equal(segmented.cpu().numpy(), reference_segments(bits, [0, 50000, 100003], "little")[0])


def test_cupy_arrays_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(case_seed("cupy"))
    bits = random_bits(rng, 12345)
    x = cupy.asarray(bits)
    indptr = random_indptr(rng, [0, 100, 3, 12000, 0])
    packed = fi_core.packbits(x, "little")
    assert isinstance(packed, cupy.ndarray) and packed.dtype == cupy.uint8
    np.testing.assert_array_equal(cupy.asnumpy(packed), np.packbits(bits, bitorder="little"))
    segmented, new_indptr = fi_core.segment_packbits(x, cupy.asarray(indptr), "big")
    expected, expected_indptr = reference_segments(bits, indptr, "big")
    assert isinstance(segmented, cupy.ndarray) and isinstance(new_indptr, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(segmented), expected)
    np.testing.assert_array_equal(cupy.asnumpy(new_indptr), expected_indptr)


def test_packbits_on_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU: the device switch is not exercised")
    rng = np.random.default_rng(case_seed("device1"))
    bits = random_bits(rng, 5000)
    x = torch.from_numpy(bits).to("cuda:1")
    packed, new_indptr = fi_core.segment_packbits(x, torch.tensor([0, 10, 5000], device="cuda:1"), "little")
    assert packed.device == x.device and new_indptr.device == x.device
    np.testing.assert_array_equal(packed.cpu().numpy(), reference_segments(bits, [0, 10, 5000], "little")[0])
    np.testing.assert_array_equal(fi_core.packbits(x).cpu().numpy(), np.packbits(bits))

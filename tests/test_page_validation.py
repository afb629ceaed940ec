"""Every bad argument of append_paged_kv_cache, get_batch_indices_positions and get_seq_lens
raises TypeError/ValueError naming the argument, what was expected and what was given, before
anything is launched; valid layouts, cache forms, strided pools, fp8 and int64 indices pass
validation. Runs without a GPU: the arrays are fake CUDA arrays (fake_arrays.py) whose memory is
never touched."""

import numpy as np
import pytest

import fi_core
from conftest import compile_cpp_example, nvcc_path
from fake_arrays import FakeCudaArray as Fake, expect, reaches_launch

KV_DTYPES = "float16, bfloat16, float8_e4m3fn or float8_e5m2"
NNZ, HEADS, DIM, PAGES, PAGE, BATCH = 10, 4, 64, 12, 16, 3


def row_major_strides(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.insert(0, acc)
        acc *= n
    return strides


def cache_shape(layout="NHD", single=True, pages=PAGES, page=PAGE, heads=HEADS, dim=DIM):
    inner = (page, heads) if layout == "NHD" else (heads, page)
    return (pages,) + ((2,) if single else ()) + inner + (dim,)


def append_call(key=None, value=None, batch_indices=None, positions=None, cache=None, kv_indices=None,
                kv_indptr=None, kv_last_page_len=None, kv_layout="NHD", dtype="float16", index="int32"):
    key = Fake((NNZ, HEADS, DIM), dtype) if key is None else key
    value = Fake(key.shape, key.dtype) if value is None else value
    cache = Fake(cache_shape(kv_layout), key.dtype) if cache is None else cache
    batch_indices = Fake((key.shape[0],), index) if batch_indices is None else batch_indices
    positions = Fake((key.shape[0],), index) if positions is None else positions
    kv_indices = Fake((PAGES,), index) if kv_indices is None else kv_indices
    kv_indptr = Fake((BATCH + 1,), index) if kv_indptr is None else kv_indptr
    kv_last_page_len = Fake((BATCH,), index) if kv_last_page_len is None else kv_last_page_len
    return lambda: fi_core.append_paged_kv_cache(key, value, batch_indices, positions, cache, kv_indices,
                                                 kv_indptr, kv_last_page_len, kv_layout)


def test_append_token_arrays():
    expect(TypeError, append_call(key=np.zeros((NNZ, HEADS, DIM), np.float16)), "append_key: expected a CUDA array", "CPU")
    expect(TypeError, append_call(value=[1.0]), "append_value: expected a CUDA array supporting DLPack", "list")
    expect(TypeError, append_call(dtype="float32"), f"append_key: expected dtype {KV_DTYPES}, got float32")
    expect(TypeError, append_call(dtype="uint8"), f"append_key: expected dtype {KV_DTYPES}, got uint8")
    expect(TypeError, append_call(value=Fake((NNZ, HEADS, DIM), "bfloat16")), "append_value: expected dtype float16, got bfloat16")
    # fp8 reaches the kernels as bytes: a format mismatch is caught by name.
    expect(TypeError, append_call(value=Fake((NNZ, HEADS, DIM), "float8_e4m3fn")),
           "append_value: expected dtype float16, got float8_e4m3fn")
    expect(TypeError, append_call(dtype="float8_e5m2", value=Fake((NNZ, HEADS, DIM), "float8_e4m3fn")),
           "append_value: expected dtype float8_e5m2, got float8_e4m3fn")
    expect(ValueError, append_call(key=Fake((NNZ, HEADS * DIM))),
           "append_key: expected 3 dimensions [nnz, num_kv_heads, head_dim], got 2 with shape (10, 256)")
    expect(ValueError, append_call(value=Fake((NNZ, HEADS, DIM - 8))),
           "append_value: expected shape [nnz, num_kv_heads, head_dim] = (10, 4, 64), got (10, 4, 56)")
    expect(ValueError, append_call(key=Fake((NNZ, HEADS, DIM), strides=(2 * HEADS * DIM, 2 * DIM, 2))),
           "append_key: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, append_call(value=Fake((NNZ, HEADS, DIM), device=1)),
           "append_value: expected the device of append_key (cuda:0), got cuda:1")


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_append_single_cache(layout):
    dims = ("[num_pages, 2, page_size, num_kv_heads, head_dim] (NHD)" if layout == "NHD"
            else "[num_pages, 2, num_kv_heads, page_size, head_dim] (HND)")
    call = lambda cache: append_call(cache=cache, kv_layout=layout)  # noqa: E731
    expect(TypeError, call(np.zeros(cache_shape(layout), np.float16)), "paged_kv_cache: expected a CUDA array")
    expect(TypeError, call(Fake(cache_shape(layout), "bfloat16")), "paged_kv_cache: expected dtype float16, got bfloat16")
    expect(ValueError, call(Fake(cache_shape(layout, single=False))), f"paged_kv_cache: expected 5 dimensions {dims}, got 4")
    bad_halves = list(cache_shape(layout))
    bad_halves[1] = 3
    expect(ValueError, call(Fake(tuple(bad_halves))),
           f"paged_kv_cache: expected shape {dims} = {cache_shape(layout)}, got {tuple(bad_halves)}")
    expect(ValueError, call(Fake(cache_shape(layout, heads=HEADS + 1))),
           f"paged_kv_cache: expected shape {dims} = {cache_shape(layout)}")
    expect(ValueError, call(Fake(cache_shape(layout, dim=2 * DIM))), f"= {cache_shape(layout)}, got {cache_shape(layout, dim=2 * DIM)}")
    expect(ValueError, call(Fake(cache_shape(layout, page=0))), "paged_kv_cache: expected a page_size in [1, 2^31), got shape")
    every_other = Fake(cache_shape(layout), strides=tuple(2 * s for s in row_major_strides(cache_shape(layout))))
    expect(ValueError, call(every_other), "paged_kv_cache: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, call(Fake(cache_shape(layout), device=3)), "paged_kv_cache: expected the device of append_key (cuda:0), got cuda:3")
    expect(ValueError, append_call(kv_layout="NDH"), "kv_layout: expected one of 'NHD', 'HND', got 'NDH'")


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_append_cache_pair(layout):
    shape = cache_shape(layout, single=False)
    dims = ("[num_pages, page_size, num_kv_heads, head_dim] (NHD)" if layout == "NHD"
            else "[num_pages, num_kv_heads, page_size, head_dim] (HND)")
    call = lambda k, v: append_call(cache=(k, v), kv_layout=layout)  # noqa: E731
    expect(ValueError, append_call(cache=(Fake(shape),)), "paged_kv_cache: expected one array or a (k_cache, v_cache) pair, got a tuple of 1")
    expect(ValueError, append_call(cache=[Fake(shape)] * 3), "got a list of 3")
    expect(TypeError, call(Fake(shape), None), "v_cache: expected a CUDA array supporting DLPack", "NoneType")
    expect(TypeError, call(Fake(shape, "bfloat16"), Fake(shape, "bfloat16")), "k_cache: expected dtype float16, got bfloat16")
    expect(TypeError, call(Fake(shape), Fake(shape, "float8_e4m3fn")), "v_cache: expected dtype float16, got float8_e4m3fn")
    expect(ValueError, call(Fake(cache_shape(layout)), Fake(cache_shape(layout))), f"k_cache: expected 4 dimensions {dims}, got 5")
    expect(ValueError, call(Fake(cache_shape(layout, single=False, heads=1)), Fake(shape)), f"k_cache: expected shape {dims} = {shape}")
    fewer_pages = cache_shape(layout, single=False, pages=PAGES - 1)
    expect(ValueError, call(Fake(shape), Fake(fewer_pages)),
           f"v_cache: expected shape (the shape of k_cache) = {shape}, got {fewer_pages}")
    expect(ValueError, call(Fake(shape), Fake(shape, device=1)), "v_cache: expected the device of append_key (cuda:0), got cuda:1")


def test_append_index_arrays():
    expect(TypeError, append_call(batch_indices=Fake((NNZ,), "float32")), "batch_indices: expected dtype int32 or int64, got float32")
    expect(TypeError, append_call(positions=np.zeros(NNZ, np.int32)), "positions: expected a CUDA array")
    expect(ValueError, append_call(positions=Fake((NNZ - 1,), "int32")), f"positions: expected shape [nnz] = ({NNZ},), got ({NNZ - 1},)")
    expect(ValueError, append_call(batch_indices=Fake((NNZ,), "int32", strides=(2,))),
           "batch_indices: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, append_call(kv_indptr=Fake((2, 2), "int32")),
           "kv_indptr: expected 1 dimensions [batch_size + 1], got 2 with shape (2, 2)")
    expect(ValueError, append_call(kv_indptr=Fake((0,), "int32")),
           "kv_indptr: expected shape [batch_size + 1] with 1 to 2^31 - 1 entries, got (0,)")
    expect(TypeError, append_call(kv_indices=Fake((PAGES,), "uint8")),
           "kv_indices: expected dtype int32 or int64, got uint8")
    expect(ValueError, append_call(kv_indices=Fake((PAGES,), "int32", device=1)), "kv_indices: expected the device of append_key (cuda:0), got cuda:1")
    expect(ValueError, append_call(kv_last_page_len=Fake((BATCH + 1,), "int32")),
           f"kv_last_page_len: expected shape [batch_size] = ({BATCH},), got ({BATCH + 1},)")
    expect(TypeError, append_call(kv_last_page_len=Fake((BATCH,), "float8_e4m3fn")),
           "kv_last_page_len: expected dtype int32 or int64, got float8_e4m3fn")


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_append_valid_calls_pass_validation(layout):
    reaches_launch(append_call(kv_layout=layout))
    reaches_launch(append_call(kv_layout=layout, dtype="bfloat16", index="int64"))
    for fp8 in ("float8_e4m3fn", "float8_e5m2"):
        reaches_launch(append_call(kv_layout=layout, dtype=fp8))
        pair = tuple(Fake(cache_shape(layout, single=False), fp8) for _ in range(2))
        reaches_launch(append_call(kv_layout=layout, dtype=fp8, cache=pair))
    # A cache inside a larger pool: every other page, 2 of 6 heads, 64 of 80 dims, odd offsets;
    # k and v of the pair with different strides; tokens as views into a packed QKV buffer.
    strides = row_major_strides(cache_shape(layout, pages=2 * PAGES, heads=6, dim=80))
    strides[0] *= 2
    reaches_launch(append_call(kv_layout=layout, cache=Fake(cache_shape(layout), strides=tuple(strides), misalign_bytes=2)))
    k = Fake(cache_shape(layout, single=False), strides=tuple(strides[:1] + strides[2:]))
    v = Fake(cache_shape(layout, single=False))
    reaches_launch(append_call(kv_layout=layout, cache=(k, v)))
    qkv = (NNZ, HEADS, DIM), (3 * HEADS * DIM, DIM, 1)
    reaches_launch(append_call(kv_layout=layout, key=Fake(qkv[0], strides=qkv[1]), value=Fake(qkv[0], strides=qkv[1])))
    # Mixed index dtypes and a page table with no requests.
    reaches_launch(append_call(kv_layout=layout, positions=Fake((NNZ,), "int64"), kv_indptr=Fake((1,), "int64"),
                               kv_last_page_len=Fake((0,), "int32")))


def test_append_without_tokens_launches_nothing():
    assert append_call(key=Fake((0, HEADS, DIM)))() is None


def test_get_batch_indices_positions_checks():
    fn = fi_core.get_batch_indices_positions
    indptr, seq_lens = Fake((BATCH + 1,), "int32"), Fake((BATCH,), "int64")

    def call(indptr=indptr, seq_lens=seq_lens, nnz=NNZ, bi=None, pos=None):
        bi = Fake((NNZ,), "int32") if bi is None else bi
        pos = Fake((NNZ,), "int32") if pos is None else pos
        return lambda: fn(indptr, seq_lens, nnz, batch_indices=bi, positions=pos)

    expect(TypeError, call(nnz=10.0), "nnz: expected an int, got float")
    expect(ValueError, call(nnz=-1), "nnz: expected an integer in [0, 2^31), got -1")
    expect(ValueError, call(nnz=NNZ + 1), f"batch_indices: expected shape [nnz] = ({NNZ + 1},), got ({NNZ},)")
    expect(TypeError, call(indptr=np.zeros(BATCH + 1, np.int32)), "append_indptr: expected a CUDA array")
    expect(TypeError, call(indptr=Fake((BATCH + 1,), "float32")), "append_indptr: expected dtype int32 or int64, got float32")
    expect(ValueError, call(indptr=Fake((0,), "int32")), "append_indptr: expected shape [batch_size + 1] with 1 to 2^31 - 1 entries")
    expect(ValueError, call(seq_lens=Fake((BATCH + 1,), "int32")), f"seq_lens: expected shape [batch_size] = ({BATCH},), got ({BATCH + 1},)")
    expect(ValueError, call(seq_lens=Fake((BATCH,), "int32", device=1)), "seq_lens: expected the device of append_indptr (cuda:0), got cuda:1")
    expect(TypeError, call(bi=Fake((NNZ,), "int64")), "batch_indices: expected dtype int32, got int64")
    expect(ValueError, call(pos=Fake((NNZ, 1), "int32")), f"positions: expected shape [nnz] = ({NNZ},), got ({NNZ}, 1)")
    expect(TypeError, lambda: fn(indptr, seq_lens, NNZ), "batch_indices: fi_core cannot allocate arrays of type FakeCudaArray")
    reaches_launch(call())
    reaches_launch(call(indptr=Fake((1,), "int64"), seq_lens=Fake((0,), "int32")))
    empty = Fake((0,), "int32")
    assert fn(indptr, seq_lens, 0, batch_indices=empty, positions=empty) == (empty, empty)


def test_get_seq_lens_checks():
    fn = fi_core.get_seq_lens
    indptr, last = Fake((BATCH + 1,), "int32"), Fake((BATCH,), "int32")

    def call(indptr=indptr, last=last, page_size=PAGE, out=None):
        out = Fake((BATCH,), "int32") if out is None else out
        return lambda: fn(indptr, last, page_size, out=out)

    expect(ValueError, call(page_size=0), "page_size: expected an integer in [1, 2^31), got 0")
    expect(ValueError, call(page_size=2**31), "page_size: expected an integer in [1, 2^31), got 2147483648")
    expect(TypeError, call(page_size=16.0), "page_size: expected an int, got float")
    expect(TypeError, call(indptr=Fake((BATCH + 1,), "float16")), "kv_indptr: expected dtype int32 or int64, got float16")
    expect(ValueError, call(last=Fake((BATCH - 1,), "int32")), f"kv_last_page_len: expected shape [batch_size] = ({BATCH},), got ({BATCH - 1},)")
    expect(TypeError, call(out=Fake((BATCH,), "int64")), "out: expected dtype int32, got int64")
    expect(ValueError, call(out=Fake((BATCH + 1,), "int32")), f"out: expected shape [batch_size] = ({BATCH},), got ({BATCH + 1},)")
    expect(ValueError, call(out=Fake((BATCH,), "int32", device=2)), "out: expected the device of kv_indptr (cuda:0), got cuda:2")
    expect(TypeError, lambda: fn(indptr, last, PAGE), "out: fi_core cannot allocate arrays of type FakeCudaArray")
    reaches_launch(call())
    reaches_launch(call(indptr=Fake((BATCH + 1,), "int64"), page_size=1))
    empty = Fake((0,), "int32")
    assert fn(Fake((1,), "int32"), empty, PAGE, out=empty) is empty


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found: C++ header test skipped")
def test_cpp_translation_unit_uses_the_page_and_merge_headers(tmp_path):
    compile_cpp_example("page_example.cu", tmp_path)

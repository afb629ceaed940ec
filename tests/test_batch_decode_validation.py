"""Batch decode without a GPU: every bad plan() argument raises TypeError/ValueError naming the
argument, what was expected and what was given (before any CUDA call: the workspace is a fake CUDA
array), run() before plan() is refused, and the scheduler's partition of random batches covers
every request's visible keys exactly once."""

import random

import numpy as np
import pytest

import fi_core
from conftest import case_seed
from fake_arrays import FakeCudaArray

HEAD_DIM = fi_core.build_info()["head_dims"][0]
_C = fi_core._C
MIN_CHUNK = 128  # kMinDecodeChunkLen in include/flashinfer/attention/decode.cuh


def page_table(kv_lens, page_size, rng):
    """CSR page table of requests with these lengths over randomly permuted page ids."""
    pages = [(n + page_size - 1) // page_size for n in kv_lens]
    indptr = np.concatenate([[0], np.cumsum(pages)]).astype(np.int32)
    indices = np.array(rng.sample(range(4 * max(int(indptr[-1]), 1)), int(indptr[-1])), dtype=np.int32)
    last = np.array([n - (p - 1) * page_size if p else 0 for n, p in zip(kv_lens, pages)], dtype=np.int32)
    return indptr, indices, last


def plan_args(**overrides):
    indptr, indices, last = page_table([5, 40, 17], 16, random.Random(0))
    args = dict(indptr=indptr, indices=indices, last_page_len=last, num_qo_heads=8, num_kv_heads=2,
                head_dim=HEAD_DIM, page_size=16)
    args.update(overrides)
    return args


def expect_plan(exc, *fragments, wrapper_kwargs=None, **overrides):
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(FakeCudaArray((1 << 20,), "uint8"),
                                                         **(wrapper_kwargs or {}))
    with pytest.raises(exc) as info:
        wrapper.plan(**plan_args(**overrides))
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def test_page_table_validation():
    expect_plan(ValueError, "indptr: expected non-decreasing values, got indptr[2] = 1 < indptr[1] = 3",
                indptr=np.array([0, 3, 1, 6], np.int32))
    expect_plan(ValueError, "last_page_len: expected values in [1, page_size = 16], got last_page_len[1] = 17",
                last_page_len=np.array([5, 17, 1], np.int32))
    expect_plan(ValueError, "last_page_len: expected values in [1, page_size = 16], got last_page_len[0] = 0",
                last_page_len=np.array([0, 8, 1], np.int32))
    expect_plan(ValueError, "indices: expected page ids >= 0, got indices[2] = -4",
                indices=np.array([3, 9, -4, 7, 1, 0], np.int32))
    expect_plan(ValueError, "indices: expected at least indptr[-1] = 6 entries, got 5",
                indices=np.array([3, 9, 4, 7, 2], np.int32))
    expect_plan(ValueError, "last_page_len: expected shape [batch_size]", last_page_len=np.array([5, 8], np.int32))
    expect_plan(ValueError, "indptr: expected batch_size + 1 >= 1 entries, got 0", indptr=np.zeros(0, np.int32),
                last_page_len=np.zeros(0, np.int32))
    expect_plan(TypeError, "indptr: expected an integer array (int32), got dtype float32",
                indptr=np.array([0, 1, 3, 5], np.float32))
    expect_plan(ValueError, "indptr: expected 1 dimensions", indptr=np.array([[0, 1, 3, 5]], np.int32))
    expect_plan(ValueError, "indptr: expected values that fit in int32", indptr=np.array([0, 1, 3, 2**40]))


def test_head_and_option_validation():
    expect_plan(ValueError, "num_qo_heads: expected a positive multiple of num_kv_heads (3), got 8", num_kv_heads=3)
    expect_plan(ValueError, "head_dim: 96 (head_dim) is not in this build", head_dim=96)
    expect_plan(ValueError, "page_size: expected a positive integer, got 0", page_size=0)
    expect_plan(TypeError, "q_data_type: expected one of", q_data_type="int8")
    expect_plan(TypeError, "kv_data_type: expected one of", kv_data_type="float64")
    expect_plan(ValueError, "q_data_type: expected float16 or bfloat16, got float8_e4m3fn",
                q_data_type="float8_e4m3fn")
    expect_plan(ValueError, "window_left: expected -1 (no window) or >= 0, got -3", window_left=-3)
    expect_plan(ValueError, "logits_soft_cap: expected >= 0", logits_soft_cap=-1.0)
    expect_plan(ValueError, "pos_encoding_mode: expected one of", pos_encoding_mode="ROPE")
    expect_plan(TypeError, "num_qo_heads: expected an int, got float", num_qo_heads=8.0)


def test_cuda_graph_buffers():
    with pytest.raises(TypeError, match="paged_kv_indices_buffer: expected an int32 CUDA array"):
        fi_core.BatchDecodeWithPagedKVCacheWrapper(
            FakeCudaArray((1 << 20,), "uint8"), use_cuda_graph=True,
            paged_kv_indptr_buffer=FakeCudaArray((4,), "int32"),
            paged_kv_last_page_len_buffer=FakeCudaArray((3,), "int32"))
    buffers = dict(use_cuda_graph=True, paged_kv_indptr_buffer=FakeCudaArray((4,), "int32"),
                   paged_kv_indices_buffer=FakeCudaArray((4,), "int32"),
                   paged_kv_last_page_len_buffer=FakeCudaArray((3,), "int32"))
    expect_plan(ValueError, "paged_kv_indices_buffer: expected room for at least 6 entries, got 4",
                wrapper_kwargs=buffers)
    expect_plan(ValueError, "indptr: expected batch_size + 1 = 4 entries", wrapper_kwargs=buffers,
                indptr=np.array([0, 5], np.int32), last_page_len=np.array([3], np.int32))


def test_workspace_and_run_before_plan():
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(FakeCudaArray((1 << 20,), "uint8"))
    with pytest.raises(RuntimeError, match="plan\\(\\) must succeed before run\\(\\)"):
        wrapper.run(FakeCudaArray((3, 8, HEAD_DIM)), FakeCudaArray((9, 2, 16, 2, HEAD_DIM)))
    with pytest.raises(TypeError, match="float_workspace_buffer: expected a CUDA array"):
        fi_core.BatchDecodeWithPagedKVCacheWrapper(np.zeros(16, np.uint8))
    with pytest.raises(ValueError, match="kv_layout: expected one of 'NHD', 'HND', got 'NDH'"):
        fi_core.BatchDecodeWithPagedKVCacheWrapper(FakeCudaArray((16,), "uint8"), kv_layout="NDH")


def visible_first(n, window_left):
    return n - 1 - window_left if 0 <= window_left and window_left + 1 < n else 0


def check_schedule(kv_lens, page_size, window_left, max_items, tokens_per_step, grid_size, fixed_chunk_len=0,
                   min_chunk_len=MIN_CHUNK):
    indptr, _, last = page_table(kv_lens, page_size, random.Random(1))
    work, state_indptr, chunk_len = _C.schedule_batch_decode(indptr, last, page_size, window_left, max_items,
                                                             tokens_per_step, min_chunk_len, grid_size,
                                                             fixed_chunk_len)
    batch = len(kv_lens)
    real = [w for w in work if w[0] >= 0]
    assert all(w[0] == -1 for w in work[len(real):]), "padding only at the end"
    assert len(work) == max(grid_size, len(real))
    if fixed_chunk_len:
        return check_fixed_chunks(kv_lens, window_left, fixed_chunk_len, real, chunk_len)
    assert chunk_len % tokens_per_step == 0
    covered = {b: [] for b in range(batch)}
    for request, partial_row, begin, end, kv_len, page_begin in real:
        assert 0 <= request < batch
        assert kv_len == kv_lens[request] and page_begin == indptr[request]
        covered[request].append((begin, end, partial_row))
        assert end - begin <= chunk_len
    rows = []
    for b, n in enumerate(kv_lens):
        first = visible_first(n, window_left)
        ranges = sorted(covered[b])
        assert ranges, f"request {b} has no column"
        # Consecutive, non-overlapping ranges covering exactly the visible keys [first, n).
        assert ranges[0][0] == first and ranges[-1][1] == n
        for (b0, e0, _), (b1, _, _) in zip(ranges, ranges[1:]):
            assert e0 == b1 and b1 > b0
        partial = [r for _, _, r in ranges]
        if len(ranges) == 1:
            assert partial == [-1] and state_indptr[b + 1] == state_indptr[b]
        else:
            assert partial == list(range(state_indptr[b], state_indptr[b + 1]))
            rows += partial
    assert sorted(rows) == list(range(len(rows))), "partial rows unique and dense"
    # Balance: the chunk is the shortest whole number of steps (and at least the minimum) whose
    # max_items columns hold every visible key, unless the longest request fits in one chunk.
    visible = [n - visible_first(n, window_left) for n in kv_lens]
    total, longest = sum(visible), max(visible + [1])
    whole = -(-longest // tokens_per_step) * tokens_per_step
    shortest = -(-min_chunk_len // tokens_per_step) * tokens_per_step
    if chunk_len < whole:
        assert chunk_len >= shortest and chunk_len * max_items >= total
        assert chunk_len == shortest or (chunk_len - tokens_per_step) * max_items < total, "not the shortest"
    else:
        assert chunk_len == whole and len(real) == batch, "a batch of requests within one chunk is not split"
        assert max(shortest, tokens_per_step) >= whole or max_items * (whole - tokens_per_step) < total
    assert len(real) <= max_items + batch, "at most max_items + batch columns (the CUDA-graph grid)"
    assert len(rows) <= 2 * max_items, "at most 2 * max_items partial rows (the CUDA-graph states)"
    return chunk_len, len(real)


def check_fixed_chunks(kv_lens, window_left, fixed_chunk_len, real, chunk_len):
    """A fixed chunk length cuts every request's visible keys into chunks of exactly that many keys
    (the last one shorter), whatever the batch and the wave."""
    for b, n in enumerate(kv_lens):
        first = visible_first(n, window_left)
        expected = [(k, min(k + fixed_chunk_len, n)) for k in range(first, n, fixed_chunk_len)] or [(first, n)]
        assert sorted((w[2], w[3]) for w in real if w[0] == b) == expected, f"request {b}"
    longest = max([n - visible_first(n, window_left) for n in kv_lens] + [1])
    assert chunk_len == min(fixed_chunk_len, longest)
    return chunk_len, len(real)


@pytest.mark.parametrize("trial", range(40))
def test_schedule_covers_every_key_once(trial):
    rng = random.Random(case_seed("schedule", trial))
    batch = rng.choice([1, 2, 7, 16, 100, 300])
    page_size = rng.choice([1, 5, 16])
    kv_lens = [rng.choice([0, 1, page_size - 1, page_size, page_size + 1, rng.randint(1, 20000)])
               for _ in range(batch)]
    window_left = rng.choice([-1, -1, 0, 100, 5000])
    max_items = rng.choice([8, 16, 132, 264, 1056])
    tokens_per_step = rng.choice([8, 16, 32, 64])
    min_chunk_len = rng.choice([tokens_per_step, MIN_CHUNK])
    grid_size = rng.choice([0, batch + max_items])
    check_schedule(kv_lens, page_size, window_left, max_items, tokens_per_step, grid_size,
                   min_chunk_len=min_chunk_len)
    # Fixed chunks (fixed_split_size pages, or every request whole): the same coverage rules.
    fixed_chunk_len = rng.choice([1, 7, 16, 128, 4096, 2**32 - 1])
    check_schedule(kv_lens, page_size, window_left, max_items, tokens_per_step, 0, fixed_chunk_len)


def test_schedule_splits_to_fill_the_gpu():
    # 16 requests of 4096 keys spread over 132 columns: 8 chunks of 512 each.
    chunk_len, items = check_schedule([4096] * 16, 16, -1, 132, 16, 0)
    assert (chunk_len, items) == (512, 128)
    # 16 columns (one CTA per SM at 8 KV heads): 16 requests stay whole, 8 are cut in two, one in 16.
    assert check_schedule([4096] * 16, 16, -1, 16, 64, 0, min_chunk_len=64) == (4096, 16)
    assert check_schedule([4096] * 8, 16, -1, 16, 64, 0, min_chunk_len=64) == (2048, 16)
    assert check_schedule([4096], 16, -1, 16, 64, 0, min_chunk_len=64) == (256, 16)
    # A batch with more keys than its columns' share stays whole; short requests are never cut
    # below the minimum chunk (128 keys; one 64-key step where that is the minimum).
    assert check_schedule([4096] * 200, 16, -1, 132, 16, 0) == (4096, 200)
    chunk_len, items = check_schedule([300] * 2, 16, -1, 132, 16, 0)
    assert chunk_len == MIN_CHUNK and items == 6
    assert check_schedule([512], 16, -1, 16, 64, 0, min_chunk_len=64) == (64, 8)


def test_schedule_splits_a_long_request_in_a_large_batch():
    # One request of 32768 keys among 300 of 100: their share of 16 columns is 3923 keys, so the
    # long request is cut into 9 chunks of 3968 (62 steps of 64) and the short ones stay whole.
    kv_lens = [32768] + [100] * 300
    chunk_len, items = check_schedule(kv_lens, 16, -1, 16, 64, 0, min_chunk_len=64)
    assert (chunk_len, items) == (3968, 9 + 300)


def test_fixed_chunks_do_not_depend_on_the_batch():
    # 3 requests alone and among 300 others (which fill the wave): the same chunks of 320 keys.
    alone = _C.schedule_batch_decode(*page_table([5000, 1, 777], 16, random.Random(2))[::2], 16, -1, 132, 64, 64, 0, 320)
    kv_lens = [5000, 1, 777] + [4096] * 300
    indptr, _, last = page_table(kv_lens, 16, random.Random(2))
    crowded = _C.schedule_batch_decode(indptr, last, 16, -1, 132, 64, 64, 0, 320)
    ranges = lambda work, b: [(w[2], w[3]) for w in work if w[0] == b]  # noqa: E731
    for b in range(3):
        assert ranges(alone[0], b) == ranges(crowded[0], b)
    # 5000 keys: 15 chunks of 320 and one of 200; 1 key: one chunk; 777 keys: 320 + 320 + 137.
    assert [len(ranges(alone[0], b)) for b in range(3)] == [16, 1, 3]
    assert ranges(alone[0], 2) == [(0, 320), (320, 640), (640, 777)]
    # Without a fixed length the lone requests would be split to fill the wave instead.
    automatic = _C.schedule_batch_decode(*page_table([5000, 1, 777], 16, random.Random(2))[::2], 16, -1, 132, 64, 64, 0)
    assert automatic[2] != 320


def test_split_options_validation():
    expect_plan(ValueError, "fixed_split_size: expected a positive number of pages, or None or -1 for the "
                "automatic split, got 0", fixed_split_size=0)
    expect_plan(ValueError, "got -3", fixed_split_size=-3)
    expect_plan(TypeError, "fixed_split_size: expected an int, got float", fixed_split_size=4.0)
    expect_plan(TypeError, "disable_split_kv: expected a bool, got int", disable_split_kv=1)
    expect_plan(ValueError, "fixed_split_size, disable_split_kv: expected at most one of them, got both",
                fixed_split_size=4, disable_split_kv=True)
    expect_plan(ValueError, "fixed_split_size: expected chunks of fewer than 2^31 keys, got 134217728 pages of 16",
                fixed_split_size=2**27)

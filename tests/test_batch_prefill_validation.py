"""Batch prefill without a GPU: every bad plan() / constructor argument raises TypeError/ValueError
naming the argument, what was expected and what was given (before any CUDA call: the workspace is
a fake CUDA array), run() before plan() is refused, and the scheduler's partition of random batches
covers every visible (request, token, head, key) exactly once, with bounded imbalance."""

import math
import random

import numpy as np
import pytest

import fi_core
from conftest import case_seed
from fake_arrays import FakeCudaArray

HEAD_DIM = fi_core.build_info()["head_dims"][0]
_C = fi_core._C
STEP = 64        # PrefillTraits::kStepKeys in include/flashinfer/attention/prefill.cuh
MIN_CHUNK = 256  # kMinPrefillChunkLen in include/flashinfer/attention/batch_prefill.cuh
Paged = fi_core.BatchPrefillWithPagedKVCacheWrapper
Ragged = fi_core.BatchPrefillWithRaggedKVCacheWrapper


def csr(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def paged_args(qo_lens=(3, 40, 1), kv_lens=(5, 40, 17), **overrides):
    page_size = 16
    pages = [(n + page_size - 1) // page_size for n in kv_lens]
    args = dict(qo_indptr=csr(qo_lens), paged_kv_indptr=csr(pages),
                paged_kv_indices=np.arange(sum(pages), dtype=np.int32)[::-1].copy(),
                paged_kv_last_page_len=np.array([n - (p - 1) * page_size for n, p in zip(kv_lens, pages)], np.int32),
                num_qo_heads=8, num_kv_heads=2, head_dim_qk=HEAD_DIM, page_size=page_size)
    args.update(overrides)
    return args


def ragged_args(qo_lens=(3, 40, 1), kv_lens=(5, 40, 17), **overrides):
    args = dict(qo_indptr=csr(qo_lens), kv_indptr=csr(kv_lens), num_qo_heads=8, num_kv_heads=2,
                head_dim_qk=HEAD_DIM)
    args.update(overrides)
    return args


def workspace(num_bytes=1 << 20):
    return FakeCudaArray((num_bytes,), "uint8")


def expect_plan(exc, *fragments, ragged=False, wrapper_kwargs=None, workspace_bytes=1 << 20, **overrides):
    wrapper = (Ragged if ragged else Paged)(workspace(workspace_bytes), **(wrapper_kwargs or {}))
    args = ragged_args(**overrides) if ragged else paged_args(**overrides)
    with pytest.raises(exc) as info:
        wrapper.plan(**args)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def test_exported_like_flashinfer():
    assert "BatchPrefillWithPagedKVCacheWrapper" in fi_core.__all__
    assert "BatchPrefillWithRaggedKVCacheWrapper" in fi_core.__all__
    assert Paged.forward is Paged.run and Ragged.forward is Ragged.run


@pytest.mark.parametrize("ragged", [False, True], ids=["paged", "ragged"])
def test_lengths_validation(ragged):
    kv_name = "kv_indptr" if ragged else "paged_kv_indptr"
    expect_plan(ValueError, "qo_indptr: expected qo_len <= kv_len for every request",
                "got qo_len = 6 > kv_len = 5 for request 0", ragged=ragged, qo_lens=(6, 40, 1))
    expect_plan(ValueError, "qo_indptr: expected non-decreasing values, got qo_indptr[2] = 1 < qo_indptr[1] = 3",
                ragged=ragged, qo_indptr=np.array([0, 3, 1, 4], np.int32))
    expect_plan(ValueError, "qo_indptr: expected qo_indptr[0] >= 0, got -1", ragged=ragged,
                qo_indptr=np.array([-1, 3, 4, 5], np.int32))
    expect_plan(ValueError, f"{kv_name}: expected shape [batch_size + 1] (qo_indptr has batch_size + 1) = (4,), "
                "got (3,)", ragged=ragged, **{kv_name: np.array([0, 1, 2], np.int32)})
    expect_plan(ValueError, "qo_indptr: expected batch_size + 1 >= 1 entries, got 0", ragged=ragged,
                qo_indptr=np.zeros(0, np.int32))
    expect_plan(TypeError, "qo_indptr: expected an integer array (int32), got dtype float32", ragged=ragged,
                qo_indptr=np.array([0, 1, 3, 5], np.float32))
    expect_plan(ValueError, "qo_indptr: expected 1 dimensions", ragged=ragged,
                qo_indptr=np.array([[0, 1, 3, 5]], np.int32))


def test_page_table_validation():
    expect_plan(ValueError, "paged_kv_last_page_len: expected values in [1, page_size = 16], got "
                "paged_kv_last_page_len[1] = 17", paged_kv_last_page_len=np.array([5, 17, 1], np.int32))
    expect_plan(ValueError, "paged_kv_last_page_len: expected shape [batch_size]",
                paged_kv_last_page_len=np.array([5, 8], np.int32))
    expect_plan(ValueError, "paged_kv_indices: expected page ids >= 0, got paged_kv_indices[2] = -4",
                paged_kv_indices=np.array([3, 9, -4, 7, 1, 0], np.int32))
    expect_plan(ValueError, "paged_kv_indices: expected at least paged_kv_indptr[-1] = 6 entries, got 5",
                paged_kv_indices=np.array([3, 9, 4, 7, 2], np.int32))
    expect_plan(ValueError, "page_size: expected a positive integer, got 0", page_size=0,
                paged_kv_last_page_len=np.array([1, 1, 1], np.int32))


@pytest.mark.parametrize("ragged", [False, True], ids=["paged", "ragged"])
def test_head_dtype_and_option_validation(ragged):
    expect_plan(ValueError, "num_qo_heads: expected a positive multiple of num_kv_heads (3), got 8", ragged=ragged,
                num_kv_heads=3)
    expect_plan(ValueError, "head_dim: 96 (head_dim) is not in this build", ragged=ragged, head_dim_qk=96)
    other_dim = 64 if HEAD_DIM != 64 else 128
    expect_plan(ValueError, f"head_dim_vo: expected None or head_dim_qk ({HEAD_DIM}), got {other_dim}", ragged=ragged,
                head_dim_vo=other_dim)
    expect_plan(TypeError, "q_data_type: expected one of", ragged=ragged, q_data_type="int8")
    expect_plan(ValueError, "q_data_type: expected float16 or bfloat16, got float32", ragged=ragged,
                q_data_type="float32", kv_data_type="float32")
    expect_plan(ValueError, "kv_data_type: expected the q data type (float16) or an fp8 type (float8_e4m3fn, "
                "float8_e5m2), got bfloat16", ragged=ragged, kv_data_type="bfloat16")
    expect_plan(ValueError, "kv_data_type: expected the q data type (bfloat16) or an fp8 type", "got float16",
                ragged=ragged, q_data_type="bfloat16", kv_data_type="float16")
    expect_plan(ValueError, "kv_data_type: expected the q data type (float16) or an fp8 type", "got float32",
                ragged=ragged, kv_data_type="float32")
    expect_plan(ValueError, "rope_theta: expected a positive number", ragged=ragged, pos_encoding_mode="ROPE_LLAMA",
                rope_theta=-5.0)
    expect_plan(ValueError, "pos_encoding_mode: expected one of", ragged=ragged, pos_encoding_mode="ROPE")
    expect_plan(ValueError, "window_left: expected -1 (no window) or >= 0, got -3", ragged=ragged, window_left=-3)
    expect_plan(ValueError, "logits_soft_cap: expected >= 0", ragged=ragged, logits_soft_cap=-1.0)
    expect_plan(TypeError, "num_qo_heads: expected an int, got float", ragged=ragged, num_qo_heads=8.0)
    expect_plan(TypeError, "causal: expected a bool, got int", ragged=ragged, causal=1)


# The default batch: qo_lens (3, 40, 1), kv_lens (5, 40, 17).
MASK_ELEMENTS = 3 * 5 + 40 * 40 + 1 * 17                       # 1632
MASK_BYTES = (3 * 5 + 7) // 8 + (40 * 40 + 7) // 8 + (17 + 7) // 8  # 2 + 200 + 3 = 205


@pytest.mark.parametrize("ragged", [False, True], ids=["paged", "ragged"])
def test_packed_custom_mask_validation(ragged):
    def bad(exc, *fragments, mask=None, **kw):
        expect_plan(exc, *fragments, ragged=ragged, packed_custom_mask=mask, **kw)

    bad(TypeError, "packed_custom_mask: expected a CUDA array", mask=np.ones(MASK_BYTES, np.uint8))
    bad(TypeError, "packed_custom_mask: expected dtype uint8, got int8", mask=FakeCudaArray((MASK_BYTES,), "int8"))
    bad(ValueError, "packed_custom_mask: expected 205 bytes (the sum over requests of ceil(qo_len * kv_len / 8)), "
        "got 204", mask=FakeCudaArray((MASK_BYTES - 1,), "uint8"))
    # Each request is padded to whole bytes: the unpadded count (ceil(1632 / 8) = 204) is short.
    bad(ValueError, "expected 205 bytes", mask=FakeCudaArray(((MASK_ELEMENTS + 7) // 8,), "uint8"))
    bad(ValueError, "packed_custom_mask: expected 1 dimensions [num_bytes], got 2", mask=FakeCudaArray((5, 41), "uint8"))
    bad(ValueError, "packed_custom_mask: expected 1 dimensions [num_bytes], got 0 with shape ()",
        mask=FakeCudaArray((), "uint8"))
    bad(ValueError, "packed_custom_mask: expected a contiguous array",
        mask=FakeCudaArray((MASK_BYTES,), "uint8", strides=(3,)))
    bad(ValueError, "packed_custom_mask: expected the device of workspace (cuda:0), got cuda:3",
        mask=FakeCudaArray((MASK_BYTES,), "uint8", device=3))
    # The lengths are checked before the mask.
    bad(ValueError, "qo_indptr: expected qo_len <= kv_len for every request", mask=FakeCudaArray((7,), "uint8"),
        qo_lens=(6, 40, 1))


@pytest.mark.parametrize("ragged", [False, True], ids=["paged", "ragged"])
def test_custom_mask_validation(ragged):
    def bad(exc, *fragments, mask=None, **kw):
        expect_plan(exc, *fragments, ragged=ragged, custom_mask=mask, **kw)

    bad(TypeError, "custom_mask: expected a CUDA array", "CPU", mask=np.ones(MASK_ELEMENTS, bool))
    bad(TypeError, "custom_mask: expected dtype bool, got int8", mask=FakeCudaArray((MASK_ELEMENTS,), "int8"))
    bad(ValueError, "custom_mask: expected shape [sum(qo_len * kv_len)] = (1632,), got (1631,)",
        mask=FakeCudaArray((MASK_ELEMENTS - 1,), "bool"))
    bad(ValueError, "custom_mask: expected shape [sum(qo_len * kv_len)] = (1632,), got (1, 1632)",
        mask=FakeCudaArray((1, MASK_ELEMENTS), "bool"))
    bad(TypeError, "custom_mask: fi_core packs boolean masks through their framework",
        mask=FakeCudaArray((MASK_ELEMENTS,), "bool"))
    # Malformed index arrays are reported as such (plan() checks them before the mask).
    bad(ValueError, "qo_indptr: expected non-decreasing values", mask=FakeCudaArray((MASK_ELEMENTS,), "bool"),
        qo_indptr=np.array([0, 3, 1, 4], np.int32))
    kv_name = "kv_indptr" if ragged else "paged_kv_indptr"
    bad(ValueError, f"{kv_name}: expected shape [batch_size + 1]", mask=FakeCudaArray((MASK_ELEMENTS,), "bool"),
        **{kv_name: np.array([0, 1, 2], np.int32)})
    if not ragged:
        bad(ValueError, "paged_kv_last_page_len: expected values in [1, page_size = 16]",
            mask=FakeCudaArray((MASK_ELEMENTS,), "bool"), paged_kv_last_page_len=np.array([5, 0, 1], np.int32))
    # packed_custom_mask wins (as in FlashInfer): custom_mask is then not looked at.
    expect_plan(ValueError, "packed_custom_mask: expected 205 bytes", ragged=ragged,
                custom_mask=np.zeros(3, np.int64), packed_custom_mask=FakeCudaArray((3,), "uint8"))


def test_custom_mask_buffers_in_cuda_graph_mode():
    buffers = dict(use_cuda_graph=True, qo_indptr_buf=FakeCudaArray((4,), "int32"),
                   paged_kv_indptr_buf=FakeCudaArray((4,), "int32"),
                   paged_kv_indices_buf=FakeCudaArray((8,), "int32"),
                   paged_kv_last_page_len_buf=FakeCudaArray((3,), "int32"))
    mask = FakeCudaArray((MASK_BYTES,), "uint8")
    expect_plan(TypeError, "custom_mask_buf: expected a uint8 CUDA array (the wrapper's) for a custom mask with "
                "use_cuda_graph=True, got None", wrapper_kwargs=buffers, packed_custom_mask=mask)
    expect_plan(ValueError, "custom_mask_buf: expected room for at least 205 bytes", "got 100",
                wrapper_kwargs=dict(buffers, custom_mask_buf=FakeCudaArray((100,), "uint8")), packed_custom_mask=mask)
    expect_plan(TypeError, "custom_mask_buf: expected dtype uint8, got int32",
                wrapper_kwargs=dict(buffers, custom_mask_buf=FakeCudaArray((300,), "int32")), packed_custom_mask=mask)
    expect_plan(ValueError, "mask_indptr_buf: expected room for at least 4 entries, got 3",
                wrapper_kwargs=dict(buffers, custom_mask_buf=FakeCudaArray((300,), "uint8"),
                                    mask_indptr_buf=FakeCudaArray((3,), "int32")), packed_custom_mask=mask)
    ragged_buffers = dict(use_cuda_graph=True, qo_indptr_buf=FakeCudaArray((4,), "int32"),
                          kv_indptr_buf=FakeCudaArray((4,), "int32"))
    expect_plan(ValueError, "custom_mask_buf: expected the device of workspace (cuda:0), got cuda:1", ragged=True,
                wrapper_kwargs=dict(ragged_buffers, custom_mask_buf=FakeCudaArray((300,), "uint8", device=1)),
                packed_custom_mask=mask)
    # Outside CUDA-graph mode the buffers are not used (as in FlashInfer).
    if _C.cuda_device_count() == 0:
        expect_plan(RuntimeError, "CUDA error", wrapper_kwargs=dict(custom_mask_buf=FakeCudaArray((1,), "uint8")),
                    packed_custom_mask=mask)


def test_constructor_validation():
    with pytest.raises(TypeError, match="float_workspace_buffer: expected a CUDA array"):
        Paged(np.zeros(16, np.uint8))
    with pytest.raises(ValueError, match="kv_layout: expected one of 'NHD', 'HND', got 'NDH'"):
        Ragged(workspace(), kv_layout="NDH")
    with pytest.raises(TypeError, match="custom_mask_buf: expected a CUDA array"):
        Paged(workspace(), custom_mask_buf=np.zeros(16, np.uint8))
    with pytest.raises(TypeError, match="mask_indptr_buf: expected a CUDA array"):
        Ragged(workspace(), mask_indptr_buf=np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="backend: expected 'auto' or 'fa2'"):
        Ragged(workspace(), backend="fa3")
    with pytest.raises(TypeError, match="paged_kv_indices_buf: expected an int32 CUDA array with use_cuda_graph"):
        Paged(workspace(), use_cuda_graph=True, qo_indptr_buf=FakeCudaArray((4,), "int32"),
              paged_kv_indptr_buf=FakeCudaArray((4,), "int32"),
              paged_kv_last_page_len_buf=FakeCudaArray((3,), "int32"))
    with pytest.raises(TypeError, match="kv_indptr_buf: expected an int32 CUDA array with use_cuda_graph"):
        Ragged(workspace(), use_cuda_graph=True, qo_indptr_buf=FakeCudaArray((4,), "int32"))


def test_cuda_graph_buffers():
    buffers = dict(use_cuda_graph=True, qo_indptr_buf=FakeCudaArray((4,), "int32"),
                   paged_kv_indptr_buf=FakeCudaArray((4,), "int32"),
                   paged_kv_indices_buf=FakeCudaArray((4,), "int32"),
                   paged_kv_last_page_len_buf=FakeCudaArray((3,), "int32"))
    expect_plan(ValueError, "paged_kv_indices_buffer: expected room for at least 6 entries, got 4",
                wrapper_kwargs=buffers)
    expect_plan(ValueError, "qo_indptr: expected batch_size + 1 = 4 entries", wrapper_kwargs=buffers,
                qo_lens=(3,), kv_lens=(5,))


def test_run_before_plan_and_valid_plan_reaches_cuda():
    wrapper = Paged(workspace())
    with pytest.raises(RuntimeError, match="plan\\(\\) must succeed before run\\(\\)"):
        wrapper.run(FakeCudaArray((44, 8, HEAD_DIM)), FakeCudaArray((9, 2, 16, 2, HEAD_DIM)))
    if _C.cuda_device_count() == 0:
        with pytest.raises(RuntimeError, match="CUDA error"):
            wrapper.plan(**paged_args(causal=True, window_left=3, logits_soft_cap=2.0, pos_encoding_mode="ALIBI"))
        with pytest.raises(RuntimeError, match="CUDA error"):
            Ragged(workspace()).plan(**ragged_args(causal=True))
        with pytest.raises(RuntimeError, match="CUDA error"):
            Ragged(workspace()).plan(**ragged_args(causal=True, packed_custom_mask=FakeCudaArray((205,), "uint8")))
        # RoPE on the fly and fp8 KV (either 16-bit q, e4m3 or e5m2) pass every plan check.
        with pytest.raises(RuntimeError, match="CUDA error"):
            Ragged(workspace()).plan(**ragged_args(causal=True, pos_encoding_mode="ROPE_LLAMA", rope_theta=5e5))
        for q_dtype in ("float16", "bfloat16"):
            for kv_dtype in ("float8_e4m3fn", "float8_e5m2"):
                with pytest.raises(RuntimeError, match="CUDA error"):
                    Paged(workspace()).plan(**paged_args(q_data_type=q_dtype, kv_data_type=kv_dtype,
                                                         pos_encoding_mode="ROPE_LLAMA"))


# ---------------------------------------------------------------------------------------------
# The scheduler alone.

def visible(qo_len, kv_len, token, causal, window_left):
    pos = token + kv_len - qo_len
    begin = pos - window_left if 0 <= window_left < pos else 0
    return begin, pos + 1 if causal else kv_len


def schedule(qo_lens, kv_lens, group, causal, window_left, tile_rows, max_items, grid_size=0, merge_rows=0,
             fixed_chunk_len=0):
    return _C.schedule_batch_prefill(csr(qo_lens), np.array(kv_lens, np.int32), group * 2, 2, causal, window_left,
                                     tile_rows, max_items, grid_size, merge_rows, fixed_chunk_len)


def check_schedule(qo_lens, kv_lens, group, causal, window_left, tile_rows, max_items, grid_size=0, merge_rows=0,
                   fixed_chunk_len=0):
    """Checks a schedule against the lengths; fixed_chunk_len as plan()'s fixed_split_size in keys
    (0: the automatic split; 2^32 - 1: disable_split_kv)."""
    work, state_indptr, rows, chunk_len, num_tiles = schedule(qo_lens, kv_lens, group, causal, window_left,
                                                              tile_rows, max_items, grid_size, merge_rows,
                                                              fixed_chunk_len)
    qo_indptr = csr(qo_lens)
    nnz = int(qo_indptr[-1])
    if tile_rows == 0:
        avg = nnz * group / max(len(qo_lens), 1)
        # The CPU entry point chooses as for head_dim 128, where 128-row tiles exist.
        assert rows == (16 if avg <= 16 else 128 if avg >= 128 else 64), "query tile from the average packed rows"
    else:
        assert rows == tile_rows
    real = [w for w in work if w[0] >= 0]
    assert all(w[0] == -1 for w in work[len(real):]), "padding only at the end"
    assert len(work) == max(grid_size, len(real))
    assert len(state_indptr) == max(merge_rows, nnz) + 1
    assert all(b >= a for a, b in zip(state_indptr, state_indptr[1:]))
    # Longest work first.
    costs = [(w[7] - w[6]) * (w[5] - w[4]) for w in real]
    assert costs == sorted(costs, reverse=True)

    intervals = {}   # (request, token, head) -> [(begin, end)] of visible keys covered
    states = {}      # (request, token, head) -> [state]
    tiles = {}       # (request, row_begin) -> (row_end, key range covered, num_chunks)
    for request, qo_begin, qo_len, kv_len, row_begin, row_end, kv_begin, kv_end, partial, num_chunks, chunk in real:
        assert qo_begin == qo_indptr[request] and qo_len == qo_lens[request] and kv_len == kv_lens[request]
        assert 0 < row_end - row_begin <= rows and row_end <= qo_len * group
        first, last = row_begin // group, (row_end - 1) // group
        if group <= rows:
            assert row_begin % group == 0 and (row_end % group == 0), "tiles hold whole tokens"
        else:
            assert first == last, "a token spread over tiles: one token per tile"
        assert 0 <= chunk < num_chunks and kv_begin < kv_end
        tile_begin, _ = visible(qo_len, kv_len, first, causal, window_left)
        _, tile_end = visible(qo_len, kv_len, last, causal, window_left)
        assert tile_begin <= kv_begin and kv_end <= tile_end, "a column reads only keys its tile sees"
        if num_chunks > 1:
            assert chunk_len > 0 and kv_end - kv_begin <= chunk_len
            if fixed_chunk_len:
                assert chunk_len == fixed_chunk_len, "the fixed length, whatever the wave"
            else:
                assert chunk_len % STEP == 0, "chunks in whole kernel steps"
            assert kv_begin == tile_begin + chunk * chunk_len, "chunks counted from the tile's first visible key"
        else:
            assert partial == -1 and (kv_begin, kv_end) == (tile_begin, tile_end)
        span = tiles.setdefault((request, row_begin), [row_end, [], num_chunks])
        span[1].append((kv_begin, kv_end))
        for row in range(row_begin, row_end):
            token, head = divmod(row, group)
            b, e = visible(qo_len, kv_len, token, causal, window_left)
            lo, hi = max(b, kv_begin), min(e, kv_end)
            key = (request, token, head)
            if lo < hi:
                intervals.setdefault(key, []).append((lo, hi))
            if partial >= 0:
                state = partial + (token - first) * num_chunks + chunk
                g = qo_begin + token
                assert state_indptr[g] <= state < state_indptr[g + 1], "state within the token's CSR range"
                assert state_indptr[g + 1] - state_indptr[g] == num_chunks
                states.setdefault(key, []).append(state)
            else:
                assert state_indptr[qo_begin + token] == state_indptr[qo_begin + token + 1], \
                    "an unsplit token has no partial states"
    # Every visible (request, token, head, key) exactly once.
    for request, (qo_len, kv_len) in enumerate(zip(qo_lens, kv_lens)):
        for token in range(qo_len):
            b, e = visible(qo_len, kv_len, token, causal, window_left)
            for head in range(group):
                got = sorted(intervals.get((request, token, head), []))
                assert got and got[0][0] == b and got[-1][1] == e, f"request {request} token {token} head {head}"
                for (_, e0), (b1, _) in zip(got, got[1:]):
                    assert e0 == b1, f"gap or overlap at request {request} token {token} head {head}"
    # Each split (token, head) writes each of its states once.
    for key, got in states.items():
        assert len(got) == len(set(got))
    assert sum(len(v) for v in states.values()) == (int(state_indptr[-1]) * group if states else 0)

    assert num_tiles == len(tiles)
    if fixed_chunk_len:
        # Every tile cut into chunks of the fixed length (or whole), however full the wave.
        for _, covered, num_chunks in tiles.values():
            keys = max(e for _, e in covered) - min(b for b, _ in covered)
            assert num_chunks == max(1, math.ceil(keys / fixed_chunk_len))
        return rows, chunk_len, len(real)
    # Balance: a batch with enough tiles is not split; else the chunks fit one wave and are as short
    # as the wave allows.
    if num_tiles >= max_items:
        assert len(real) == num_tiles and chunk_len == 0
    else:
        assert len(real) <= max_items, "the split fits one wave"
        ranges = [(min(r[0] for r in span[1]), max(r[1] for r in span[1])) for span in tiles.values()]
        if chunk_len > 0:
            longest = max(e - b for b, e in ranges)
            if chunk_len > MIN_CHUNK:
                shorter = chunk_len - STEP
                assert sum(max(1, math.ceil((e - b) / shorter)) for b, e in ranges) > max_items, "shortest chunk"
            total_keys = sum(e - b for b, e in ranges)
            bound = max(MIN_CHUNK, STEP * math.ceil(total_keys / (max_items - num_tiles) / STEP))
            assert chunk_len <= max(bound, STEP * math.ceil(longest / STEP))
            assert max(w[7] - w[6] for w in real) <= min(chunk_len, bound)
    return rows, chunk_len, len(real)


@pytest.mark.parametrize("trial", range(60))
def test_schedule_covers_every_visible_pair_once(trial):
    rng = random.Random(case_seed("prefill_schedule", trial))
    batch = rng.choice([1, 2, 5, 16, 40])
    qo_lens = [rng.choice([0, 1, 1, 2, 15, 16, 17, 63, 64, 65, rng.randint(1, 300)]) for _ in range(batch)]
    kv_lens = [q + rng.choice([0, 0, 1, 63, rng.randint(0, 3000)]) for q in qo_lens]
    group = rng.choice([1, 2, 3, 4, 8, 16, 32])
    causal = rng.random() < 0.6
    window_left = rng.choice([-1, -1, 0, 5, 200])
    tile_rows = rng.choice([0, 16, 64, 128])
    max_items = rng.choice([4, 33, 132, 264])
    graph = rng.random() < 0.3
    nnz = sum(qo_lens)
    check_schedule(qo_lens, kv_lens, group, causal, window_left, tile_rows, max_items,
                   grid_size=max(max_items, 4 * nnz + batch) if graph else 0, merge_rows=nnz + 7 if graph else 0)


def test_schedule_splits_short_batches_with_long_keys():
    # One request, 4 tokens x 4 heads against 20000 keys: one 16-row tile; 33 columns per wave.
    rows, chunk_len, items = check_schedule([4], [20000], 4, True, -1, 0, 33)
    assert rows == 16 and items <= 33 and chunk_len == STEP * math.ceil(20000 / 33 / STEP)
    # A long prompt (nearly) fills the GPU by itself (2 KV heads x 132 columns = 264 CTAs, 2 per
    # SM): 128-row tiles, never split (128 columns: a split would shorten the longest by 3%).
    rows, chunk_len, items = check_schedule([4096], [4096], 4, True, -1, 0, 132)
    assert (rows, chunk_len, items) == (128, 0, 4096 * 4 // 128)
    rows, chunk_len, items = check_schedule([16384], [16384], 1, False, -1, 0, 132)
    assert (rows, chunk_len, items) == (128, 0, 16384 // 128)
    # A few long requests on a large GPU: split, the longest column at most 3/4 of a request.
    rows, chunk_len, items = check_schedule([2048, 2048], [2048, 2048], 1, False, -1, 0, 132)
    assert rows == 128 and 0 < chunk_len <= 2048 * 3 // 4 and items <= 132


DISABLE_SPLIT = 2**32 - 1  # what plan(disable_split_kv=True) passes as the chunk length


@pytest.mark.parametrize("trial", range(30))
def test_fixed_chunks_cut_every_tile_from_its_first_key(trial):
    rng = random.Random(case_seed("prefill_fixed_chunks", trial))
    batch = rng.choice([1, 3, 16])
    qo_lens = [rng.choice([1, 2, 17, 64, rng.randint(1, 300)]) for _ in range(batch)]
    kv_lens = [q + rng.choice([0, 63, rng.randint(0, 3000)]) for q in qo_lens]
    fixed = rng.choice([1, 5, 16, 64, 100, 1024, 100000, DISABLE_SPLIT])
    check_schedule(qo_lens, kv_lens, rng.choice([1, 4, 8]), rng.random() < 0.6, rng.choice([-1, -1, 7, 300]),
                   rng.choice([16, 64, 128]), rng.choice([4, 33, 264]), fixed_chunk_len=fixed)


def test_fixed_chunks_do_not_depend_on_the_rest_of_the_batch():
    # A request's columns (key ranges and chunk counts of its tiles) with a fixed chunk length and
    # query tile are the same alone and in a batch that changes the automatic split.
    def columns(qo_lens, kv_lens, request, fixed):
        work = schedule(qo_lens, kv_lens, 4, True, -1, 64, 33, fixed_chunk_len=fixed)[0]
        return sorted((w[4], w[5], w[6], w[7], w[9], w[10]) for w in work if w[0] == request)
    alone = columns([100], [5000], 0, 256)
    assert alone == columns([30, 100, 7], [900, 5000, 12000], 1, 256)
    # 7 tiles of 16 tokens (64 rows of 4 heads); tile t sees keys up to 4900 + its last token + 1.
    assert len(alone) == sum(math.ceil((4900 + min(16 * (t + 1), 100)) / 256) for t in range(7))
    # The automatic split of the same request differs between the two batches.
    assert columns([100], [5000], 0, 0) != columns([30, 100, 7], [900, 5000, 12000], 1, 0)


def test_disable_split_keeps_every_tile_whole():
    # One request, 4 tokens x 4 heads against 20000 keys would be split over the wave.
    assert check_schedule([4], [20000], 4, True, -1, 0, 33)[1] > 0
    rows, chunk_len, items = check_schedule([4], [20000], 4, True, -1, 0, 33, fixed_chunk_len=DISABLE_SPLIT)
    assert (rows, chunk_len, items) == (16, 0, 1)


@pytest.mark.parametrize("ragged", [False, True], ids=["paged", "ragged"])
def test_split_option_validation(ragged):
    unit = "keys" if ragged else "pages"
    expect_plan(ValueError, f"fixed_split_size: expected a positive number of {unit}, or None or -1 for the "
                "automatic split, got 0", ragged=ragged, fixed_split_size=0)
    expect_plan(ValueError, "got -2", ragged=ragged, fixed_split_size=-2)
    expect_plan(TypeError, "fixed_split_size: expected an int, got float", ragged=ragged, fixed_split_size=4.0)
    expect_plan(TypeError, "disable_split_kv: expected a bool, got int", ragged=ragged, disable_split_kv=1)
    expect_plan(ValueError, "fixed_split_size, disable_split_kv: expected at most one of them, got both",
                ragged=ragged, fixed_split_size=4, disable_split_kv=True)
    expect_plan(ValueError, "fixed_split_size: expected chunks of fewer than 2^31 keys", ragged=ragged,
                fixed_split_size=2**31 if ragged else 2**27)
    # Valid options pass validation and reach the device, where the fake workspace gives a CUDA error.
    # The workspace is large enough for the partial states of 4-key chunks at every head dim.
    for options in ({"fixed_split_size": 4}, {"fixed_split_size": -1}, {"fixed_split_size": None},
                    {"disable_split_kv": True}):
        expect_plan(RuntimeError, "CUDA error", ragged=ragged, workspace_bytes=64 << 20, **options)


@pytest.mark.parametrize("distribution", ["uniform", "zipf"])
@pytest.mark.parametrize("max_items", [33, 264, 2000])
def test_schedule_balance_for_uniform_and_zipf_batches(distribution, max_items):
    rng = random.Random(case_seed("prefill_balance", distribution))
    if distribution == "uniform":
        qo_lens = [rng.randint(512, 2048) for _ in range(16)]
    else:  # rank-based Zipf as in bench/workloads.py: one long request among many short ones
        qo_lens = [max(64, round(8192 / rank)) for rank in range(1, 17)]
        rng.shuffle(qo_lens)
    rows, chunk_len, items = check_schedule(qo_lens, qo_lens, 4, True, -1, 0, max_items)
    assert rows == 128


def test_schedule_validation():
    with pytest.raises(ValueError, match="kv_lens: expected kv_len >= qo_len for every request, got kv_lens\\[1\\] = 2"):
        schedule([1, 3], [5, 2], 4, True, -1, 0, 10)
    with pytest.raises(ValueError, match="query_tile_rows: expected 0 \\(automatic, as for head_dim 128\\), 16, 64 or 128, got 32"):
        schedule([1], [5], 4, True, -1, 32, 10)

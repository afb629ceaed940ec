"""append_paged_kv_cache, get_batch_indices_positions and get_seq_lens on the GPU against numpy
references written from the page-table definition (DESIGN.md, FlashInfer's flashinfer.page), on
fresh random page tables and data: page sizes 1, 5 and 16, NHD and HND, one cache tensor or a
(k_cache, v_cache) pair, fp16, bf16 and both fp8 formats, pages drawn in random order from a larger
cache, caches that are strided slices of a larger pool (nothing outside the slice may change),
odd head dims, int64 indices, and tokens without a valid slot (skipped). Every append compares the
whole cache bit for bit: written slots hold the new rows, every other slot keeps its value."""

import numpy as np
import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core

KV_DTYPES = ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
PAGE_SIZES = [1, 5, 16]
LAYOUTS = ["NHD", "HND"]
FORMS = ["single", "pair"]
BATCH, HEADS, DIM = 7, 4, 128


class PageTable:
    """A random batch of requests with old and appended tokens, their pages drawn in random order
    from a cache of about twice as many pages as they need; numpy arrays and the references."""

    def __init__(self, rng, page_size, batch=BATCH, max_old=40, max_new=24):
        old = rng.integers(0, max_old, batch)
        new = rng.integers(1, max_new, batch)
        # On every draw: a request that appends nothing, one that starts empty, one without pages.
        new[0], old[1], old[2], new[2] = 0, 0, 0, 0
        self.page_size = page_size
        self.seq_lens = old + new
        pages = -(-self.seq_lens // page_size)
        self.kv_indptr = np.concatenate([[0], np.cumsum(pages)])
        self.num_pages = 2 * int(pages.sum()) + 3
        self.kv_indices = rng.permutation(self.num_pages)[: pages.sum()]
        self.kv_last_page_len = np.where(self.seq_lens > 0, (self.seq_lens - 1) % page_size + 1, 0)
        self.append_indptr = np.concatenate([[0], np.cumsum(new)])
        self.nnz = int(self.append_indptr[-1])
        # The appended tokens are the last of their request: token i of request b is at
        # seq_lens[b] - (append_indptr[b + 1] - i).
        self.batch_indices = np.repeat(np.arange(batch), new)
        self.positions = (self.seq_lens[self.batch_indices] - self.append_indptr[self.batch_indices + 1]
                          + np.arange(self.nnz))

    def slots(self, batch_indices, positions, kv_indices):
        """(token, page, slot) of every token that has a slot in the cache; the others are skipped."""
        found = []
        for token, (b, pos) in enumerate(zip(batch_indices, positions)):
            if not 0 <= b < len(self.seq_lens) or pos < 0:
                continue
            entry = self.kv_indptr[b] + pos // self.page_size
            if entry >= self.kv_indptr[b + 1] or entry >= len(kv_indices):
                continue
            if 0 <= kv_indices[entry] < self.num_pages:
                found.append((token, kv_indices[entry], pos % self.page_size))
        return [torch.tensor([f[i] for f in found], dtype=torch.long, device="cuda") for i in range(3)]


def on_gpu(a, dtype="int32"):
    return torch.tensor(np.asarray(a), dtype=getattr(torch, dtype), device="cuda")


def randn(shape, dtype, gen):
    return torch.randn(tuple(shape), generator=gen, device="cuda").to(getattr(torch, dtype))


def bits(t):
    """The raw elements of t (same shape and strides), for bit-exact comparisons and copies."""
    return t.view(torch.uint8 if t.element_size() == 1 else torch.int16)


def storage(shape, dtype, gen, strided, misaligned, variant=0):
    """A random tensor and the index of a `shape` view into it: all of it, or (strided) a slice of
    a larger pool: every other page, the middle dimensions padded and offset by 1 + variant, and
    head_dim (padded by a multiple of 32 elements, so that rows stay 16-byte aligned) at an
    offset that keeps that alignment or (misaligned) breaks it."""
    if not strided:
        return randn(shape, dtype, gen), tuple(slice(None) for _ in shape)
    middle = [1 + variant] * (len(shape) - 2)
    head_dim_offset = 3 + variant if misaligned else 16 * (1 + variant)
    pool = ([2 * shape[0] + 1] + [n + o + 1 for n, o in zip(shape[1:-1], middle)]
            + [shape[-1] + 32 * (1 + variant)])
    index = ((slice(1, 1 + 2 * shape[0], 2),) + tuple(slice(o, o + n) for n, o in zip(shape[1:-1], middle))
             + (slice(head_dim_offset, head_dim_offset + shape[-1]),))
    return randn(pool, dtype, gen), index


def make_cache(num_pages, page_size, layout, form, dtype, gen, head_dim=DIM, strided=False, misaligned=False):
    """(pools, views): the tensors that hold the cache, and a function of such tensors (the pools
    or clones of them) giving (paged_kv_cache argument, k view, v view)."""
    inner = (page_size, HEADS) if layout == "NHD" else (HEADS, page_size)
    if form == "single":
        pool, index = storage((num_pages, 2) + inner + (head_dim,), dtype, gen, strided, misaligned)

        def single(pools):
            cache = pools[0][index]
            return cache, cache[:, 0], cache[:, 1]
        return [pool], single
    # k and v apart, with different strides when strided.
    (k_pool, k_index), (v_pool, v_index) = (
        storage((num_pages,) + inner + (head_dim,), dtype, gen, strided, misaligned, variant) for variant in (0, 1))

    def pair(pools):
        k, v = pools[0][k_index], pools[1][v_index]
        return (k, v), k, v
    return [k_pool, v_pool], pair


def write_reference(view, rows, pages, slots, layout):
    """view[page, slot] = row (NHD), view[page, :, slot] = row (HND), bit for bit."""
    if layout == "NHD":
        bits(view)[pages, slots] = bits(rows)
    else:
        bits(view)[pages, :, slots] = bits(rows)


def check_index_conversions(table, index_dtype):
    """get_seq_lens and get_batch_indices_positions against the numpy references; returns the
    table's arrays on the GPU, batch_indices and positions from fi_core."""
    indptr, last = on_gpu(table.kv_indptr, index_dtype), on_gpu(table.kv_last_page_len, index_dtype)
    seq_lens = fi_core.get_seq_lens(indptr, last, table.page_size)
    assert seq_lens.dtype == torch.int32 and seq_lens.tolist() == table.seq_lens.tolist()
    batch_indices, positions = fi_core.get_batch_indices_positions(
        on_gpu(table.append_indptr, index_dtype), seq_lens, table.nnz)
    assert batch_indices.dtype == positions.dtype == torch.int32
    assert batch_indices.tolist() == table.batch_indices.tolist()
    assert positions.tolist() == table.positions.tolist()
    return indptr, last, batch_indices, positions


def run_append(seed, dtype, page_size, layout, form, head_dim=DIM, strided=False, misaligned=False,
               index_dtype="int32", corrupt=False):
    table = PageTable(np.random.default_rng(seed), page_size)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    indptr, last, batch_indices, positions = check_index_conversions(table, index_dtype)
    kv_indices = table.kv_indices.copy()
    if corrupt:
        # Tokens without a slot: a batch index below 0 and one past the batch, a negative
        # position, a position past the request's pages, page-table entries outside the cache.
        batch_indices[0], batch_indices[1], positions[2] = -1, BATCH, -5
        b = int(batch_indices[3])
        positions[3] = int(table.kv_indptr[b + 1] - table.kv_indptr[b]) * page_size
        kv_indices[int(table.kv_indptr[b])] = table.num_pages
        kv_indices[-1] = -1
    pages, slots_view = make_cache(table.num_pages, page_size, layout, form, dtype, gen, head_dim, strided, misaligned)
    if strided:  # keys and values: heads of a packed [nnz, 3 * heads, head_dim] QKV buffer
        qkv = randn((table.nnz, 3 * HEADS, head_dim), dtype, gen)
        key, value = qkv[:, HEADS:2 * HEADS], qkv[:, 2 * HEADS:]
    else:
        key, value = (randn((table.nnz, HEADS, head_dim), dtype, gen) for _ in range(2))

    expected = [p.clone() for p in pages]
    _, k_ref, v_ref = slots_view(expected)
    tokens, page_ids, slot_ids = table.slots(batch_indices.tolist(), positions.tolist(), kv_indices)
    if corrupt:
        assert len(tokens) < table.nnz - 4
    write_reference(k_ref, key[tokens], page_ids, slot_ids, layout)
    write_reference(v_ref, value[tokens], page_ids, slot_ids, layout)

    cache, _, _ = slots_view(pages)
    assert fi_core.append_paged_kv_cache(
        key, value, batch_indices.to(getattr(torch, index_dtype)), positions.to(getattr(torch, index_dtype)),
        cache, on_gpu(kv_indices, index_dtype), indptr, last, kv_layout=layout) is None
    for got, want in zip(pages, expected):
        assert torch.equal(bits(got), bits(want)), "cache differs from the reference (written or untouched slots)"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("page_size", PAGE_SIZES, ids=lambda p: f"p{p}")
@pytest.mark.parametrize("dtype", KV_DTYPES)
def test_append_matches_reference(dtype, page_size, layout, form):
    run_append(case_seed("append", dtype, page_size, layout, form), dtype, page_size, layout, form)


@pytest.mark.parametrize("misaligned", [False, True], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", KV_DTYPES)
def test_append_into_strided_pool(dtype, layout, form, misaligned):
    # The cache is a slice of a larger pool (every other page, padded heads, slots and head_dim;
    # k and v of a pair with different strides); the pool outside the slice must not change.
    # Misaligned: head_dim starts off a 16-byte boundary, so the copies take narrower accesses.
    run_append(case_seed("pool", dtype, layout, form, misaligned), dtype, 5, layout, form,
               strided=True, misaligned=misaligned)


@pytest.mark.parametrize("head_dim", [1, 3, 40, 72, 256])
@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn"])
def test_append_odd_head_dims(dtype, head_dim):
    for layout, form in (("NHD", "single"), ("HND", "pair")):
        run_append(case_seed("odd_head_dims", dtype, head_dim, layout), dtype, 5, layout, form, head_dim=head_dim)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_append_int64_indices(layout):
    run_append(case_seed("int64", layout), "float16", 16, layout, "single", index_dtype="int64")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_append_skips_tokens_without_a_slot(layout, form):
    run_append(case_seed("skips", layout, form), "bfloat16", 5, layout, form, corrupt=True)


def test_append_without_tokens_changes_nothing():
    gen = torch.Generator(device="cuda").manual_seed(case_seed("empty"))
    cache = randn((4, 2, 16, HEADS, DIM), "float16", gen)
    before = cache.clone()
    empty = torch.empty((0, HEADS, DIM), dtype=torch.float16, device="cuda")
    no_index = torch.empty((0,), dtype=torch.int32, device="cuda")
    fi_core.append_paged_kv_cache(empty, empty, no_index, no_index, cache, on_gpu([0, 1, 2, 3]), on_gpu([0, 4]),
                                  on_gpu([16]))
    assert torch.equal(cache, before)


def test_batch_indices_positions_beyond_the_batch():
    # nnz past append_indptr[-1]: the extra tokens get -1 (no request); nnz short of it: the
    # first nnz tokens, and nothing is written past them.
    table = PageTable(np.random.default_rng(case_seed("beyond")), 16)
    indptr, seq_lens = on_gpu(table.append_indptr), on_gpu(table.seq_lens, "int64")
    batch_indices, positions = fi_core.get_batch_indices_positions(indptr, seq_lens, table.nnz + 5)
    assert batch_indices.tolist() == table.batch_indices.tolist() + [-1] * 5
    assert positions.tolist() == table.positions.tolist() + [-1] * 5
    short = table.nnz - 3
    out = torch.full((2, table.nnz), -7, dtype=torch.int32, device="cuda")
    fi_core.get_batch_indices_positions(indptr, seq_lens, short, batch_indices=out[0, :short],
                                        positions=out[1, :short])
    assert out[0, :short].tolist() == table.batch_indices[:short].tolist()
    assert out[1, :short].tolist() == table.positions[:short].tolist()
    assert (out[:, short:] == -7).all(), "wrote past nnz"


def test_seq_lens_of_requests_without_pages():
    # A request with no pages has length 0, whatever its kv_last_page_len says.
    indptr = on_gpu([0, 2, 2, 5, 5], "int64")
    last = on_gpu([3, 4, 16, 0], "int64")
    out = torch.full((4,), -1, dtype=torch.int32, device="cuda")
    assert fi_core.get_seq_lens(indptr, last, 16, out=out) is out
    assert out.tolist() == [19, 0, 48, 0]

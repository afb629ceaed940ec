"""BatchPrefillWithPagedKVCacheWrapper and BatchPrefillWithRaggedKVCacheWrapper against a float64
reference per request (test_prefill_gpu.prefill_reference), on fresh random inputs with NaN-poisoned
outputs: dtypes x head dims x KV forms (ragged, paged page_size 1 / 16, one tensor or a (k, v)
pair) x layouts x causal over ragged batches (1-token requests up to 2048 tokens, kv_len >= qo_len),
GQA 1/4/8, variants, split and unsplit plans, zero-token requests, views, CUDA-graph replay and run()
validation; custom masks (bool and packed) at several densities, with variants, splits, large
groups and CUDA graphs."""

import random

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core
    from test_prefill_gpu import check, prefill_reference

    HEAD_DIMS = fi_core.build_info()["head_dims"]
else:
    HEAD_DIMS = [128]

DTYPES = ["float16", "bfloat16"]
KV_FORMS = ["ragged", "paged1", "paged16", "paged16_tuple"]
WORKSPACE_BYTES = 128 << 20


def workspace():
    return torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")


def csr(lengths, device="cpu"):
    return torch.tensor([0] + [sum(lengths[: i + 1]) for i in range(len(lengths))], dtype=torch.int32, device=device)


class Batch:
    """A random batch: q [sum(qo_lens), Hq, D] and every request's keys and values, stored either
    ragged (consecutive rows of one k and one v array) or in a paged cache
    whose pages come from a shuffled pool (one [pages, 2, ...] tensor or a (k, v) pair)."""

    def __init__(self, qo_lens, kv_lens, num_kv_heads, group, head_dim, dtype, form="paged16", layout="NHD",
                 seed=0, strided=False, kv_dtype=None):
        """kv_dtype (fp8): keys and values hold fp8 values (kept in `dtype`, which holds them
        exactly, for the reference) and the stored k/v or cache is converted to kv_dtype."""
        rng = random.Random(seed)
        gen = torch.Generator(device="cuda").manual_seed(seed)
        dt = getattr(torch, dtype)
        self.kv_dtype = getattr(torch, kv_dtype) if kv_dtype else None
        to_kv = (lambda x: x.to(self.kv_dtype)) if kv_dtype else (lambda x: x)
        self.qo_lens, self.kv_lens, self.form, self.layout = list(qo_lens), list(kv_lens), form, layout
        self.num_qo_heads, self.num_kv_heads, self.head_dim = num_kv_heads * group, num_kv_heads, head_dim
        self.qo_indptr = csr(self.qo_lens)
        q_big = torch.randn(sum(qo_lens), self.num_qo_heads * (2 if strided else 1), head_dim, device="cuda",
                            generator=gen).to(dt)
        self.q = q_big[:, ::2] if strided else q_big
        self.keys = [to_kv(torch.randn(n, num_kv_heads, head_dim, device="cuda", generator=gen)).to(dt)
                     for n in kv_lens]
        self.values = [to_kv(torch.randn(n, num_kv_heads, head_dim, device="cuda", generator=gen)).to(dt)
                       for n in kv_lens]
        if form == "ragged":
            self.kv_indptr = csr(kv_lens)
            k = torch.cat(self.keys) if kv_lens else torch.empty(0, num_kv_heads, head_dim, device="cuda", dtype=dt)
            v = torch.cat(self.values) if kv_lens else torch.empty_like(k)
            if layout == "HND":
                k, v = k.transpose(0, 1).contiguous(), v.transpose(0, 1).contiguous()
            self.k, self.v = to_kv(k), to_kv(v)
            return
        self.page_size = int(form[len("paged"):].split("_")[0])
        ps = self.page_size
        pages = [(n + ps - 1) // ps for n in kv_lens]
        used = sum(pages)
        num_pages = used + 3
        ids = rng.sample(range(num_pages), used)
        self.kv_indptr = csr(pages)
        self.indices = torch.tensor(ids, dtype=torch.int32)
        self.last_page_len = torch.tensor([n - (p - 1) * ps if p else 0 for n, p in zip(kv_lens, pages)],
                                          dtype=torch.int32)
        page_shape = (ps, num_kv_heads, head_dim) if layout == "NHD" else (num_kv_heads, ps, head_dim)
        pool = to_kv(torch.randn((num_pages * (2 if strided else 1), 2) + page_shape, device="cuda",
                                 generator=gen)).to(dt)
        cache = pool[::2] if strided else pool
        for b, n in enumerate(kv_lens):
            page_ids = ids[sum(pages[:b]): sum(pages[: b + 1])]
            for j, page in enumerate(page_ids):
                rows = slice(j * ps, min(n, (j + 1) * ps))
                count = rows.stop - rows.start
                for kv, src in ((0, self.keys[b]), (1, self.values[b])):
                    block = src[rows]
                    if layout == "NHD":
                        cache[page, kv, :count] = block
                    else:
                        cache[page, kv, :, :count] = block.transpose(0, 1)
        if kv_dtype:
            assert not strided, "fp8 caches are converted whole"
            cache = to_kv(cache)
        self.full = cache
        self.cache = (cache[:, 0], cache[:, 1]) if form.endswith("tuple") else cache

    def plan(self, wrapper, **opts):
        if self.kv_dtype is not None:
            opts.setdefault("kv_data_type", self.kv_dtype)
        if self.form == "ragged":
            wrapper.plan(self.qo_indptr, self.kv_indptr, self.num_qo_heads, self.num_kv_heads, self.head_dim,
                         q_data_type=self.q.dtype, **opts)
        else:
            wrapper.plan(self.qo_indptr, self.kv_indptr, self.indices, self.last_page_len, self.num_qo_heads,
                         self.num_kv_heads, self.head_dim, self.page_size, q_data_type=self.q.dtype, **opts)

    def wrapper(self, **kwargs):
        cls = (fi_core.BatchPrefillWithRaggedKVCacheWrapper if self.form == "ragged"
               else fi_core.BatchPrefillWithPagedKVCacheWrapper)
        return cls(workspace(), kv_layout=self.layout, **kwargs)

    def run(self, wrapper, q=None, **kwargs):
        q = self.q if q is None else q
        if self.form == "ragged":
            return wrapper.run(q, self.k, self.v, **kwargs)
        return wrapper.run(q, self.cache, **kwargs)

    def check(self, out, lse, dtype, tol_scale=1.0, custom_masks=None, **opts):
        """Each request against the float64 reference on its dense keys and values (and its
        [qo_len, kv_len] mask from custom_masks, when given)."""
        assert torch.isfinite(out).all(), "out: non-finite (unwritten or NaN) elements"
        for b, (qo_len, kv_len) in enumerate(zip(self.qo_lens, self.kv_lens)):
            if qo_len == 0:
                continue
            rows = slice(int(self.qo_indptr[b]), int(self.qo_indptr[b + 1]))
            if custom_masks is not None:
                opts["custom_mask"] = custom_masks[b]
            ref_out, ref_lse = prefill_reference(self.q[rows], self.keys[b], self.values[b], **opts)
            check(out[rows], None if lse is None else lse[rows], ref_out, ref_lse, dtype, tol_scale)


def run_checked(batch, dtype, lse=True, tol_scale=1.0, wrapper=None, run_opts=None, **opts):
    """Plans with `opts`, runs with `run_opts` (k_scale, v_scale), checks against the reference."""
    wrapper = wrapper or batch.wrapper()
    batch.plan(wrapper, **opts)
    out = torch.full_like(batch.q, float("nan"))
    lse_buf = torch.full(batch.q.shape[:2], float("nan"), device="cuda") if lse else None
    got = batch.run(wrapper, out=out, lse=lse_buf, **(run_opts or {}))
    if lse:
        assert got[0] is out and got[1] is lse_buf
    else:
        assert got is out
    ref_opts = {k: v for k, v in opts.items() if k in ("causal", "window_left", "logits_soft_cap", "sm_scale",
                                                         "pos_encoding_mode", "rope_scale", "rope_theta")}
    batch.check(out, lse_buf, dtype, tol_scale, **ref_opts, **(run_opts or {}))
    return wrapper, out, lse_buf


def random_lengths(rng, batch_size, longest=2048):
    qo = [rng.choice([1, 1, 2, 16, 17, 64, 65, rng.randint(1, 700), rng.randint(1, longest)])
          for _ in range(batch_size)]
    kv = [q + rng.choice([0, 0, 1, rng.randint(0, 600)]) for q in qo]
    return qo, kv


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("form", KV_FORMS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_matches_reference(dtype, head_dim, form, layout, causal):
    seed = case_seed("batch_prefill", dtype, head_dim, form, layout, causal)
    rng = random.Random(seed)
    group = rng.choice([1, 4, 8])
    num_kv_heads = rng.choice([1, 2])
    qo_lens, kv_lens = random_lengths(rng, rng.randint(1, 8))
    batch = Batch(qo_lens, kv_lens, num_kv_heads, group, head_dim, dtype, form, layout, seed)
    run_checked(batch, dtype, lse=rng.random() < 0.7, causal=causal)


VARIANTS = {
    "alibi": dict(pos_encoding_mode="ALIBI"),
    "soft_cap": dict(logits_soft_cap=5.0, sm_scale=0.3),
    "sm_scale": dict(sm_scale=0.05),
    "window0": dict(window_left=0),
    "window100": dict(window_left=100),
    "window_alibi_cap": dict(window_left=70, pos_encoding_mode="ALIBI", logits_soft_cap=30.0),
}


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("form", ["ragged", "paged16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_variants(dtype, variant, form, causal):
    seed = case_seed("batch_prefill_variant", dtype, variant, form, causal)
    rng = random.Random(seed)
    head_dim = HEAD_DIMS[len(HEAD_DIMS) // 2]
    qo_lens, kv_lens = random_lengths(rng, 5, longest=600)
    batch = Batch(qo_lens, kv_lens, 2, 4, head_dim, dtype, form, "NHD", seed)
    tol_scale = 2.0 if "logits_soft_cap" in VARIANTS[variant] else 1.0  # tanh.approx
    run_checked(batch, dtype, tol_scale=tol_scale, causal=causal, **VARIANTS[variant])


@pytest.mark.parametrize("form", ["ragged", "paged1", "paged16"])
@pytest.mark.parametrize("group", [1, 3, 8], ids=lambda g: f"g{g}")
def test_decode_like_batches_use_16_row_tiles(form, group):
    # Many 1- and 2-token appends: the average packed rows stay <= 16, so the 16-row kernel runs.
    seed = case_seed("batch_prefill_small", form, group)
    rng = random.Random(seed)
    qo_lens = [rng.choice([1, 1, 2]) for _ in range(40)]
    kv_lens = [q + rng.randint(0, 3000) for q in qo_lens]
    batch = Batch(qo_lens, kv_lens, 2, group, HEAD_DIMS[0], "bfloat16", form, "HND", seed)
    wrapper, _, _ = run_checked(batch, "bfloat16", causal=True)
    assert wrapper.plan_info()["query_tile_rows"] == 16


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("form", ["ragged", "paged1", "paged16_tuple"])
def test_split_kv_plans(form, causal):
    # Few tiles and long keys: the plan splits the keys and merges partial states.
    seed = case_seed("batch_prefill_split", form, causal)
    batch = Batch([3, 1, 40], [20000, 7001, 9000], 2, 4, HEAD_DIMS[0], "float16", form, "NHD", seed)
    wrapper, _, _ = run_checked(batch, "float16", causal=causal)
    info = wrapper.plan_info()
    assert info["num_partial_states"] > 0 and info["chunk_len"] > 0, info
    assert info["num_work_items"] > info["num_tiles"], info


@pytest.mark.parametrize("form", ["ragged", "paged16"])
def test_fixed_split_size_gives_batch_invariant_outputs(form):
    # FlashInfer's fixed_split_size (keys for ragged, pages for paged): with the same query tile
    # (48 tokens x 4 heads a request: 128-row tiles alone and in the batch), a request's tiles are
    # cut into the same chunks alone as in the batch, so its output bits are the same.
    seed = case_seed("batch_prefill_fixed_split", form)
    qo_lens, kv_lens = [48, 48, 48], [3000, 48, 9000]
    batch = Batch(qo_lens, kv_lens, 2, 4, HEAD_DIMS[0], "bfloat16", form, "NHD", seed)
    split = 320 if form == "ragged" else 20  # 320 keys either way
    wrapper, out, lse = run_checked(batch, "bfloat16", causal=True, fixed_split_size=split)
    info = wrapper.plan_info()
    assert info["chunk_len"] == 320 and info["num_partial_states"] > 0, info
    for b in range(len(qo_lens)):
        rows = slice(int(batch.qo_indptr[b]), int(batch.qo_indptr[b + 1]))
        single = batch.wrapper()
        if form == "ragged":
            keys = slice(int(batch.kv_indptr[b]), int(batch.kv_indptr[b + 1]))
            single.plan(csr([qo_lens[b]]), csr([kv_lens[b]]), batch.num_qo_heads, batch.num_kv_heads,
                        batch.head_dim, q_data_type=batch.q.dtype, causal=True, fixed_split_size=split)
            alone, alone_lse = single.run(batch.q[rows], batch.k[keys], batch.v[keys], return_lse=True)
        else:
            pages = slice(int(batch.kv_indptr[b]), int(batch.kv_indptr[b + 1]))
            single.plan(csr([qo_lens[b]]), csr([pages.stop - pages.start]), batch.indices[pages],
                        batch.last_page_len[b:b + 1], batch.num_qo_heads, batch.num_kv_heads, batch.head_dim,
                        batch.page_size, q_data_type=batch.q.dtype, causal=True, fixed_split_size=split)
            alone, alone_lse = single.run(batch.q[rows], batch.cache, return_lse=True)
        assert single.plan_info()["query_tile_rows"] == info["query_tile_rows"]
        assert torch.equal(alone, out[rows]) and torch.equal(alone_lse, lse[rows]), f"request {b}"


@pytest.mark.parametrize("form", ["ragged", "paged1"])
def test_disable_split_kv_keeps_every_tile_whole(form):
    # The batch of test_split_kv_plans, which the automatic plan splits.
    seed = case_seed("batch_prefill_no_split", form)
    batch = Batch([3, 1, 40], [20000, 7001, 9000], 2, 4, HEAD_DIMS[0], "float16", form, "NHD", seed)
    wrapper, _, _ = run_checked(batch, "float16", causal=True, disable_split_kv=True)
    info = wrapper.plan_info()
    assert info["num_partial_states"] == 0 and info["num_work_items"] == info["num_tiles"], info


def test_fixed_split_beyond_the_cuda_graph_grid_is_refused():
    batch = Batch([4, 4], [16384, 16384], 2, 4, HEAD_DIMS[0], "float16", "ragged", "NHD",
                  case_seed("batch_prefill_graph_split"))
    graphed = GraphedWrapper("ragged", 2, 8, HEAD_DIMS[0], 0, 32768)
    # 1-key chunks: 32768 columns, far more than one wave.
    with pytest.raises(ValueError, match="fixed_split_size: chunks of 1 keys make 32768 grid columns"):
        batch.plan(graphed.wrapper, causal=True, fixed_split_size=1)
    batch.plan(graphed.wrapper, causal=True, fixed_split_size=8192)  # 4 columns: fits


def test_large_batch_is_not_split_and_long_requests_mix_with_short():
    seed = case_seed("batch_prefill_large")
    rng = random.Random(seed)
    qo_lens = [2048, 1, 1, 513, 1, 64] + [rng.randint(1, 1500) for _ in range(20)]
    kv_lens = [q + rng.choice([0, 5, 1000]) for q in qo_lens]
    batch = Batch(qo_lens, kv_lens, 8, 4, HEAD_DIMS[0], "bfloat16", "paged16", "NHD", seed)
    wrapper, _, _ = run_checked(batch, "bfloat16", causal=True)
    info = wrapper.plan_info()
    long_tile = 128 if HEAD_DIMS[0] <= 128 else 64  # two m16 tiles per warp up to head_dim 128
    assert info["query_tile_rows"] == long_tile and info["num_partial_states"] == 0, info


@pytest.mark.parametrize("group", [32, 3], ids=lambda g: f"g{g}")
def test_groups_larger_than_a_tile_and_empty_requests(group):
    # Zero-token requests pull the average below 16 packed rows: 16-row tiles, and with a group of
    # 32 each token's heads spread over two tiles (split too: few tiles, long keys).
    seed = case_seed("batch_prefill_groups", group)
    batch = Batch([1, 0, 0, 0, 2, 0, 0, 0, 0, 0], [5000, 0, 3, 0, 3000, 1, 0, 0, 0, 0], 1, group, HEAD_DIMS[0],
                  "float16", "paged16", "NHD", seed)
    wrapper, _, _ = run_checked(batch, "float16", causal=True)
    assert wrapper.plan_info()["query_tile_rows"] == 16


def test_ragged_and_paged_agree():
    seed = case_seed("batch_prefill_forms")
    rng = random.Random(seed)
    qo_lens, kv_lens = random_lengths(rng, 6)
    outs = []
    for form in ["ragged", "paged16", "paged1"]:
        batch = Batch(qo_lens, kv_lens, 2, 4, HEAD_DIMS[0], "bfloat16", form, "NHD", seed)
        wrapper = batch.wrapper()
        batch.plan(wrapper, causal=True)
        outs.append(batch.run(wrapper))
    # Bitwise equal unless the forms' kernels differ in occupancy (and so in the split): rounding only.
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-2, atol=1e-2)


def test_strided_views_and_device_index_arrays():
    seed = case_seed("batch_prefill_strided")
    head_dim = HEAD_DIMS[-1]
    batch = Batch([33, 1, 200], [40, 700, 200], 2, 4, head_dim, "float16", "paged16", "HND", seed, strided=True)
    assert not batch.q.is_contiguous() and not batch.full.is_contiguous()
    wrapper = batch.wrapper()
    # Index arrays on the GPU (as the benchmark and serving engines pass them) are read back by plan().
    wrapper.plan(batch.qo_indptr.cuda(), batch.kv_indptr.cuda(), batch.indices.cuda(), batch.last_page_len.cuda(),
                 8, 2, head_dim, 16, causal=True, q_data_type=torch.float16, kv_data_type=torch.float16)
    out_big = torch.full((batch.q.shape[0], 8, 2 * head_dim), float("nan"), dtype=torch.float16, device="cuda")
    out = out_big[..., :head_dim]
    wrapper.run(batch.q, batch.cache, out=out)
    assert torch.isnan(out_big[..., head_dim:]).all(), "wrote outside the out view"
    batch.check(out, None, "float16", causal=True)


def test_allocates_outputs_deterministic_and_empty_batch():
    seed = case_seed("batch_prefill_alloc")
    batch = Batch([100, 7], [300, 7], 2, 4, HEAD_DIMS[0], "bfloat16", "ragged", "NHD", seed)
    wrapper = batch.wrapper()
    batch.plan(wrapper, causal=True)
    out = batch.run(wrapper)
    out2, lse = batch.run(wrapper, return_lse=True)
    assert out.shape == batch.q.shape and lse.shape == batch.q.shape[:2] and lse.dtype == torch.float32
    assert torch.equal(out, out2)
    batch.check(out, lse, "bfloat16", causal=True)

    empty = Batch([], [], 2, 4, HEAD_DIMS[0], "bfloat16", "paged16", "NHD", seed)
    w = empty.wrapper()
    empty.plan(w)
    out0, lse0 = w.run(empty.q, batch_cache_for_empty(), return_lse=True)
    torch.cuda.synchronize()
    assert out0.shape == (0, 8, HEAD_DIMS[0]) and lse0.shape == (0, 8)


def batch_cache_for_empty():
    return torch.zeros(1, 2, 16, 2, HEAD_DIMS[0], dtype=torch.bfloat16, device="cuda")


class GraphedWrapper:
    """A use_cuda_graph wrapper of `form` (2 KV heads, 8 query heads, float16) over static q, KV,
    out and lse buffers, with run() captured once: load() copies a Batch into the static buffers
    (and points the Batch at them), capture() records the graph, replay() runs it."""

    def __init__(self, form, batch_size, total_cap, head_dim, num_pages_cap, kv_rows_cap, **buffers):
        def index_buffer(n):
            return torch.empty(n, dtype=torch.int32, device="cuda")

        self.form = form
        buffers = dict(use_cuda_graph=True, qo_indptr_buf=index_buffer(batch_size + 1), **buffers)
        if form == "ragged":
            self.wrapper = fi_core.BatchPrefillWithRaggedKVCacheWrapper(
                workspace(), kv_indptr_buf=index_buffer(batch_size + 1), **buffers)
            self.k = torch.zeros(kv_rows_cap, 2, head_dim, dtype=torch.float16, device="cuda")
            self.v = torch.zeros_like(self.k)
        else:
            self.wrapper = fi_core.BatchPrefillWithPagedKVCacheWrapper(
                workspace(), paged_kv_indptr_buf=index_buffer(batch_size + 1),
                paged_kv_indices_buf=index_buffer(num_pages_cap), paged_kv_last_page_len_buf=index_buffer(batch_size),
                **buffers)
            self.cache = torch.zeros((num_pages_cap, 2, 16, 2, head_dim), dtype=torch.float16, device="cuda")
        self.q = torch.zeros(total_cap, 8, head_dim, dtype=torch.float16, device="cuda")
        self.out = torch.full_like(self.q, float("nan"))
        self.lse = torch.full((total_cap, 8), float("nan"), device="cuda")
        self.graph = None

    def load(self, b):
        self.q.zero_()
        self.q[: b.q.shape[0]].copy_(b.q)
        if self.form == "ragged":
            self.k[: b.k.shape[0]].copy_(b.k)
            self.v[: b.v.shape[0]].copy_(b.v)
            b.k, b.v = self.k, self.v
        else:
            self.cache.zero_()
            self.cache[: b.full.shape[0]].copy_(b.full)
            b.cache = self.cache

    def run(self):
        kv = (self.k, self.v) if self.form == "ragged" else (self.cache,)
        self.wrapper.run(self.q, *kv, out=self.out, lse=self.lse)

    def capture(self):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.run()  # warm-up
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=stream):
                self.run()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()

    def replay(self):
        self.graph.replay()


@pytest.mark.parametrize("form", ["paged16", "ragged"])
def test_cuda_graph_replay_matches_eager(form):
    seed = case_seed("batch_prefill_graph", form)
    rng = random.Random(seed)
    head_dim = HEAD_DIMS[0]
    batch_size, num_pages_cap, kv_rows_cap = 4, 2048, 16384

    def draw(step, total_cap=None):
        # Lengths whose average packed rows (4 heads a token) stay in [20, 124]: every plan, graph
        # or eager, takes the 64-row tile of the first, so that results agree bit for bit; at most
        # the first plan's query rows; some long keys so that some plans split.
        while True:
            qo = [rng.choice([5, 17, 31, rng.randint(5, 31)]) for _ in range(batch_size)]
            if total_cap is None or sum(qo) <= total_cap:
                break
        kv = [q + rng.choice([0, 10, rng.randint(0, 3000)]) for q in qo]
        return Batch(qo, kv, 2, 4, head_dim, "float16", form, "NHD", seed + step)

    first = draw(0)
    total_cap = first.q.shape[0]
    graphed = GraphedWrapper(form, batch_size, total_cap, head_dim, num_pages_cap, kv_rows_cap)
    eager = first.wrapper()
    graphed.load(first)
    first.plan(graphed.wrapper, causal=True)
    graphed.capture()

    for step in range(1, 5):
        nxt = draw(step, total_cap)
        graphed.load(nxt)
        nxt.plan(graphed.wrapper, causal=True)
        graphed.replay()
        nxt.plan(eager, causal=True)
        nnz = sum(nxt.qo_lens)
        want_out, want_lse = nxt.run(eager, q=graphed.q[:nnz], return_lse=True)
        torch.cuda.synchronize()
        assert graphed.wrapper.plan_info()["query_tile_rows"] == eager.plan_info()["query_tile_rows"]
        assert torch.equal(graphed.out[:nnz], want_out), f"step {step}: graph replay differs from eager"
        assert torch.equal(graphed.lse[:nnz], want_lse), f"step {step}: graph lse differs from eager"
        nxt.q = graphed.q[:nnz]
        nxt.check(graphed.out[:nnz], graphed.lse[:nnz], "float16", causal=True)


def test_run_validation():
    seed = case_seed("batch_prefill_run_validation")
    head_dim = HEAD_DIMS[0]
    batch = Batch([5, 3], [20, 3], 2, 4, head_dim, "float16", "paged16", "NHD", seed)
    wrapper = batch.wrapper()
    batch.plan(wrapper)
    q = batch.q

    def expect(exc, fragment, q_=q, cache=batch.cache, **kw):
        with pytest.raises(exc) as info:
            wrapper.run(q_, cache, **kw)
        assert fragment in str(info.value), str(info.value)

    expect(ValueError, "q: expected shape [qo_indptr[-1], num_qo_heads, head_dim] = (8, 8, ", q_=q[:7])
    expect(TypeError, "q: expected dtype float16, got bfloat16", q_=q.to(torch.bfloat16))
    expect(TypeError, "paged_kv_cache: expected dtype float16, got bfloat16", cache=batch.full.to(torch.bfloat16))
    expect(ValueError, "paged_kv_cache: expected at least", cache=batch.full[:1])
    expect(ValueError, "paged_kv_cache: expected 2 (k and v) in dimension 1", cache=batch.full[:, :1])
    expect(ValueError, "out: expected shape", out=torch.empty(8, 8, head_dim + 8, dtype=torch.float16, device="cuda"))
    expect(TypeError, "lse: expected dtype float32", lse=torch.empty(8, 8, dtype=torch.float16, device="cuda"))
    expect(TypeError, "k_scale: expected a number or None, got str", k_scale="0.5")
    expect(TypeError, "q: expected a CUDA array", q_=q.cpu())

    ragged = Batch([5, 3], [20, 3], 2, 4, head_dim, "float16", "ragged", "NHD", seed)
    rw = ragged.wrapper()
    ragged.plan(rw)
    with pytest.raises(ValueError, match="k: expected shape \\[kv_indptr\\[-1\\], num_kv_heads, head_dim\\] = \\(23,"):
        rw.run(ragged.q, ragged.k[:22], ragged.v)
    # The plan fixed the KV dtype (float16 here): an fp8 cache at run time is a mismatch, not a cast.
    with pytest.raises(TypeError, match="k: expected dtype float16, got float8_e4m3fn"):
        rw.run(ragged.q, ragged.k.to(torch.float8_e4m3fn), ragged.v.to(torch.float8_e4m3fn))


def test_single_prefill_still_matches_after_batching_the_kernel():
    # The single-request path shares the kernel: a long GQA prompt and a 1-token append.
    for qo_len, kv_len, group in [(3000, 3000, 4), (1, 4096, 8), (5, 9, 32)]:
        seed = case_seed("single_via_batch", qo_len, kv_len, group)
        batch = Batch([qo_len], [kv_len], 2, group, HEAD_DIMS[0], "bfloat16", "ragged", "NHD", seed)
        out, lse = fi_core.single_prefill_with_kv_cache(batch.q, batch.keys[0], batch.values[0], causal=True,
                                                        return_lse=True)
        batch.check(out, lse, "bfloat16", causal=True)


# ---------------------------------------------------------------------------------------------
# Custom masks: custom_mask (bool, the requests' [qo_len, kv_len] masks flattened and concatenated)
# or packed_custom_mask (segment_packbits, little bit order); `causal` is ignored with a mask.

def random_masks(qo_lens, kv_lens, density, seed):
    """Per-request masks (keys visible with probability `density`, every 7th row from row 3 and
    all of request 1's first row hidden) and their flattened concatenation."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    masks = []
    for b, (qo_len, kv_len) in enumerate(zip(qo_lens, kv_lens)):
        mask = torch.rand(qo_len, kv_len, device="cuda", generator=gen) < density
        mask[3::7] = False
        if b == 1 and qo_len:
            mask[0] = False
        masks.append(mask)
    flat = torch.cat([m.reshape(-1) for m in masks]) if masks else torch.zeros(0, dtype=torch.bool, device="cuda")
    return masks, flat


def packed_masks(qo_lens, kv_lens, flat):
    offsets = csr([q * k for q, k in zip(qo_lens, kv_lens)])
    packed, byte_offsets = fi_core.segment_packbits(flat, offsets, bitorder="little")
    want = [0]
    for q, k in zip(qo_lens, kv_lens):
        want.append(want[-1] + (q * k + 7) // 8)
    assert byte_offsets.tolist() == want
    return packed, want


def run_masked(batch, dtype, density, seed, tol_scale=1.0, expect_tile=None, **opts):
    """Plans and runs with custom_mask, checks the reference, then with packed_custom_mask (the same
    plan, so bitwise the same results). Returns the first wrapper."""
    masks, flat = random_masks(batch.qo_lens, batch.kv_lens, density, seed)
    results, wrappers = [], []
    for form in ("custom_mask", "packed_custom_mask"):
        mask = flat if form == "custom_mask" else packed_masks(batch.qo_lens, batch.kv_lens, flat)[0]
        wrapper = batch.wrapper()
        batch.plan(wrapper, causal=seed % 2 == 0, **{form: mask}, **opts)
        out = torch.full_like(batch.q, float("nan"))
        lse = torch.full(batch.q.shape[:2], float("nan"), device="cuda")
        batch.run(wrapper, out=out, lse=lse)
        results.append((out, lse))
        wrappers.append(wrapper)
    ref_opts = {k: v for k, v in opts.items() if k in ("window_left", "logits_soft_cap", "sm_scale",
                                                         "pos_encoding_mode")}
    batch.check(*results[0], dtype, tol_scale, custom_masks=masks, **ref_opts)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1]), \
        "custom_mask and packed_custom_mask differ"
    if expect_tile is not None:
        assert wrappers[0].plan_info()["query_tile_rows"] == expect_tile, wrappers[0].plan_info()
    return wrappers[0]


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0], ids=lambda d: f"p{round(d * 100)}")
@pytest.mark.parametrize("form", ["ragged", "paged1", "paged16"])
@pytest.mark.parametrize("group", [1, 4], ids=lambda g: f"g{g}")
def test_batch_prefill_custom_mask(group, form, density):
    seed = case_seed("batch_prefill_mask", group, form, density)
    rng = random.Random(seed)
    qo_lens, kv_lens = random_lengths(rng, 5, longest=600)
    batch = Batch(qo_lens, kv_lens, 2, group, HEAD_DIMS[0], "bfloat16", form, "NHD", seed)
    run_masked(batch, "bfloat16", density, seed)


MASK_VARIANTS = {
    "window": dict(window_left=30),
    "alibi": dict(pos_encoding_mode="ALIBI"),
    "soft_cap": dict(logits_soft_cap=5.0, sm_scale=0.3),
    "hnd_fp16": dict(),
}


@pytest.mark.parametrize("form", ["ragged", "paged16_tuple"])
@pytest.mark.parametrize("variant", list(MASK_VARIANTS))
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
def test_batch_prefill_custom_mask_variants(head_dim, variant, form):
    seed = case_seed("batch_prefill_mask_variant", head_dim, variant, form)
    rng = random.Random(seed)
    qo_lens, kv_lens = random_lengths(rng, 4, longest=400)
    dtype = "float16" if variant == "hnd_fp16" else "bfloat16"
    batch = Batch(qo_lens, kv_lens, 2, 4, head_dim, dtype, form, "HND" if variant == "hnd_fp16" else "NHD", seed)
    tol_scale = 2.0 if variant == "soft_cap" else 1.0  # tanh.approx
    run_masked(batch, dtype, 0.5, seed, tol_scale, **MASK_VARIANTS[variant])


@pytest.mark.parametrize("form", ["ragged", "paged16"])
def test_custom_mask_split_plans_and_long_prompts(form):
    # Few tiles and long keys: split with partial states, every key of a row may be visible.
    seed = case_seed("batch_prefill_mask_split", form)
    batch = Batch([3, 1, 40], [20000, 7001, 9000], 2, 4, HEAD_DIMS[0], "float16", form, "NHD", seed)
    wrapper = run_masked(batch, "float16", 0.3, seed)
    info = wrapper.plan_info()
    assert info["num_partial_states"] > 0 and info["num_work_items"] > info["num_tiles"], info
    # A long prompt would take 128-row tiles; with a mask the plan keeps to 64.
    batch = Batch([1500, 700], [1600, 700], 2, 4, HEAD_DIMS[0], "bfloat16", form, "NHD", seed)
    run_masked(batch, "bfloat16", 0.7, seed, expect_tile=64)


@pytest.mark.parametrize("group", [32, 3], ids=lambda g: f"g{g}")
def test_custom_mask_groups_larger_than_a_tile_and_empty_requests(group):
    # 16-row tiles; with a group of 32 a token's heads spread over two tiles, which share its row.
    seed = case_seed("batch_prefill_mask_groups", group)
    batch = Batch([1, 0, 0, 0, 2, 0, 0, 0, 0, 0], [5000, 0, 3, 0, 3000, 1, 0, 0, 0, 0], 1, group, HEAD_DIMS[0],
                  "float16", "paged16", "NHD", seed)
    run_masked(batch, "float16", 0.5, seed, expect_tile=16)


@pytest.mark.parametrize("form", ["paged16", "ragged"])
def test_custom_mask_cuda_graph_replay_matches_eager(form):
    seed = case_seed("batch_prefill_mask_graph", form)
    rng = random.Random(seed)
    head_dim = HEAD_DIMS[0]
    batch_size, num_pages_cap, kv_rows_cap, mask_cap = 3, 1024, 8192, 1 << 20

    def draw(step, total_cap=None):
        while True:
            qo = [rng.choice([5, 17, 200, rng.randint(5, 300)]) for _ in range(batch_size)]
            if total_cap is None or sum(qo) <= total_cap:
                break
        kv = [q + rng.choice([0, 10, rng.randint(0, 2000)]) for q in qo]
        return Batch(qo, kv, 2, 4, head_dim, "float16", form, "NHD", seed + step)

    first = draw(0)
    total_cap = first.q.shape[0]
    mask_indptr_buf = torch.full((batch_size + 1,), -1, dtype=torch.int32, device="cuda")
    graphed = GraphedWrapper(form, batch_size, total_cap, head_dim, num_pages_cap, kv_rows_cap,
                             custom_mask_buf=torch.zeros(mask_cap, dtype=torch.uint8, device="cuda"),
                             mask_indptr_buf=mask_indptr_buf)
    eager = first.wrapper()
    graphed.load(first)
    _, first_flat = random_masks(first.qo_lens, first.kv_lens, 0.5, seed)
    first.plan(graphed.wrapper, custom_mask=first_flat)
    graphed.capture()

    for step in range(1, 5):
        nxt = draw(step, total_cap)
        graphed.load(nxt)
        masks, flat = random_masks(nxt.qo_lens, nxt.kv_lens, rng.choice([0.1, 0.5, 0.9]), seed + step)
        # The packed form in graph mode, the bool form eagerly: the same bits either way.
        packed, byte_offsets = packed_masks(nxt.qo_lens, nxt.kv_lens, flat)
        nxt.plan(graphed.wrapper, packed_custom_mask=packed, causal=True)
        packed.zero_()  # the graph reads custom_mask_buf, where plan() copied the bits (stream-ordered)
        graphed.replay()
        nxt.plan(eager, custom_mask=flat)
        nnz = sum(nxt.qo_lens)
        want_out, want_lse = nxt.run(eager, q=graphed.q[:nnz], return_lse=True)
        torch.cuda.synchronize()
        assert mask_indptr_buf.tolist() == byte_offsets, "mask_indptr_buf: the requests' byte offsets"
        assert graphed.wrapper.plan_info()["query_tile_rows"] == eager.plan_info()["query_tile_rows"]
        assert torch.equal(graphed.out[:nnz], want_out), f"step {step}: graph replay differs from eager"
        assert torch.equal(graphed.lse[:nnz], want_lse), f"step {step}: graph lse differs from eager"
        nxt.q = graphed.q[:nnz]
        nxt.check(graphed.out[:nnz], graphed.lse[:nnz], "float16", custom_masks=masks)
    # The captured kernel reads a mask: every later plan must have one.
    with pytest.raises(ValueError, match="packed_custom_mask: expected a custom mask"):
        nxt.plan(graphed.wrapper, causal=True)


# ---------------------------------------------------------------------------------------------
# RoPE on the fly (ROPE_LLAMA: query row i of a request at i + kv_len - qo_len, key j at j) and fp8
# KV (e4m3 / e5m2 caches with k_scale / v_scale).

ROPE_TOL = 2.0  # rotated q and k are rounded to q's dtype, angles formed in fp32


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("form", KV_FORMS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_rope(dtype, head_dim, form, layout, causal):
    seed = case_seed("batch_prefill_rope", dtype, head_dim, form, layout, causal)
    rng = random.Random(seed)
    qo_lens, kv_lens = random_lengths(rng, rng.randint(1, 8), longest=1500)
    batch = Batch(qo_lens, kv_lens, 2, rng.choice([1, 4, 8]), head_dim, dtype, form, layout, seed)
    wrapper, _, _ = run_checked(batch, dtype, tol_scale=ROPE_TOL, causal=causal, pos_encoding_mode="ROPE_LLAMA",
                                rope_scale=rng.choice([1.0, 8.0]), rope_theta=rng.choice([1e4, 5e5]))
    assert wrapper.plan_info()["query_tile_rows"] in (16, 64)


@pytest.mark.parametrize("form", ["ragged", "paged16"])
def test_batch_prefill_rope_split_and_variants(form):
    # Few long requests: the plan splits their keys into chunks (merged with v_scale-free states);
    # plus a soft cap and a sliding window on top of RoPE.
    seed = case_seed("batch_prefill_rope_split", form)
    batch = Batch([700, 3], [4000, 2500], 1, 4, HEAD_DIMS[0], "bfloat16", form, "NHD", seed)
    wrapper, _, _ = run_checked(batch, "bfloat16", tol_scale=2 * ROPE_TOL, causal=True, pos_encoding_mode="ROPE_LLAMA",
                                logits_soft_cap=20.0, window_left=1000)
    assert wrapper.plan_info()["num_partial_states"] > 0


@pytest.mark.parametrize("form", ["ragged", "paged16"])
def test_batch_prefill_rope_custom_mask(form):
    seed = case_seed("batch_prefill_rope_mask", form)
    rng = random.Random(seed)
    qo_lens, kv_lens = random_lengths(rng, 4, longest=300)
    batch = Batch(qo_lens, kv_lens, 2, 4, HEAD_DIMS[0], "float16", form, "NHD", seed)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    masks = [torch.rand(q, k, device="cuda", generator=gen) < 0.6 for q, k in zip(qo_lens, kv_lens)]
    wrapper = batch.wrapper()
    batch.plan(wrapper, custom_mask=torch.cat([m.reshape(-1) for m in masks]), pos_encoding_mode="ROPE_LLAMA")
    out, lse = batch.run(wrapper, return_lse=True)
    batch.check(out, lse, "float16", ROPE_TOL, custom_masks=masks, pos_encoding_mode="ROPE_LLAMA")


FP8_DTYPES = ["float8_e4m3fn", "float8_e5m2"]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("form", KV_FORMS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("kv_dtype", FP8_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_fp8_kv(dtype, kv_dtype, head_dim, form, layout, causal):
    seed = case_seed("batch_prefill_fp8", dtype, kv_dtype, head_dim, form, layout, causal)
    rng = random.Random(seed)
    qo_lens, kv_lens = random_lengths(rng, rng.randint(1, 8))
    batch = Batch(qo_lens, kv_lens, rng.choice([1, 2]), rng.choice([1, 4, 8]), head_dim, dtype, form, layout, seed,
                  kv_dtype=kv_dtype)
    run_checked(batch, dtype, causal=causal, run_opts=dict(k_scale=0.8, v_scale=1.7))


@pytest.mark.parametrize("form", ["ragged", "paged1", "paged16"])
@pytest.mark.parametrize("kv_dtype", FP8_DTYPES)
def test_batch_prefill_fp8_kv_rope_split_and_small_tiles(kv_dtype, form):
    # fp8 with RoPE (keys rotated while converted); a split plan (the merge applies v_scale); and a
    # decode-like batch on 16-row tiles.
    seed = case_seed("batch_prefill_fp8_more", kv_dtype, form)
    batch = Batch([600, 2], [3000, 2200], 1, 4, HEAD_DIMS[0], "float16", form, "HND", seed, kv_dtype=kv_dtype)
    wrapper, _, _ = run_checked(batch, "float16", tol_scale=ROPE_TOL, causal=True, pos_encoding_mode="ROPE_LLAMA",
                                run_opts=dict(k_scale=1.2, v_scale=0.5))
    assert wrapper.plan_info()["num_partial_states"] > 0
    batch = Batch([1, 2, 1] * 10, [1 + 97 * i for i in range(30)], 2, 2, HEAD_DIMS[0], "bfloat16", form, "NHD", seed,
                  kv_dtype=kv_dtype)
    wrapper, _, _ = run_checked(batch, "bfloat16", causal=True, pos_encoding_mode="ALIBI",
                                run_opts=dict(v_scale=3.0))
    assert wrapper.plan_info()["query_tile_rows"] == 16


def test_fp8_run_checks_the_planned_kv_dtype():
    batch = Batch([5, 9], [20, 30], 2, 2, HEAD_DIMS[0], "float16", "paged16", "NHD", case_seed("fp8_run_checks"),
                  kv_dtype="float8_e4m3fn")
    wrapper = batch.wrapper()
    batch.plan(wrapper)
    with pytest.raises(TypeError, match="paged_kv_cache: expected dtype float8_e4m3fn, got float16"):
        wrapper.run(batch.q, batch.cache.to(torch.float16))
    with pytest.raises(TypeError, match="paged_kv_cache: expected dtype float8_e4m3fn, got float8_e5m2"):
        wrapper.run(batch.q, batch.cache.to(torch.float16).to(torch.float8_e5m2))
    with pytest.raises(ValueError, match="k_scale: expected a finite number"):
        wrapper.run(batch.q, batch.cache, k_scale=float("inf"))
    # A 16-bit plan refuses an fp8 cache.
    batch.plan(wrapper, kv_data_type=torch.float16)
    with pytest.raises(TypeError, match="paged_kv_cache: expected dtype float16, got float8_e4m3fn"):
        wrapper.run(batch.q, batch.cache)


def test_cuda_graph_plans_keep_rope_fixed():
    seed = case_seed("rope_graph")
    batch = Batch([5, 9], [20, 30], 2, 2, HEAD_DIMS[0], "float16", "ragged", "NHD", seed)
    wrapper = batch.wrapper(use_cuda_graph=True, qo_indptr_buf=torch.empty(3, dtype=torch.int32, device="cuda"),
                            kv_indptr_buf=torch.empty(3, dtype=torch.int32, device="cuda"))
    batch.plan(wrapper, pos_encoding_mode="ROPE_LLAMA")
    with pytest.raises(ValueError, match="pos_encoding_mode: expected ROPE_LLAMA"):
        batch.plan(wrapper)
    out = batch.run(wrapper)
    batch.check(out, None, "float16", ROPE_TOL, pos_encoding_mode="ROPE_LLAMA")

"""BatchDecodeWithPagedKVCacheWrapper against a float64 reference per request, on fresh random
inputs with poisoned (NaN) outputs: dtypes x head dims x page sizes x layouts x cache forms x
variants over random batches (lengths 1, page_size +- 1 and random; permuted page ids), plus large
batches, split KV, empty requests, strided pools, CUDA-graph replay and run() validation."""

import random

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core
    from reference import decode_reference

    HEAD_DIMS = fi_core.build_info()["head_dims"]
else:
    HEAD_DIMS = [128]

DTYPE_PAIRS = [(q, kv) for q in ("float16", "bfloat16")
               for kv in ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")]
PAGE_SIZES = [1, 5, 16]
VARIANTS = ["none", "rope", "alibi", "soft_cap", "window", "lse"]
WORKSPACE_BYTES = 64 << 20


def workspace():
    return torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")


class PagedBatch:
    """A random batch in a paged cache: pages of every request drawn from a shuffled pool (with
    unused pages in between), the cache either one [pages, 2, ...] tensor or a (k, v) pair, and
    optionally a strided slice of a larger pool."""

    def __init__(self, kv_lens, page_size, num_kv_heads, head_dim, kv_dtype, layout="NHD",
                 form="tensor", seed=0, strided=False):
        rng = random.Random(seed)
        gen = torch.Generator(device="cuda").manual_seed(seed)
        self.kv_lens, self.page_size, self.layout = list(kv_lens), page_size, layout
        pages = [(n + page_size - 1) // page_size for n in kv_lens]
        used = sum(pages)
        num_pages = used + 3
        ids = rng.sample(range(num_pages), used)
        self.indptr = torch.tensor([0] + [sum(pages[: i + 1]) for i in range(len(pages))], dtype=torch.int32)
        self.indices = torch.tensor(ids, dtype=torch.int32)
        self.last_page_len = torch.tensor(
            [n - (p - 1) * page_size if p else 0 for n, p in zip(kv_lens, pages)], dtype=torch.int32)
        page_shape = (page_size, num_kv_heads, head_dim) if layout == "NHD" else (num_kv_heads, page_size, head_dim)
        dtype = getattr(torch, kv_dtype)
        # A pool with a wider page dimension than the cache view when `strided`: page stride and
        # head stride then differ from those of a packed array.
        pool_pages = num_pages * 2 if strided else num_pages
        pool = torch.randn((pool_pages, 2) + page_shape, device="cuda", generator=gen).to(dtype)
        cache = pool[::2] if strided else pool
        self.full = cache
        self.cache = cache if form == "tensor" else (cache[:, 0], cache[:, 1])
        self.k_pages, self.v_pages = cache[:, 0], cache[:, 1]

    def dense(self, b):
        """Request b's keys and values as [kv_len, num_kv_heads, head_dim] (NHD) or HND."""
        ids = self.indices[self.indptr[b]:self.indptr[b + 1]].long().cuda()
        n = self.kv_lens[b]

        def gather(pages):
            x = pages[ids]  # [p, page_size, H, D] or [p, H, page_size, D]
            if self.layout == "NHD":
                return x.reshape(-1, *x.shape[2:])[:n]
            return x.permute(1, 0, 2, 3).reshape(x.shape[1], -1, x.shape[3])[:, :n]

        return gather(self.k_pages), gather(self.v_pages)


def variant_options(variant, fp8):
    opts = {}
    if variant == "rope":
        opts.update(pos_encoding_mode="ROPE_LLAMA", rope_theta=1e4, rope_scale=1.0)
    elif variant == "alibi":
        opts.update(pos_encoding_mode="ALIBI")
    elif variant == "soft_cap":
        opts.update(logits_soft_cap=5.0, sm_scale=0.3)
    elif variant == "window":
        opts.update(window_left=37)
    return opts


PLAN_KEYS = ("pos_encoding_mode", "window_left", "logits_soft_cap", "sm_scale", "rope_scale", "rope_theta")


def run_batch(batch, q, num_qo_heads, num_kv_heads, head_dim, q_dtype, kv_dtype, opts, scales,
              wrapper=None, lse=True, use_tensor_cores=None):
    wrapper = wrapper or fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace(), kv_layout=batch.layout,
                                                                    use_tensor_cores=use_tensor_cores)
    wrapper.plan(batch.indptr, batch.indices, batch.last_page_len, num_qo_heads, num_kv_heads, head_dim,
                 batch.page_size, q_data_type=q_dtype, kv_data_type=kv_dtype,
                 **{k: v for k, v in opts.items() if k in PLAN_KEYS})
    out = torch.full_like(q, float("nan"))
    lse_buf = torch.full(q.shape[:2], float("nan"), device="cuda") if lse else None
    got = wrapper.run(q, batch.cache, out=out, lse=lse_buf, **scales)
    if lse:
        assert got[0] is out and got[1] is lse_buf
    else:
        assert got is out
    return wrapper, out, lse_buf


def check_against_reference(batch, q, out, lse, opts, scales, q_dtype):
    tol = 1e-2 if q_dtype == "bfloat16" else 3e-3
    if opts.get("logits_soft_cap"):
        tol *= 2  # tanh.approx
    assert torch.isfinite(out).all(), "non-finite (unwritten or NaN) output elements"
    ref_opts = {k: v for k, v in opts.items() if k in PLAN_KEYS}
    for b, n in enumerate(batch.kv_lens):
        if n == 0:
            assert (out[b] == 0).all() and (lse is None or torch.isneginf(lse[b]).all()), f"empty request {b}"
            continue
        k, v = batch.dense(b)
        ref_out, ref_lse = decode_reference(q[b], k, v, kv_layout=batch.layout, **ref_opts, **scales)
        got = out[b].double()
        err = (got - ref_out).norm() / ref_out.norm().clamp_min(1e-30)
        assert err < tol, f"request {b} (kv_len {n}): relative L2 error {err:.3e} >= {tol}"
        torch.testing.assert_close(got, ref_out, rtol=0, atol=float(8 * tol * ref_out.abs().max()),
                                   msg=f"request {b} (kv_len {n})")
        if lse is not None:
            torch.testing.assert_close(lse[b].double(), ref_lse, rtol=0,
                                       atol=2e-3 * (1 + ref_lse.abs().max().item()), msg=f"lse of request {b}")


def random_lengths(rng, batch, page_size):
    choices = [1, max(page_size - 1, 1), page_size, page_size + 1, 2 * page_size + 1]
    return [rng.choice(choices) if rng.random() < 0.5 else rng.randint(1, 3000) for _ in range(batch)]


def make_q(batch_size, num_qo_heads, head_dim, q_dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    return torch.randn(batch_size, num_qo_heads, head_dim, device="cuda", generator=gen).to(getattr(torch, q_dtype))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("form", ["tensor", "tuple"])
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("page_size", PAGE_SIZES, ids=lambda p: f"ps{p}")
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("q_dtype,kv_dtype", DTYPE_PAIRS)
def test_batch_decode_matches_reference(q_dtype, kv_dtype, head_dim, page_size, layout, form, variant):
    seed = case_seed(q_dtype, kv_dtype, head_dim, page_size, layout, form, variant)
    rng = random.Random(seed)
    group = rng.choice([1, 3, 4, 8, 16])
    num_kv_heads = rng.choice([1, 2])
    kv_lens = random_lengths(rng, rng.randint(1, 12), page_size)
    batch = PagedBatch(kv_lens, page_size, num_kv_heads, head_dim, kv_dtype, layout, form, seed)
    q = make_q(len(kv_lens), group * num_kv_heads, head_dim, q_dtype, seed)
    fp8 = kv_dtype.startswith("float8")
    opts = variant_options(variant, fp8)
    scales = dict(k_scale=0.5, v_scale=2.0) if fp8 else {}
    use_tensor_cores = rng.choice([None, None, True, False])
    wrapper, out, lse = run_batch(batch, q, group * num_kv_heads, num_kv_heads, head_dim, q_dtype, kv_dtype,
                                  opts, scales, lse=variant == "lse" or rng.random() < 0.5,
                                  use_tensor_cores=use_tensor_cores)
    # Tensor cores: asked for, or by default for groups of >= 4; only for one 16-bit dtype, no RoPE.
    possible = q_dtype == kv_dtype and variant != "rope"
    wanted = group >= 4 if use_tensor_cores is None else use_tensor_cores
    assert wrapper.plan_info()["tensor_cores"] == (possible and wanted)
    check_against_reference(batch, q, out, lse, opts, scales, q_dtype)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["cuda_cores", "tensor_cores"])
@pytest.mark.parametrize("batch_size,max_len", [(512, 600), (128, 4096), (64, 257)])
def test_large_batches(batch_size, max_len, use_tensor_cores):
    seed = case_seed("large", batch_size, max_len)
    rng = random.Random(seed)
    kv_lens = [rng.randint(1, max_len) for _ in range(batch_size)]
    head_dim = HEAD_DIMS[len(HEAD_DIMS) // 2]
    batch = PagedBatch(kv_lens, 16, 8, head_dim, "bfloat16", seed=seed)
    q = make_q(batch_size, 32, head_dim, "bfloat16", seed)
    _, out, lse = run_batch(batch, q, 32, 8, head_dim, "bfloat16", "bfloat16", {}, {},
                            use_tensor_cores=use_tensor_cores)
    check_against_reference(batch, q, out, lse, {}, {}, "bfloat16")


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["cuda_cores", "tensor_cores"])
@pytest.mark.parametrize("page_size", [1, 16])
def test_split_kv_with_uneven_requests(page_size, use_tensor_cores):
    seed = case_seed("split", page_size)
    kv_lens = [70001, 1, 20000, 3, 40960]
    head_dim = HEAD_DIMS[0]
    batch = PagedBatch(kv_lens, page_size, 2, head_dim, "float16", seed=seed)
    q = make_q(len(kv_lens), 8, head_dim, "float16", seed)
    wrapper, out, lse = run_batch(batch, q, 8, 2, head_dim, "float16", "float16", {}, {},
                                  use_tensor_cores=use_tensor_cores)
    info = wrapper.plan_info()
    assert info["num_partial_rows"] > 0 and info["num_work_items"] > len(kv_lens), info
    check_against_reference(batch, q, out, lse, {}, {}, "float16")


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["cuda_cores", "tensor_cores"])
def test_empty_requests_and_empty_batch(use_tensor_cores):
    seed = case_seed("empty")
    head_dim = HEAD_DIMS[0]
    batch = PagedBatch([0, 9, 0, 1, 300], 16, 2, head_dim, "bfloat16", seed=seed)
    q = make_q(5, 4, head_dim, "bfloat16", seed)
    _, out, lse = run_batch(batch, q, 4, 2, head_dim, "bfloat16", "bfloat16", {}, {},
                            use_tensor_cores=use_tensor_cores)
    check_against_reference(batch, q, out, lse, {}, {}, "bfloat16")

    empty = PagedBatch([], 16, 2, head_dim, "bfloat16", seed=seed)
    q0 = make_q(0, 4, head_dim, "bfloat16", seed)
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace())
    wrapper.plan(empty.indptr, empty.indices, empty.last_page_len, 4, 2, head_dim, 16, q_data_type="bfloat16")
    out0, lse0 = wrapper.run(q0, batch.cache, return_lse=True)
    torch.cuda.synchronize()
    assert out0.shape == (0, 4, head_dim) and lse0.shape == (0, 4)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["cuda_cores", "tensor_cores"])
def test_strided_pool_and_output_view(use_tensor_cores):
    seed = case_seed("strided")
    head_dim = HEAD_DIMS[-1]
    kv_lens = [33, 700, 5]
    batch = PagedBatch(kv_lens, 5, 2, head_dim, "float16", layout="HND", form="tuple", seed=seed, strided=True)
    assert not batch.full.is_contiguous()
    q_big = make_q(len(kv_lens), 16, head_dim, "float16", seed)
    q = q_big[:, ::2]  # a strided q view
    out_big = torch.full((len(kv_lens), 8, 2 * head_dim), float("nan"), dtype=torch.float16, device="cuda")
    out = out_big[:, :, :head_dim]
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace(), kv_layout="HND",
                                                         use_tensor_cores=use_tensor_cores)
    wrapper.plan(batch.indptr, batch.indices, batch.last_page_len, 8, 2, head_dim, 5, q_data_type="float16")
    wrapper.run(q, batch.cache, out=out)
    assert torch.isnan(out_big[:, :, head_dim:]).all(), "wrote outside the out view"
    check_against_reference(batch, q, out, None, {}, {}, "float16")


def test_deterministic_and_device_buffers_accepted():
    seed = case_seed("determinism")
    head_dim = HEAD_DIMS[0]
    batch = PagedBatch([4000, 17, 1200], 16, 2, head_dim, "bfloat16", seed=seed)
    q = make_q(3, 8, head_dim, "bfloat16", seed)
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace())
    # Page-table arrays on the GPU are read back by plan().
    wrapper.plan(batch.indptr.cuda(), batch.indices.cuda(), batch.last_page_len.cuda(), 8, 2, head_dim, 16,
                 q_data_type=torch.bfloat16)
    first = wrapper.run(q, batch.cache)
    second = wrapper.run(q, batch.cache)
    assert torch.equal(first, second)
    check_against_reference(batch, q, first, None, {}, {}, "bfloat16")


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["cuda_cores", "tensor_cores"])
def test_cuda_graph_replay_matches_eager(use_tensor_cores):
    seed = case_seed("graph")
    rng = random.Random(seed)
    head_dim = HEAD_DIMS[0]
    batch_size, page_size = 6, 16
    num_pages_cap = 4096
    indptr_buf = torch.empty(batch_size + 1, dtype=torch.int32, device="cuda")
    indices_buf = torch.empty(num_pages_cap, dtype=torch.int32, device="cuda")
    last_buf = torch.empty(batch_size, dtype=torch.int32, device="cuda")
    ws = workspace()
    graph_wrapper = fi_core.CUDAGraphBatchDecodeWithPagedKVCacheWrapper(ws, indptr_buf, indices_buf, last_buf,
                                                                        use_tensor_cores=use_tensor_cores)
    eager = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace(), use_tensor_cores=use_tensor_cores)

    def plan(wrapper, b):
        wrapper.plan(b.indptr, b.indices, b.last_page_len, 8, 2, head_dim, page_size, q_data_type="float16")

    def draw(step):
        return PagedBatch([rng.choice([1, 16, 17, rng.randint(1, 9000)]) for _ in range(batch_size)],
                          page_size, 2, head_dim, "float16", seed=seed + step)

    # The graph reads q and the cache from fixed buffers; every draw fits in num_pages_cap pages.
    q_static = make_q(batch_size, 8, head_dim, "float16", seed)
    cache_static = torch.zeros((num_pages_cap, 2, page_size, 2, head_dim), dtype=torch.float16, device="cuda")
    out_static = torch.empty_like(q_static)
    lse_static = torch.empty(batch_size, 8, device="cuda")
    first = draw(0)
    cache_static[: first.full.shape[0]].copy_(first.full)
    plan(graph_wrapper, first)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        graph_wrapper.run(q_static, cache_static, out=out_static, lse=lse_static)  # warm-up
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            graph_wrapper.run(q_static, cache_static, out=out_static, lse=lse_static)
    torch.cuda.current_stream().wait_stream(stream)

    for step in range(1, 4):
        # New lengths (same batch size), new q and new cache contents at every step.
        nxt = draw(step)
        cache_static.zero_()
        cache_static[: nxt.full.shape[0]].copy_(nxt.full)
        q_static.copy_(make_q(batch_size, 8, head_dim, "float16", seed + 10 + step))
        plan(graph_wrapper, nxt)
        graph.replay()
        plan(eager, nxt)
        want_out, want_lse = eager.run(q_static, cache_static, return_lse=True)
        torch.cuda.synchronize()
        assert torch.equal(out_static, want_out), f"step {step}: graph replay differs from eager"
        assert torch.equal(lse_static, want_lse), f"step {step}: graph lse differs from eager"
        nxt.cache = cache_static
        nxt.k_pages, nxt.v_pages = cache_static[:, 0], cache_static[:, 1]
        check_against_reference(nxt, q_static, out_static, lse_static, {}, {}, "float16")


def test_run_validation():
    seed = case_seed("run-validation")
    head_dim = HEAD_DIMS[0]
    batch = PagedBatch([20, 3], 16, 2, head_dim, "float16", seed=seed)
    q = make_q(2, 8, head_dim, "float16", seed)
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace())
    wrapper.plan(batch.indptr, batch.indices, batch.last_page_len, 8, 2, head_dim, 16, q_data_type="float16")

    def expect(exc, fragment, q_=q, cache=batch.cache, **kw):
        with pytest.raises(exc) as info:
            wrapper.run(q_, cache, **kw)
        assert fragment in str(info.value), str(info.value)

    expect(ValueError, "q: expected shape [batch_size, num_qo_heads, head_dim] = (2, 8, ", q_=q[:1])
    expect(ValueError, "q: expected shape", q_=q.reshape(2, 4, 2 * head_dim))
    expect(TypeError, "q: expected dtype float16, got bfloat16", q_=q.to(torch.bfloat16))
    expect(TypeError, "paged_kv_cache: expected dtype float16, got bfloat16", cache=batch.full.to(torch.bfloat16))
    expect(ValueError, "paged_kv_cache: expected at least", cache=batch.full[:1])
    expect(ValueError, "paged_kv_cache: expected 2 (k and v) in dimension 1", cache=batch.full[:, :1])
    expect(ValueError, "out: expected shape", out=torch.empty(2, 8, head_dim + 8, dtype=torch.float16, device="cuda"))
    expect(TypeError, "lse: expected dtype float32", lse=torch.empty(2, 8, dtype=torch.float16, device="cuda"))
    expect(ValueError, "v_cache: expected shape", cache=(batch.k_pages, batch.v_pages[:, :8]))
    expect(TypeError, "q: expected a CUDA array", q_=q.cpu())


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_append_then_decode_equals_dense_decode(layout):
    """Sequences written into a paged cache with append_paged_kv_cache, then decoded, give what
    single_decode gives on the dense sequences."""
    seed = case_seed("append", layout)
    rng = random.Random(seed)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    head_dim, page_size, num_kv_heads, num_qo_heads = HEAD_DIMS[0], 5, 2, 8
    kv_lens = [rng.randint(1, 700) for _ in range(4)]
    pages = [(n + page_size - 1) // page_size for n in kv_lens]
    num_pages = sum(pages) + 2
    ids = torch.tensor(rng.sample(range(num_pages), sum(pages)), dtype=torch.int32, device="cuda")
    indptr = torch.tensor([0] + [sum(pages[: i + 1]) for i in range(len(pages))], dtype=torch.int32, device="cuda")
    last = torch.tensor([n - (p - 1) * page_size for n, p in zip(kv_lens, pages)], dtype=torch.int32, device="cuda")
    page_shape = (page_size, num_kv_heads, head_dim) if layout == "NHD" else (num_kv_heads, page_size, head_dim)
    cache = torch.randn((num_pages, 2) + page_shape, device="cuda", generator=gen).half()
    keys = [torch.randn(n, num_kv_heads, head_dim, device="cuda", generator=gen).half() for n in kv_lens]
    values = [torch.randn(n, num_kv_heads, head_dim, device="cuda", generator=gen).half() for n in kv_lens]
    append_indptr = torch.tensor([0] + [sum(kv_lens[: i + 1]) for i in range(len(kv_lens))], dtype=torch.int32,
                                 device="cuda")
    nnz = sum(kv_lens)
    batch_indices, positions = fi_core.get_batch_indices_positions(
        append_indptr, fi_core.get_seq_lens(indptr, last, page_size), nnz)
    fi_core.append_paged_kv_cache(torch.cat(keys), torch.cat(values), batch_indices, positions, cache, ids,
                                  indptr, last, kv_layout=layout)
    q = make_q(len(kv_lens), num_qo_heads, head_dim, "float16", seed)
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace(), kv_layout=layout)
    wrapper.plan(indptr, ids, last, num_qo_heads, num_kv_heads, head_dim, page_size, q_data_type="float16")
    out = wrapper.run(q, cache)
    for b in range(len(kv_lens)):
        k, v = keys[b], values[b]
        if layout == "HND":
            k, v = k.transpose(0, 1).contiguous(), v.transpose(0, 1).contiguous()
        want = fi_core.single_decode_with_kv_cache(q[b], k, v, kv_layout=layout)
        torch.testing.assert_close(out[b], want, rtol=2e-3, atol=2e-3, msg=f"request {b}")


def plan_single(wrapper, batch, b, num_qo_heads, num_kv_heads, head_dim, q_dtype, **split):
    """Plans request b of `batch` alone (its own pages of the same cache)."""
    first, last = int(batch.indptr[b]), int(batch.indptr[b + 1])
    wrapper.plan(batch.indptr[b:b + 2] - first, batch.indices[first:last], batch.last_page_len[b:b + 1],
                 num_qo_heads, num_kv_heads, head_dim, batch.page_size, q_data_type=q_dtype, **split)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["cuda_cores", "tensor_cores"])
def test_fixed_split_size_gives_batch_invariant_outputs(use_tensor_cores):
    # FlashInfer's fixed_split_size (pages): a request's chunks, and so its output bits, are the
    # same alone as in a batch (where the automatic split would cut it differently).
    seed = case_seed("fixed_split", use_tensor_cores)
    head_dim = HEAD_DIMS[0]
    kv_lens = [5000, 1, 777, 3000]
    batch = PagedBatch(kv_lens, 16, 2, head_dim, "bfloat16", seed=seed)
    q = make_q(len(kv_lens), 8, head_dim, "bfloat16", seed)
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace(), use_tensor_cores=use_tensor_cores)
    wrapper.plan(batch.indptr, batch.indices, batch.last_page_len, 8, 2, head_dim, 16, q_data_type="bfloat16",
                 fixed_split_size=20)
    info = wrapper.plan_info()
    # 20 pages of 16 = 320 keys: 16 + 1 + 3 + 10 chunks.
    assert info["chunk_len"] == 320 and info["num_work_items"] == 30, info
    out = torch.full_like(q, float("nan"))
    lse = torch.full(q.shape[:2], float("nan"), device="cuda")
    wrapper.run(q, batch.cache, out=out, lse=lse)
    check_against_reference(batch, q, out, lse, {}, {}, "bfloat16")
    for b in range(len(kv_lens)):
        single = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace(), use_tensor_cores=use_tensor_cores)
        plan_single(single, batch, b, 8, 2, head_dim, "bfloat16", fixed_split_size=20)
        alone, alone_lse = single.run(q[b:b + 1], batch.cache, return_lse=True)
        assert torch.equal(alone[0], out[b]) and torch.equal(alone_lse[0], lse[b]), f"request {b}"


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["cuda_cores", "tensor_cores"])
def test_disable_split_kv_runs_each_request_whole(use_tensor_cores):
    seed = case_seed("no_split", use_tensor_cores)
    head_dim = HEAD_DIMS[-1]
    kv_lens = [70001, 3, 9000]
    batch = PagedBatch(kv_lens, 16, 2, head_dim, "float16", seed=seed)
    q = make_q(len(kv_lens), 8, head_dim, "float16", seed)
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(workspace(), use_tensor_cores=use_tensor_cores)
    wrapper.plan(batch.indptr, batch.indices, batch.last_page_len, 8, 2, head_dim, 16, q_data_type="float16",
                 disable_split_kv=True)
    info = wrapper.plan_info()
    assert (info["num_work_items"], info["num_partial_rows"], info["chunk_len"]) == (3, 0, 70001), info
    out, lse = wrapper.run(q, batch.cache, return_lse=True)
    check_against_reference(batch, q, out, lse, {}, {}, "float16")


def test_fixed_split_beyond_the_cuda_graph_grid_is_refused():
    head_dim = HEAD_DIMS[0]
    batch = PagedBatch([16384, 16384], 16, 2, head_dim, "bfloat16", seed=case_seed("graph_split"))
    buffers = dict(indptr_buffer=torch.empty(3, dtype=torch.int32, device="cuda"),
                   indices_buffer=torch.empty(2048, dtype=torch.int32, device="cuda"),
                   last_page_len_buffer=torch.empty(2, dtype=torch.int32, device="cuda"))
    wrapper = fi_core.CUDAGraphBatchDecodeWithPagedKVCacheWrapper(workspace(), **buffers)
    # One page a chunk: 2048 columns, more than batch size + the columns of one CTA per SM on any GPU of today.
    with pytest.raises(ValueError, match="fixed_split_size: chunks of 1 pages make 2048 grid columns, more than"):
        wrapper.plan(batch.indptr, batch.indices, batch.last_page_len, 8, 2, head_dim, 16, q_data_type="bfloat16",
                     fixed_split_size=1)
    # Whole requests always fit.
    wrapper.plan(batch.indptr, batch.indices, batch.last_page_len, 8, 2, head_dim, 16, q_data_type="bfloat16",
                 disable_split_kv=True)
    q = make_q(2, 8, head_dim, "bfloat16", 0)
    check_against_reference(batch, q, wrapper.run(q, batch.cache), None, {}, {}, "bfloat16")

"""The tensor layer on a GPU: torch, CuPy and JAX inputs give outputs in the same framework,
out=/lse= are written in place, and launches honour the caller's stream."""

import pytest

from conftest import HAS_GPU, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import numpy as np
    import torch

    import fi_core
    from reference import decode_reference

    HEAD_DIM = fi_core.build_info()["head_dims"][0]


def rel_err(out, ref):
    return float((out.double() - ref).norm() / ref.norm())


def torch_inputs(kv_len=3000, dtype=None, seed=0):
    dtype = dtype or torch.float16
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(16, HEAD_DIM, device="cuda", generator=g).to(dtype)
    k = torch.randn(kv_len, 4, HEAD_DIM, device="cuda", generator=g).to(dtype)
    v = torch.randn(kv_len, 4, HEAD_DIM, device="cuda", generator=g).to(dtype)
    return q, k, v


def test_launch_follows_torch_current_stream():
    # The side stream is busy for ~50 ms before it writes the inputs. A launch on any other stream
    # would read the stale inputs and fail the comparison.
    q_new, k_new, v_new = torch_inputs(seed=1)
    q, k, v = torch.zeros_like(q_new), torch.zeros_like(k_new), torch.zeros_like(v_new)
    q.normal_(), k.normal_(), v.normal_()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        q.copy_(q_new), k.copy_(k_new), v.copy_(v_new)
        out = fi_core.single_decode_with_kv_cache(q, k, v)
    side.synchronize()
    assert rel_err(out, decode_reference(q_new, k_new, v_new)[0]) < 3e-3


def test_stream_argument_overrides_current_stream():
    q_new, k_new, v_new = torch_inputs(seed=2)
    q, k, v = torch.randn_like(q_new), torch.randn_like(k_new), torch.randn_like(v_new)
    out = torch.full_like(q, float("nan"))
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        q.copy_(q_new), k.copy_(k_new), v.copy_(v_new)
    fi_core.single_decode_with_kv_cache(q, k, v, out=out, stream=side)
    side.synchronize()
    assert rel_err(out, decode_reference(q_new, k_new, v_new)[0]) < 3e-3


def test_out_and_lse_written_in_place_without_allocation():
    q, k, v = torch_inputs(seed=3)
    out = torch.full_like(q, float("nan"))
    lse = torch.full((16,), float("nan"), device="cuda")
    fi_core.single_decode_with_kv_cache(q, k, v, out=out, lse=lse)  # warm the caching allocator
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    # kv_len 7 needs no split-KV workspace: the call must allocate nothing at all.
    fi_core.single_decode_with_kv_cache(q, k[:7], v[:7], out=out, lse=lse)
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before
    ref_out, ref_lse = decode_reference(q, k[:7], v[:7])
    assert rel_err(out, ref_out) < 3e-3
    assert float((lse.double() - ref_lse).abs().max()) < 1e-3


def test_cupy_arrays_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    q, k, v = torch_inputs(seed=4)
    qc, kc, vc = (cupy.from_dlpack(x) for x in (q, k, v))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        out, lse = fi_core.single_decode_with_kv_cache(qc, kc, vc, return_lse=True)
    stream.synchronize()
    assert isinstance(out, cupy.ndarray) and out.dtype == cupy.float16 and isinstance(lse, cupy.ndarray)
    ref_out, ref_lse = decode_reference(q, k, v)
    assert rel_err(torch.from_dlpack(out), ref_out) < 3e-3
    assert float((torch.from_dlpack(lse).double() - ref_lse).abs().max()) < 1e-3


def test_jax_arrays_in_jax_out():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX has no GPU backend here")
    rng = np.random.default_rng(5)
    qn = rng.standard_normal((16, HEAD_DIM)).astype(np.float32)
    kn = rng.standard_normal((2500, 4, HEAD_DIM)).astype(np.float32)
    vn = rng.standard_normal((2500, 4, HEAD_DIM)).astype(np.float32)
    q, k, v = (jax.device_put(jnp.asarray(x, dtype=jnp.bfloat16), gpus[0]) for x in (qn, kn, vn))
    out = fi_core.single_decode_with_kv_cache(q, k, v)
    assert isinstance(out, jax.Array) and out.dtype == jnp.bfloat16
    ref_out, _ = decode_reference(*(torch.from_numpy(np.asarray(x.astype(jnp.float32))).cuda() for x in (q, k, v)))
    got = torch.from_numpy(np.asarray(out.astype(jnp.float32))).cuda()
    assert rel_err(got, ref_out) < 1e-2


def test_jax_fp8_kv():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX has no GPU backend here")
    rng = np.random.default_rng(6)
    q = jax.device_put(jnp.asarray(rng.standard_normal((8, HEAD_DIM)), dtype=jnp.float16), gpus[0])
    k = jax.device_put(jnp.asarray(rng.standard_normal((900, 2, HEAD_DIM)), dtype=jnp.float8_e4m3fn), gpus[0])
    v = jax.device_put(jnp.asarray(rng.standard_normal((900, 2, HEAD_DIM)), dtype=jnp.float8_e4m3fn), gpus[0])
    out = fi_core.single_decode_with_kv_cache(q, k, v, k_scale=0.5, v_scale=2.0)
    to_torch = lambda x: torch.from_numpy(np.asarray(x.astype(jnp.float32))).cuda()
    ref_out, _ = decode_reference(to_torch(q), to_torch(k), to_torch(v), k_scale=0.5, v_scale=2.0)
    assert rel_err(to_torch(out), ref_out) < 3e-3


def test_mixed_frameworks_follow_q():
    cupy = pytest.importorskip("cupy")
    q, k, v = torch_inputs(seed=7)
    out = fi_core.single_decode_with_kv_cache(q, cupy.from_dlpack(k), cupy.from_dlpack(v))
    assert isinstance(out, torch.Tensor)
    assert rel_err(out, decode_reference(q, k, v)[0]) < 3e-3


def test_batch_decode_with_cupy_and_a_workspace_from_cupy():
    """The wrapper takes CuPy arrays end to end: workspace, page-table ids on the GPU, q, cache."""
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(5)
    kv_lens, page_size = [700, 1, 33], 16
    pages = [-(-n // page_size) for n in kv_lens]
    indptr = np.concatenate([[0], np.cumsum(pages)]).astype(np.int32)
    ids = rng.permutation(int(indptr[-1])).astype(np.int32)
    last = np.array([n - (p - 1) * page_size for n, p in zip(kv_lens, pages)], dtype=np.int32)
    cache = cupy.asarray(rng.standard_normal((int(indptr[-1]), 2, page_size, 2, HEAD_DIM)), dtype=cupy.float16)
    q = cupy.asarray(rng.standard_normal((3, 8, HEAD_DIM)), dtype=cupy.float16)
    wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(cupy.empty(16 << 20, dtype=cupy.uint8))
    wrapper.plan(indptr, cupy.asarray(ids), last, 8, 2, HEAD_DIM, page_size, q_data_type="float16")
    out, lse = wrapper.run(q, cache, return_lse=True)
    assert isinstance(out, cupy.ndarray) and isinstance(lse, cupy.ndarray) and lse.dtype == cupy.float32
    cache_t, q_t, out_t = (torch.from_dlpack(x) for x in (cache, q, out))
    for b, n in enumerate(kv_lens):
        rows = torch.from_numpy(ids[indptr[b]:indptr[b + 1]]).long().cuda()
        k = cache_t[rows, 0].reshape(-1, 2, HEAD_DIM)[:n]
        v = cache_t[rows, 1].reshape(-1, 2, HEAD_DIM)[:n]
        assert rel_err(out_t[b], decode_reference(q_t[b], k, v)[0]) < 3e-3, f"request {b}"

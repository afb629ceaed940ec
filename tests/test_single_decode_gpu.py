"""single_decode_with_kv_cache against the float64 reference, on fresh random inputs with
poisoned (NaN) outputs, over dtypes x head dims x layouts x group sizes x kv_len x variants."""


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
GROUP_SIZES = [1, 4, 8]
KV_LENS = [1, 7, 4096, 65536 + 3]
VARIANTS = ["none", "rope", "alibi", "soft_cap", "window", "lse"]
NUM_KV_HEADS = 2


def make_inputs(q_dtype, kv_dtype, head_dim, group, kv_len, layout, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    num_qo_heads = NUM_KV_HEADS * group
    q = torch.randn(num_qo_heads, head_dim, device="cuda", generator=gen).to(getattr(torch, q_dtype))
    shape = (kv_len, NUM_KV_HEADS, head_dim) if layout == "NHD" else (NUM_KV_HEADS, kv_len, head_dim)
    k = torch.randn(shape, device="cuda", generator=gen).to(getattr(torch, kv_dtype))
    v = torch.randn(shape, device="cuda", generator=gen).to(getattr(torch, kv_dtype))
    return q, k, v


def variant_options(variant, kv_len, fp8):
    opts = {}
    if variant == "rope":
        opts.update(pos_encoding_mode="ROPE_LLAMA", rope_theta=1e4, rope_scale=1.0)
    elif variant == "alibi":
        opts.update(pos_encoding_mode="ALIBI")
    elif variant == "soft_cap":
        opts.update(logits_soft_cap=5.0, sm_scale=0.3)
    elif variant == "window":
        opts.update(window_left=max(kv_len // 3, 0))
    if fp8:
        opts.update(k_scale=0.5, v_scale=2.0)
    return opts


def assert_close(out, ref, name, tol):
    out = out.double()
    assert torch.isfinite(out).all(), f"{name}: non-finite (unwritten or NaN) elements"
    err = (out - ref).norm() / ref.norm().clamp_min(1e-30)
    assert err < tol, f"{name}: relative L2 error {err:.3e} >= {tol}"
    torch.testing.assert_close(out, ref, rtol=0, atol=float(8 * tol * ref.abs().max()), msg=name)


def run_case(q_dtype, kv_dtype, head_dim, layout, group, kv_len, variant, seed):
    q, k, v = make_inputs(q_dtype, kv_dtype, head_dim, group, kv_len, layout, seed)
    opts = variant_options(variant, kv_len, kv_dtype.startswith("float8"))
    out = torch.full_like(q, float("nan"))
    lse = torch.full((q.shape[0],), float("nan"), device="cuda")
    got = fi_core.single_decode_with_kv_cache(q, k, v, kv_layout=layout, out=out, lse=lse, **opts)
    assert got is not None and got[0] is out and got[1] is lse
    ref_out, ref_lse = decode_reference(q, k, v, kv_layout=layout, **opts)
    tol = 1e-2 if q_dtype == "bfloat16" else 3e-3
    if variant == "soft_cap":
        tol *= 2  # tanh.approx
    assert_close(out, ref_out, "out", tol)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=2e-3 * (1 + ref_lse.abs().max().item()))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kv_len", KV_LENS, ids=lambda n: f"kv{n}")
@pytest.mark.parametrize("group", GROUP_SIZES, ids=lambda g: f"g{g}")
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("q_dtype,kv_dtype", DTYPE_PAIRS)
def test_single_decode_matches_reference(q_dtype, kv_dtype, head_dim, layout, group, kv_len, variant):
    seed = case_seed(q_dtype, kv_dtype, head_dim, layout, group, kv_len, variant)
    run_case(q_dtype, kv_dtype, head_dim, layout, group, kv_len, variant, seed)


@pytest.mark.parametrize("group", [2, 3, 6, 12, 16])
def test_uneven_and_large_groups(group):
    run_case("bfloat16", "bfloat16", HEAD_DIMS[0], "NHD", group, 1000, "none", 7 + group)


def test_allocates_outputs_in_torch_and_returns_lse_on_request():
    q, k, v = make_inputs("bfloat16", "bfloat16", HEAD_DIMS[0], 4, 513, "NHD", 11)
    out = fi_core.single_decode_with_kv_cache(q, k, v)
    assert isinstance(out, torch.Tensor) and out.dtype == q.dtype and out.shape == q.shape
    out2, lse = fi_core.single_decode_with_kv_cache(q, k, v, return_lse=True)
    assert lse.dtype == torch.float32 and lse.shape == (q.shape[0],)
    ref_out, ref_lse = decode_reference(q, k, v)
    assert_close(out, ref_out, "out", 1e-2)
    assert torch.equal(out, out2)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=1e-3 * (1 + ref_lse.abs().max().item()))


def test_strided_views_into_larger_buffers():
    # q rows and KV tokens are slices of larger buffers (non-contiguous leading strides).
    head_dim = HEAD_DIMS[0]
    big_q = torch.randn(8, 3 * head_dim, device="cuda", dtype=torch.float16)
    q = big_q[:, head_dim: 2 * head_dim]
    pool = torch.randn(2, 700, 4, head_dim, device="cuda", dtype=torch.float16)
    k, v = pool[0, :, 1:3], pool[1, :, 1:3]  # 2 of 4 heads, tokens strided by the pool
    out_buf = torch.full((8, 2 * head_dim), float("nan"), device="cuda", dtype=torch.float16)
    out = out_buf[:, :head_dim]
    fi_core.single_decode_with_kv_cache(q, k, v, out=out)
    assert_close(out, decode_reference(q, k, v)[0], "out", 3e-3)
    assert torch.isnan(out_buf[:, head_dim:]).all(), "wrote outside the out view"


def test_empty_kv_gives_zero_and_minus_inf():
    head_dim = HEAD_DIMS[0]
    q = torch.randn(4, head_dim, device="cuda", dtype=torch.float16)
    k = torch.empty(0, 2, head_dim, device="cuda", dtype=torch.float16)
    out, lse = fi_core.single_decode_with_kv_cache(q, k, k, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isneginf(lse).all()


def test_rope_scale_and_theta():
    q, k, v = make_inputs("float16", "float16", HEAD_DIMS[0], 4, 3000, "NHD", 5)
    opts = dict(pos_encoding_mode="ROPE_LLAMA", rope_scale=4.0, rope_theta=5e5)
    out = fi_core.single_decode_with_kv_cache(q, k, v, **opts)
    assert_close(out, decode_reference(q, k, v, **opts)[0], "out", 3e-3)


def test_q_scale_and_sm_scale():
    q, k, v = make_inputs("bfloat16", "float8_e4m3fn", HEAD_DIMS[0], 4, 2000, "HND", 6)
    opts = dict(sm_scale=0.05, q_scale=1.5, k_scale=0.25, v_scale=3.0)
    out = fi_core.single_decode_with_kv_cache(q, k, v, kv_layout="HND", **opts)
    assert_close(out, decode_reference(q, k, v, kv_layout="HND", **opts)[0], "out", 1e-2)


def test_results_are_deterministic():
    q, k, v = make_inputs("bfloat16", "bfloat16", HEAD_DIMS[0], 4, 50000, "NHD", 8)
    a = fi_core.single_decode_with_kv_cache(q, k, v)
    b = fi_core.single_decode_with_kv_cache(q, k, v)
    assert torch.equal(a, b)

"""rmsnorm / gemma_rmsnorm / fused_add_rmsnorm / gemma_fused_add_rmsnorm against the float64
reference, on fresh random inputs with NaN-poisoned outputs: dtypes x hidden sizes (odd ones, and
rows too long for registers) x batch sizes, strided rows, [batch, heads, dim] views into a packed
QKV buffer, in place."""

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core
    from reference import rmsnorm_reference

DTYPES = ["float16", "bfloat16", "float32"]
# 40000 > 32768 elements: the row takes two rounds (re-read) instead of staying in registers.
HIDDEN = [1, 7, 64, 100, 4095, 4096, 5120, 8192, 16384, 40000]
BATCH = [1, 19, 128]
# Half an ulp of the output dtype relative to the value, with margin; float32 adds the float32
# sum of squares.
RTOL = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-5}
L2_TOL = {"float16": 5e-4, "bfloat16": 4e-3, "float32": 2e-6}


def randn(shape, dtype, seed, mean=0.0, std=1.0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(shape, device="cuda", generator=gen) * std + mean).to(getattr(torch, dtype))


def assert_close(out, ref, dtype, name):
    out = out.double()
    assert torch.isfinite(out).all(), f"{name}: non-finite elements (unwritten or NaN)"
    if ref.numel() == 0:
        return
    # Absolute floor, L2 and element-wise: float16 outputs below 2^-14 are subnormal.
    atol = 1e-6 * max(1.0, ref.abs().max().item())
    err = (out - ref).norm().item()
    bound = L2_TOL[dtype] * ref.norm().item() + atol * ref.numel() ** 0.5
    assert err <= bound, f"{name}: L2 error {err:.3e} > {bound:.3e}"
    torch.testing.assert_close(out, ref, rtol=RTOL[dtype], atol=atol, msg=name)


def weight_for(hidden, dtype, seed, gemma):
    # Gemma weights sit around 0 (the kernel adds 1), others around 1.
    return randn((hidden,), dtype, seed + 1, mean=0.0 if gemma else 1.0, std=0.1)


@pytest.mark.parametrize("gemma", [False, True], ids=["rmsnorm", "gemma"])
@pytest.mark.parametrize("batch", BATCH, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda h: f"h{h}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_matches_reference(dtype, hidden, batch, gemma):
    seed = case_seed("rmsnorm", dtype, hidden, batch, gemma)
    x = randn((batch, hidden), dtype, seed, std=2.0)
    w = weight_for(hidden, dtype, seed, gemma)
    out = torch.full_like(x, float("nan"))
    fn = fi_core.gemma_rmsnorm if gemma else fi_core.rmsnorm
    assert fn(x, w, 1e-6, out=out) is out
    assert_close(out, rmsnorm_reference(x, w, 1e-6, gemma), dtype, "out")


@pytest.mark.parametrize("gemma", [False, True], ids=["fused", "gemma"])
@pytest.mark.parametrize("batch", BATCH, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda h: f"h{h}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rmsnorm_matches_reference(dtype, hidden, batch, gemma):
    seed = case_seed("fused_add_rmsnorm", dtype, hidden, batch, gemma)
    x = randn((batch, hidden), dtype, seed)
    residual = randn((batch, hidden), dtype, seed + 2)
    w = weight_for(hidden, dtype, seed, gemma)
    total = x.double() + residual.double()
    fn = fi_core.gemma_fused_add_rmsnorm if gemma else fi_core.fused_add_rmsnorm
    assert fn(x, residual, w, 1e-5) is None
    assert_close(residual, total, dtype, "residual")
    assert_close(x, rmsnorm_reference(total, w, 1e-5, gemma), dtype, "input (normalized)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_in_place_and_allocation(dtype):
    x = randn((33, 4096), dtype, 3)
    w = weight_for(4096, dtype, 3, False)
    ref = rmsnorm_reference(x, w, 1e-6)
    allocated = fi_core.rmsnorm(x, w)
    assert isinstance(allocated, torch.Tensor) and allocated.dtype == x.dtype and allocated.shape == x.shape
    assert_close(allocated, ref, dtype, "allocated out")
    assert fi_core.rmsnorm(x, w, out=x) is x
    assert_close(x, ref, dtype, "in place")
    assert torch.equal(x, allocated), "in place and out of place differ"


@pytest.mark.parametrize("pad", [8, 1], ids=["aligned_rows", "misaligned_rows"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_rows(dtype, pad):
    # Rows that are views into wider buffers: the padding keeps 16-byte alignment (8) or breaks it
    # (1, every row on its own alignment), for input, out and residual alike.
    hidden, batch = 5120, 17
    buf = randn((batch, hidden + pad), dtype, 4)
    x = buf[:, :hidden]
    w = weight_for(hidden, dtype, 4, False)
    out_buf = torch.full((batch, hidden + 2 * pad), float("nan"), device="cuda", dtype=x.dtype)
    out = out_buf[:, pad:pad + hidden]
    fi_core.rmsnorm(x, w, out=out)
    assert_close(out, rmsnorm_reference(x, w, 1e-6), dtype, "out")
    assert torch.isnan(out_buf[:, :pad]).all() and torch.isnan(out_buf[:, pad + hidden:]).all(), "wrote outside out"

    res_buf = randn((batch, hidden + 3 * pad), dtype, 5)
    residual = res_buf[:, 2 * pad:2 * pad + hidden]
    res_before = res_buf.clone()
    x_buf = buf.clone()
    x2 = x_buf[:, :hidden]
    total = x2.double() + residual.double()
    fi_core.fused_add_rmsnorm(x2, residual, w)
    assert_close(residual, total, dtype, "residual")
    assert_close(x2, rmsnorm_reference(total, w, 1e-6), dtype, "input")
    assert torch.equal(res_buf[:, :2 * pad], res_before[:, :2 * pad]), "wrote outside residual"
    assert torch.equal(res_buf[:, 2 * pad + hidden:], res_before[:, 2 * pad + hidden:]), "wrote outside residual"
    assert torch.equal(x_buf[:, hidden:], buf[:, hidden:]), "wrote outside input"


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_per_head_norm_on_packed_qkv_view(dtype, head_dim):
    # QK-norm: rmsnorm over each head of q and k, in place on [nnz, heads, head_dim] views of a
    # packed [nnz, (32 + 2 * 8) * head_dim] QKV buffer (two strided levels); v stays untouched.
    nnz, hq, hk = 37, 32, 8
    qkv = randn((nnz, (hq + 2 * hk) * head_dim), dtype, 6)
    before = qkv.clone()
    q = qkv[:, :hq * head_dim].view(nnz, hq, head_dim)
    k = qkv[:, hq * head_dim:(hq + hk) * head_dim].view(nnz, hk, head_dim)
    wq, wk = weight_for(head_dim, dtype, 7, False), weight_for(head_dim, dtype, 8, False)
    ref_q, ref_k = rmsnorm_reference(q, wq, 1e-6), rmsnorm_reference(k, wk, 1e-6)
    assert fi_core.rmsnorm(q, wq, out=q) is q
    fi_core.rmsnorm(k, wk, out=k)
    assert_close(q, ref_q, dtype, "q")
    assert_close(k, ref_k, dtype, "k")
    assert torch.equal(qkv[:, (hq + hk) * head_dim:], before[:, (hq + hk) * head_dim:]), "v changed"
    # Out of place into a contiguous [nnz, heads, head_dim] array.
    out = torch.full((nnz, hq, head_dim), float("nan"), device="cuda", dtype=q.dtype)
    q_src = before[:, :hq * head_dim].view(nnz, hq, head_dim)
    fi_core.gemma_rmsnorm(q_src, wq, out=out)
    assert_close(out, rmsnorm_reference(q_src, wq, 1e-6, gemma=True), dtype, "out")


def test_eps_and_zero_rows():
    x = randn((4, 256), "float32", 9, std=1e-3)
    w = weight_for(256, "float32", 9, False)
    for eps in (0.0, 1e-6, 1.0):
        assert_close(fi_core.rmsnorm(x, w, eps), rmsnorm_reference(x, w, eps), "float32", f"eps={eps}")
    empty = torch.empty((0, 256), device="cuda", dtype=torch.float16)
    assert fi_core.rmsnorm(empty, w.half()).shape == (0, 256)


def test_stream_argument_and_determinism():
    x = randn((64, 8192), "bfloat16", 10)
    w = weight_for(8192, "bfloat16", 10, False)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        a = fi_core.rmsnorm(x, w)  # on the current stream, `stream`
    b = torch.empty_like(x)
    stream.wait_stream(torch.cuda.current_stream())
    fi_core.rmsnorm(x, w, out=b, stream=stream)  # on `stream`, named explicitly
    stream.synchronize()
    assert torch.equal(a, b)

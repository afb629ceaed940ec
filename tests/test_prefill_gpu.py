"""single_prefill_with_kv_cache against a float64 reference written from DESIGN.md's definitions,
on fresh random inputs with NaN-poisoned outputs: dtypes x head dims x layouts x GQA groups x
(qo_len, kv_len) x causal, then the logits variants, custom masks, views and edge cases."""

import math

import numpy as np
import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core
    from reference import alibi_slopes, rope

    HEAD_DIMS = fi_core.build_info()["head_dims"]
else:
    HEAD_DIMS = [128]

DTYPES = ["float16", "bfloat16"]
GROUP_SIZES = [1, 4, 8]
# (qo_len, kv_len): single token, partial and exact 64-row tiles, appends, a long prompt.
LENGTHS = [(1, 1), (1, 300), (37, 37), (64, 200), (129, 129), (700, 1500), (2000, 2000)]
NUM_KV_HEADS = 2
LN2 = math.log(2.0)


def prefill_reference(q, k, v, causal=False, kv_layout="NHD", pos_encoding_mode="NONE", window_left=-1,
                      logits_soft_cap=0.0, sm_scale=None, custom_mask=None, rope_scale=None, rope_theta=None,
                      k_scale=None, v_scale=None):
    """q [qo_len, H, D]; k, v [kv_len, Hkv, D] (NHD) or [Hkv, kv_len, D] (HND), any float dtype
    (fp8 dequantized exactly). Query row i sits at position i + kv_len - qo_len, key j at j
    (ROPE_LLAMA: reference.rope, the rotation in float64 of angles formed in fp32 as the kernels do).
    custom_mask (bool [qo_len, kv_len]) replaces `causal`, as in FlashInfer; the window still
    applies. k_scale multiplies sm_scale, v_scale the output (not the lse). Returns (out [qo_len, H,
    D], lse [qo_len, H] base 2) in float64; one head at a time so that the [qo_len, kv_len] logits
    stay small."""
    q, k, v = q.double(), k.double(), v.double()
    if kv_layout == "HND":
        k, v = k.transpose(0, 1), v.transpose(0, 1)
    qo_len, num_heads, d = q.shape
    kv_len, num_kv_heads = k.shape[0], k.shape[1]
    group = num_heads // num_kv_heads
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else sm_scale
    sm_scale *= 1.0 if k_scale is None else k_scale
    q_pos = torch.arange(qo_len, device=q.device)[:, None] + (kv_len - qo_len)
    k_pos = torch.arange(kv_len, device=q.device)[None, :]
    if pos_encoding_mode == "ROPE_LLAMA":
        rope_scale = 1.0 if rope_scale is None else rope_scale
        rope_theta = 1e4 if rope_theta is None else rope_theta
        q = rope(q, q_pos[:, 0], rope_scale, rope_theta)
        k = rope(k, k_pos[0], rope_scale, rope_theta)
    visible = torch.ones(qo_len, kv_len, dtype=torch.bool, device=q.device)
    if custom_mask is not None:
        visible &= custom_mask.reshape(qo_len, kv_len).to(q.device)
    elif causal:
        visible &= k_pos <= q_pos
    if window_left >= 0:
        visible &= k_pos >= q_pos - window_left
    slopes = alibi_slopes(num_heads)
    out = torch.empty_like(q)
    lse = torch.empty(qo_len, num_heads, dtype=torch.float64, device=q.device)
    for h in range(num_heads):
        logits = (q[:, h] @ k[:, h // group].T) * sm_scale
        if pos_encoding_mode == "ALIBI":
            logits = logits + slopes[h].item() * (k_pos - q_pos).double()
        if logits_soft_cap > 0:
            logits = logits_soft_cap * torch.tanh(logits / logits_soft_cap)
        logits = logits.masked_fill(~visible, float("-inf"))
        row_lse = torch.logsumexp(logits, dim=1)
        out[:, h] = torch.exp(logits - row_lse[:, None]).nan_to_num(0.0) @ v[:, h // group]
        lse[:, h] = row_lse / LN2
    if v_scale is not None:
        out *= v_scale
    return out, lse


def make_inputs(dtype, head_dim, group, qo_len, kv_len, layout, seed, kv_dtype=None):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    dt = getattr(torch, dtype)
    kv_dt = getattr(torch, kv_dtype or dtype)
    q = torch.randn(qo_len, NUM_KV_HEADS * group, head_dim, device="cuda", generator=gen).to(dt)
    shape = (kv_len, NUM_KV_HEADS, head_dim) if layout == "NHD" else (NUM_KV_HEADS, kv_len, head_dim)
    k = torch.randn(shape, device="cuda", generator=gen).to(kv_dt)
    v = torch.randn(shape, device="cuda", generator=gen).to(kv_dt)
    return q, k, v


def check(out, lse, ref_out, ref_lse, dtype, tol_scale=1.0):
    """Relative L2 error of the whole output, a bound on each element, and lse per row."""
    tol = (1e-2 if dtype == "bfloat16" else 3e-3) * tol_scale
    out = out.double()
    assert torch.isfinite(out).all(), "out: non-finite (unwritten or NaN) elements"
    err = (out - ref_out).norm() / ref_out.norm().clamp_min(1e-30)
    assert err < tol, f"out: relative L2 error {err:.3e} >= {tol}"
    torch.testing.assert_close(out, ref_out, rtol=0, atol=float(8 * tol * ref_out.abs().max()), msg="out")
    if lse is not None:
        assert not torch.isnan(lse).any(), "lse: unwritten (NaN) elements"
        # Rows that see no key have lse -inf (assert_close wants them at the same places); the
        # tolerance scales with the finite values.
        finite = ref_lse[torch.isfinite(ref_lse)]
        scale = finite.abs().max().item() if finite.numel() else 0.0
        torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=2e-3 * (1 + scale))


def run_case(dtype, head_dim, layout, group, qo_len, kv_len, causal, seed, tol_scale=1.0, kv_dtype=None, **opts):
    q, k, v = make_inputs(dtype, head_dim, group, qo_len, kv_len, layout, seed, kv_dtype)
    out = torch.full_like(q, float("nan"))
    lse = torch.full(q.shape[:2], float("nan"), device="cuda")
    got = fi_core.single_prefill_with_kv_cache(q, k, v, causal=causal, kv_layout=layout, out=out, lse=lse, **opts)
    assert got[0] is out and got[1] is lse
    ref_out, ref_lse = prefill_reference(q, k, v, causal=causal, kv_layout=layout, **opts)
    check(out, lse, ref_out, ref_lse, dtype, tol_scale)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("qo_len,kv_len", LENGTHS, ids=[f"q{a}_kv{b}" for a, b in LENGTHS])
@pytest.mark.parametrize("group", GROUP_SIZES, ids=lambda g: f"g{g}")
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_matches_reference(dtype, head_dim, layout, group, qo_len, kv_len, causal):
    seed = case_seed("prefill", dtype, head_dim, layout, group, qo_len, kv_len, causal)
    run_case(dtype, head_dim, layout, group, qo_len, kv_len, causal, seed)


VARIANTS = {
    "alibi": dict(pos_encoding_mode="ALIBI"),
    "soft_cap": dict(logits_soft_cap=5.0, sm_scale=0.3),
    "sm_scale": dict(sm_scale=0.05),
    "window0": dict(window_left=0),
    "window100": dict(window_left=100),
    "window_alibi_cap": dict(window_left=70, pos_encoding_mode="ALIBI", logits_soft_cap=30.0),
}
VARIANT_LENGTHS = [(1, 513), (128, 128), (300, 1000)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("qo_len,kv_len", VARIANT_LENGTHS, ids=[f"q{a}_kv{b}" for a, b in VARIANT_LENGTHS])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_variants(dtype, head_dim, variant, qo_len, kv_len, causal):
    seed = case_seed("prefill_variant", dtype, head_dim, variant, qo_len, kv_len, causal)
    tol_scale = 2.0 if "logits_soft_cap" in VARIANTS[variant] else 1.0  # tanh.approx
    run_case(dtype, head_dim, "NHD", 4, qo_len, kv_len, causal, seed, tol_scale, **VARIANTS[variant])


@pytest.mark.parametrize("group", [2, 3, 16])
def test_uneven_and_large_groups(group):
    run_case("bfloat16", HEAD_DIMS[0], "HND", group, 200, 333, True, case_seed("prefill_group", group))


def test_allocates_outputs_and_return_lse_forms():
    q, k, v = make_inputs("bfloat16", HEAD_DIMS[0], 4, 100, 250, "NHD", case_seed("prefill_alloc"))
    out = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True)
    assert isinstance(out, torch.Tensor) and out.dtype == q.dtype and out.shape == q.shape
    out2, lse = fi_core.single_prefill_with_kv_cache_return_lse(q, k, v, causal=True)
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:2]
    assert torch.equal(out, out2)
    ref_out, ref_lse = prefill_reference(q, k, v, causal=True)
    check(out, lse, ref_out, ref_lse, "bfloat16")


def test_strided_views_into_larger_buffers():
    # q heads, KV tokens and out rows are slices of larger buffers (non-contiguous leading strides).
    head_dim = HEAD_DIMS[0]
    gen = torch.Generator(device="cuda").manual_seed(case_seed("prefill_strided"))
    big_q = torch.randn(90, 12, head_dim, device="cuda", generator=gen).half()
    q = big_q[:, 2:10]
    pool = torch.randn(2, 400, 4, head_dim, device="cuda", generator=gen).half()
    k, v = pool[0, :, 1:3], pool[1, :, 1:3]
    out_buf = torch.full((90, 8, 2 * head_dim), float("nan"), device="cuda", dtype=torch.float16)
    out = out_buf[..., :head_dim]
    lse_buf = torch.full((90, 16), float("nan"), device="cuda")
    lse = lse_buf[:, :8]
    fi_core.single_prefill_with_kv_cache(q, k, v, causal=True, out=out, lse=lse)
    check(out, lse, *prefill_reference(q, k, v, causal=True), "float16")
    assert torch.isnan(out_buf[..., head_dim:]).all(), "wrote outside the out view"
    assert torch.isnan(lse_buf[:, 8:]).all(), "wrote outside the lse view"


def test_empty_query_launches_nothing():
    q, k, v = make_inputs("float16", HEAD_DIMS[0], 1, 0, 10, "NHD", 0)
    out, lse = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True, return_lse=True)
    assert out.shape == q.shape and lse.shape == (0, NUM_KV_HEADS)


def test_results_are_deterministic():
    q, k, v = make_inputs("bfloat16", HEAD_DIMS[0], 8, 1000, 3000, "NHD", case_seed("prefill_determinism"))
    a = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True)
    b = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Custom masks: bool [qo_len, kv_len] (packed on the GPU) or packed_custom_mask (little bit order).

def random_mask(qo_len, kv_len, density, seed):
    """Keys visible with probability `density`; every 7th row (from row 3) sees no key at all."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    mask = torch.rand(qo_len, kv_len, device="cuda", generator=gen) < density
    mask[3::7] = False
    return mask


def run_mask_case(dtype, head_dim, layout, group, qo_len, kv_len, mask, causal, tol_scale=1.0, **opts):
    """Runs with custom_mask and with packed_custom_mask (identical results), checks the reference."""
    q, k, v = make_inputs(dtype, head_dim, group, qo_len, kv_len, layout, case_seed("mask_inputs", qo_len, kv_len))
    results = []
    packed = fi_core.packbits(mask.reshape(-1), bitorder="little")
    assert np.array_equal(packed.cpu().numpy(), np.packbits(mask.reshape(-1).cpu().numpy(), bitorder="little"))
    for form in (dict(custom_mask=mask), dict(packed_custom_mask=packed)):
        out = torch.full_like(q, float("nan"))
        lse = torch.full(q.shape[:2], float("nan"), device="cuda")
        # causal is ignored when a mask is given (FlashInfer: the mask decides).
        fi_core.single_prefill_with_kv_cache(q, k, v, causal=causal, kv_layout=layout, out=out, lse=lse, **form,
                                             **opts)
        results.append((out, lse))
    ref_out, ref_lse = prefill_reference(q, k, v, kv_layout=layout, custom_mask=mask, **opts)
    check(*results[0], ref_out, ref_lse, dtype, tol_scale)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1]), \
        "custom_mask and packed_custom_mask differ"
    hidden_rows = ~mask.any(dim=1)
    assert (results[0][0][hidden_rows] == 0).all() and torch.isneginf(results[0][1][hidden_rows]).all(), \
        "a row that sees no key: output 0, lse -inf"


MASK_LENGTHS = [(1, 1), (1, 300), (37, 37), (100, 333), (129, 700), (600, 1500)]


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 0.9, 1.0], ids=lambda d: f"p{round(d * 100)}")
@pytest.mark.parametrize("qo_len,kv_len", MASK_LENGTHS, ids=[f"q{a}_kv{b}" for a, b in MASK_LENGTHS])
@pytest.mark.parametrize("group", [1, 4], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_custom_mask(dtype, group, qo_len, kv_len, density):
    seed = case_seed("prefill_mask", dtype, group, qo_len, kv_len, density)
    mask = random_mask(qo_len, kv_len, density, seed)
    run_mask_case(dtype, HEAD_DIMS[0], "NHD", group, qo_len, kv_len, mask, causal=seed % 2 == 0)


MASK_VARIANTS = {
    "window": dict(window_left=40),
    "alibi": dict(pos_encoding_mode="ALIBI"),
    "soft_cap": dict(logits_soft_cap=5.0, sm_scale=0.3),
    "hnd": dict(),
}


@pytest.mark.parametrize("variant", list(MASK_VARIANTS))
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
def test_single_prefill_custom_mask_variants(head_dim, variant):
    seed = case_seed("prefill_mask_variant", head_dim, variant)
    mask = random_mask(200, 500, 0.5, seed)
    tol_scale = 2.0 if variant == "soft_cap" else 1.0  # tanh.approx
    run_mask_case("bfloat16", head_dim, "HND" if variant == "hnd" else "NHD", 4, 200, 500, mask, causal=True,
                  tol_scale=tol_scale, **MASK_VARIANTS[variant])


@pytest.mark.parametrize("group", [1, 8, 32], ids=lambda g: f"g{g}")
def test_causal_shaped_mask_equals_causal(group):
    # A mask drawn as the bottom-right causal triangle gives the causal result (to rounding: the
    # masked kernel is another variant); heads of a token share its row at any group size.
    qo_len, kv_len = 300, 650
    q, k, v = make_inputs("float16", HEAD_DIMS[0], group, qo_len, kv_len, "NHD", case_seed("mask_causal", group))
    rows = torch.arange(qo_len, device="cuda")[:, None] + (kv_len - qo_len)
    mask = torch.arange(kv_len, device="cuda")[None, :] <= rows
    out, lse = fi_core.single_prefill_with_kv_cache(q, k, v, custom_mask=mask, return_lse=True)
    want, want_lse = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True, return_lse=True)
    torch.testing.assert_close(out, want, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# RoPE on the fly (ROPE_LLAMA) and fp8 KV (e4m3 / e5m2, with k_scale / v_scale).

# The kernel rounds rotated q and k to q's dtype (as FlashInfer does) and forms angles in fp32.
ROPE_TOL = 2.0
ROPE_LENGTHS = [(1, 1), (1, 300), (37, 37), (100, 333), (129, 129), (700, 1500)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("qo_len,kv_len", ROPE_LENGTHS, ids=[f"q{a}_kv{b}" for a, b in ROPE_LENGTHS])
@pytest.mark.parametrize("group", [1, 4], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_rope(dtype, head_dim, layout, group, qo_len, kv_len, causal):
    seed = case_seed("prefill_rope", dtype, head_dim, layout, group, qo_len, kv_len, causal)
    run_case(dtype, head_dim, layout, group, qo_len, kv_len, causal, seed, ROPE_TOL, pos_encoding_mode="ROPE_LLAMA")


ROPE_VARIANTS = {
    "scale_theta": dict(rope_scale=4.0, rope_theta=5e5),
    "small_theta": dict(rope_theta=100.0),
    "soft_cap": dict(logits_soft_cap=5.0, sm_scale=0.3),
    "window": dict(window_left=50),
    "g8": dict(),
}


@pytest.mark.parametrize("variant", list(ROPE_VARIANTS))
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
def test_single_prefill_rope_variants(head_dim, variant):
    seed = case_seed("prefill_rope_variant", head_dim, variant)
    group = 8 if variant == "g8" else 4
    tol = ROPE_TOL * (2.0 if variant == "soft_cap" else 1.0)  # tanh.approx
    run_case("bfloat16", head_dim, "NHD", group, 300, 1000, True, seed, tol, pos_encoding_mode="ROPE_LLAMA",
             **ROPE_VARIANTS[variant])


def test_rope_differs_from_plain():
    # The rotation really happens (a kernel ignoring it would pass only if the reference did too).
    q, k, v = make_inputs("float16", HEAD_DIMS[0], 4, 200, 400, "NHD", case_seed("rope_differs"))
    plain = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True)
    rotated = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True, pos_encoding_mode="ROPE_LLAMA")
    assert (plain - rotated).abs().max() > 0.1


@pytest.mark.parametrize("density", [0.1, 0.7], ids=lambda d: f"p{round(d * 100)}")
@pytest.mark.parametrize("group", [1, 4], ids=lambda g: f"g{g}")
def test_single_prefill_rope_custom_mask(group, density):
    seed = case_seed("prefill_rope_mask", group, density)
    mask = random_mask(150, 400, density, seed)
    run_mask_case("float16", HEAD_DIMS[0], "NHD", group, 150, 400, mask, causal=False, tol_scale=ROPE_TOL,
                  pos_encoding_mode="ROPE_LLAMA", rope_theta=1e6)


FP8_DTYPES = ["float8_e4m3fn", "float8_e5m2"]
FP8_LENGTHS = [(1, 1), (1, 513), (37, 37), (129, 700), (1000, 1000), (700, 1500)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("qo_len,kv_len", FP8_LENGTHS, ids=[f"q{a}_kv{b}" for a, b in FP8_LENGTHS])
@pytest.mark.parametrize("group", [1, 4], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("kv_dtype", FP8_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_fp8_kv(dtype, kv_dtype, head_dim, layout, group, qo_len, kv_len, causal):
    seed = case_seed("prefill_fp8", dtype, kv_dtype, head_dim, layout, group, qo_len, kv_len, causal)
    run_case(dtype, head_dim, layout, group, qo_len, kv_len, causal, seed, kv_dtype=kv_dtype, k_scale=0.7,
             v_scale=1.9)


FP8_VARIANTS = {
    "no_scales": dict(),
    "rope": dict(pos_encoding_mode="ROPE_LLAMA", rope_scale=2.0),
    "alibi_window": dict(pos_encoding_mode="ALIBI", window_left=80, k_scale=1.3),
    "soft_cap": dict(logits_soft_cap=5.0, sm_scale=0.3, k_scale=0.5, v_scale=0.25),
}


@pytest.mark.parametrize("variant", list(FP8_VARIANTS))
@pytest.mark.parametrize("kv_dtype", FP8_DTYPES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
def test_single_prefill_fp8_kv_variants(head_dim, kv_dtype, variant):
    seed = case_seed("prefill_fp8_variant", head_dim, kv_dtype, variant)
    opts = FP8_VARIANTS[variant]
    tol = (ROPE_TOL if "pos_encoding_mode" in opts and opts["pos_encoding_mode"] == "ROPE_LLAMA" else 1.0) * \
        (2.0 if "logits_soft_cap" in opts else 1.0)
    run_case("float16", head_dim, "HND", 4, 300, 1000, True, seed, tol, kv_dtype=kv_dtype, **opts)


def test_fp8_kv_custom_mask_and_scales_on_16_bit_kv():
    seed = case_seed("prefill_fp8_mask")
    q, k, v = make_inputs("bfloat16", HEAD_DIMS[0], 4, 120, 300, "NHD", seed, "float8_e4m3fn")
    mask = random_mask(120, 300, 0.5, seed)
    out, lse = fi_core.single_prefill_with_kv_cache(q, k, v, custom_mask=mask, k_scale=0.6, v_scale=3.0,
                                                    return_lse=True)
    check(out, lse, *prefill_reference(q, k, v, custom_mask=mask, k_scale=0.6, v_scale=3.0), "bfloat16")
    # FlashInfer applies the scales whatever the KV dtype.
    k16, v16 = k.to(torch.bfloat16), v.to(torch.bfloat16)
    out16, lse16 = fi_core.single_prefill_with_kv_cache(q, k16, v16, custom_mask=mask, k_scale=0.6, v_scale=3.0,
                                                        return_lse=True)
    check(out16, lse16, *prefill_reference(q, k16, v16, custom_mask=mask, k_scale=0.6, v_scale=3.0), "bfloat16")


def test_fp8_kv_equals_its_16_bit_dequantization():
    # fp8 values convert exactly to fp16: the fp8 kernel and the fp16 kernel on the widened KV agree
    # to the rounding of the probabilities (the same tile schedule).
    q, k, v = make_inputs("float16", HEAD_DIMS[0], 4, 500, 900, "NHD", case_seed("fp8_exact"), "float8_e5m2")
    got = fi_core.single_prefill_with_kv_cache(q, k, v, causal=True)
    want = fi_core.single_prefill_with_kv_cache(q, k.half(), v.half(), causal=True)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3)

"""merge_state, merge_state_in_place and merge_states on the GPU against a float64 reference written
from the definition (base-2 log-sum-exp weights, DESIGN.md), on fresh random states with
NaN-poisoned outputs: dtypes x head dims (odd ones for the two-state merge) x state counts, states
with s = -inf (alone and all of a row), large s (no overflow), strided and misaligned views
(nothing outside them written), masks, in place, and merge_states on the split-KV layout."""

import math

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core

DTYPES = ["float16", "bfloat16", "float32"]
# The output is rounded once from float32; exp2/log2 run on the SFU (about 2^-22 relative).
V_TOL = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-5}
S_TOL = 1e-5
SEQ, HEADS = 19, 8


def randn(shape, dtype, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, device="cuda") * scale).to(getattr(torch, dtype))


def random_s(shape, gen, scale=4.0):
    """float32 lse values with about one in six -inf (a state that saw no key)."""
    s = torch.randn(shape, generator=gen, device="cuda") * scale
    empty = torch.rand(shape, generator=gen, device="cuda") < 1 / 6
    return s.masked_fill(empty, -math.inf)


def merge_reference(vs, ss):
    """The merged state of vs[i] [..., H, D] with lse ss[i] [..., H], in float64."""
    s = torch.stack([x.double() for x in ss])
    v = torch.stack([x.double() for x in vs])
    m = s.max(dim=0).values
    m = torch.where(m == -math.inf, torch.zeros_like(m), m)  # all -inf: weights 0, not NaN
    w = torch.exp2(s - m)
    d = w.sum(dim=0)
    out = (w[..., None] * v).sum(dim=0) / torch.where(d > 0, d, torch.ones_like(d))[..., None]
    return out, m + torch.log2(d)


def assert_merged(out, lse, ref_out, ref_lse, dtype, name):
    assert not torch.isnan(out).any() and not torch.isnan(lse).any(), f"{name}: NaN (unwritten or wrong)"
    tol = V_TOL[dtype]
    scale = max(1.0, ref_out.abs().max().item()) if ref_out.numel() else 1.0
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol * scale, msg=f"{name}: v")
    torch.testing.assert_close(lse.double(), ref_lse, rtol=S_TOL, atol=S_TOL, msg=f"{name}: s")


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=getattr(torch, dtype), device="cuda")


def two_states(seed, dtype, seq, heads, head_dim, s_scale=4.0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    v_a, v_b = randn((seq, heads, head_dim), dtype, gen), randn((seq, heads, head_dim), dtype, gen)
    s_a, s_b = random_s((seq, heads), gen, s_scale), random_s((seq, heads), gen, s_scale)
    s_a[0, 0] = s_b[0, 0] = -math.inf  # a pair that saw no key at all: v = 0, s = -inf
    return v_a, s_a, v_b, s_b


@pytest.mark.parametrize("seq", [1, SEQ], ids=lambda n: f"seq{n}")
@pytest.mark.parametrize("head_dim", [3, 8, 64, 100, 128, 256, 1000], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state_matches_reference(dtype, head_dim, seq):
    v_a, s_a, v_b, s_b = two_states(case_seed("merge_state", dtype, head_dim, seq), dtype, seq, HEADS, head_dim)
    out, lse = poisoned(v_a.shape, dtype), poisoned(s_a.shape, "float32")
    result = fi_core.merge_state(v_a, s_a, v_b, s_b, out=out, lse=lse)
    assert result[0] is out and result[1] is lse
    ref_out, ref_lse = merge_reference([v_a, v_b], [s_a, s_b])
    assert_merged(out, lse, ref_out, ref_lse, dtype, "merge_state")
    assert torch.equal(out[0, 0], torch.zeros_like(out[0, 0])) and lse[0, 0] == -math.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state_allocates_and_stays_stable(dtype):
    # Large s (2^s overflows float32 unless the max is subtracted) and a state that dominates.
    v_a, s_a, v_b, s_b = two_states(case_seed("stable", dtype), dtype, SEQ, HEADS, 128, s_scale=300.0)
    s_a[1] = 1000.0
    s_b[1] = 900.0
    out, lse = fi_core.merge_state(v_a, s_a, v_b, s_b)
    assert out.dtype == v_a.dtype and out.shape == v_a.shape and lse.dtype == torch.float32 and lse.shape == s_a.shape
    ref_out, ref_lse = merge_reference([v_a, v_b], [s_a, s_b])
    assert_merged(out, lse, ref_out, ref_lse, dtype, "large s")
    torch.testing.assert_close(out[1], v_a[1], msg="a state 100 octaves above the other is all that counts")


@pytest.mark.parametrize("pad", [8, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state_strided(dtype, pad):
    # v rows inside wider buffers (heads padded, head_dim offset by `pad`: 1 breaks 16-byte
    # alignment), s as every other column of a wider array; out and lse inside NaN buffers whose
    # padding must stay NaN.
    seed = case_seed("strided", dtype, pad)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    head_dim = 128
    v_a_buf, v_b_buf = (randn((SEQ, HEADS + 2, head_dim + 2 * pad), dtype, gen) for _ in range(2))
    v_a, v_b = v_a_buf[:, 1:HEADS + 1, pad:pad + head_dim], v_b_buf[:, 2:, 2 * pad:]
    s_a, s_b = random_s((SEQ, 2 * HEADS), gen)[:, ::2], random_s((HEADS, SEQ), gen).t()
    out_buf = poisoned((SEQ, HEADS + 1, head_dim + 2 * pad), dtype)
    lse_buf = poisoned((SEQ, 3 * HEADS), "float32")
    out, lse = out_buf[:, :HEADS, pad:pad + head_dim], lse_buf[:, 1::3]
    fi_core.merge_state(v_a, s_a, v_b, s_b, out=out, lse=lse)
    ref_out, ref_lse = merge_reference([v_a, v_b], [s_a, s_b])
    assert_merged(out, lse, ref_out, ref_lse, dtype, "strided")
    written = torch.zeros(out_buf.shape, dtype=torch.bool, device="cuda")
    written[:, :HEADS, pad:pad + head_dim] = True
    assert torch.isnan(out_buf[~written]).all(), "wrote outside out"
    assert torch.isnan(lse_buf[:, 0::3]).all() and torch.isnan(lse_buf[:, 2::3]).all(), "wrote outside lse"


@pytest.mark.parametrize("mask_dtype", [None, "bool", "uint8"])
@pytest.mark.parametrize("head_dim", [64, 100, 256], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state_in_place(dtype, head_dim, mask_dtype):
    seed = case_seed("in_place", dtype, head_dim, mask_dtype)
    v, s, v_other, s_other = two_states(seed, dtype, SEQ, HEADS, head_dim)
    ref_out, ref_lse = merge_reference([v, v_other], [s, s_other])
    v_before, s_before = v.clone(), s.clone()
    mask = None
    if mask_dtype is not None:
        gen = torch.Generator(device="cuda").manual_seed(seed + 1)
        keep = torch.rand((SEQ,), generator=gen, device="cuda") < 0.5
        keep[0], keep[1] = True, False
        mask = keep.to(getattr(torch, mask_dtype))
    assert fi_core.merge_state_in_place(v, s, v_other, s_other, mask) is None
    rows = torch.ones(SEQ, dtype=torch.bool, device="cuda") if mask is None else mask.bool()
    assert_merged(v[rows], s[rows], ref_out[rows], ref_lse[rows], dtype, "merged rows")
    assert torch.equal(v[~rows], v_before[~rows]) and torch.equal(s[~rows], s_before[~rows]), "masked rows changed"


def test_merge_state_out_is_an_input():
    # out/lse may be the first or the second state itself.
    v_a, s_a, v_b, s_b = two_states(case_seed("aliased"), "bfloat16", SEQ, HEADS, 128)
    ref_out, ref_lse = merge_reference([v_a, v_b], [s_a, s_b])
    first = (v_a.clone(), s_a.clone())
    fi_core.merge_state(first[0], first[1], v_b, s_b, out=first[0], lse=first[1])
    assert_merged(*first, ref_out, ref_lse, "bfloat16", "out = v_a")
    second = (v_b.clone(), s_b.clone())
    fi_core.merge_state(v_a, s_a, second[0], second[1], out=second[0], lse=second[1])
    assert_merged(*second, ref_out, ref_lse, "bfloat16", "out = v_b")


def random_state_stack(seed, dtype, seq, states, heads, head_dim):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    v = randn((seq, states, heads, head_dim), dtype, gen)
    s = random_s((seq, states, heads), gen)
    s[0, :, 0] = -math.inf  # a row whose states all saw no key
    return v, s


@pytest.mark.parametrize("states", [1, 2, 5, 130], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("head_dim", [8, 64, 128, 256, 1024], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_states_matches_reference(dtype, head_dim, states):
    v, s = random_state_stack(case_seed("merge_states", dtype, head_dim, states), dtype, 9, states, 4, head_dim)
    out, lse = poisoned((9, 4, head_dim), dtype), poisoned((9, 4), "float32")
    result = fi_core.merge_states(v, s, out=out, lse=lse)
    assert result[0] is out and result[1] is lse
    ref_out, ref_lse = merge_reference(v.unbind(1), s.unbind(1))
    assert_merged(out, lse, ref_out, ref_lse, dtype, "merge_states")
    assert torch.equal(out[0, 0], torch.zeros_like(out[0, 0])) and lse[0, 0] == -math.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_states_strided_split_kv_layout(dtype):
    # Partial results stored [num_states, seq_len, heads, head_dim] (as split-KV scratch is),
    # merged through a permuted view; s likewise; out inside a wider NaN buffer.
    seed = case_seed("split_kv", dtype)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    states, head_dim = 6, 128
    v = randn((states, SEQ, HEADS, head_dim), dtype, gen).transpose(0, 1)
    s = random_s((states, HEADS, SEQ), gen).permute(2, 0, 1)
    out_buf = poisoned((SEQ, HEADS, 2 * head_dim), dtype)
    out, lse = out_buf[:, :, head_dim:], poisoned((SEQ, HEADS), "float32")
    fi_core.merge_states(v, s, out=out, lse=lse)
    assert_merged(out, lse, *merge_reference(v.unbind(1), s.unbind(1)), dtype, "split-KV layout")
    assert torch.isnan(out_buf[:, :, :head_dim]).all(), "wrote outside out"
    allocated = fi_core.merge_states(v, s)
    assert allocated[0].shape == (SEQ, HEADS, head_dim) and allocated[0].dtype == v.dtype
    assert torch.equal(allocated[0], out) and torch.equal(allocated[1], lse), "not deterministic"


def test_merge_states_of_two_agrees_with_merge_state():
    v, s = random_state_stack(case_seed("two"), "float16", SEQ, 2, HEADS, 128)
    many = fi_core.merge_states(v, s)
    pair = fi_core.merge_state(v[:, 0], s[:, 0], v[:, 1], s[:, 1])
    torch.testing.assert_close(many[0], pair[0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(many[1], pair[1], rtol=1e-5, atol=1e-5)


def test_empty_inputs():
    v = torch.empty((0, HEADS, 64), dtype=torch.float16, device="cuda")
    s = torch.empty((0, HEADS), dtype=torch.float32, device="cuda")
    out, lse = fi_core.merge_state(v, s, v, s)
    assert out.shape == (0, HEADS, 64) and lse.shape == (0, HEADS)
    fi_core.merge_state_in_place(v, s, v, s)
    out, lse = fi_core.merge_states(v[:, None], s[:, None])
    assert out.shape == (0, HEADS, 64)

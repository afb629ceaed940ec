"""Sampling and renormalization on the GPU. Statistical tests draw many samples of the same rows
(through `indices`, every output row has its own Philox stream) and bound the total-variation
distance between the empirical frequencies and the exact float64 filtered, renormalized
distribution; the bound follows from the number of draws, so a wrong distribution fails. Also:
support (no filtered-out token is ever drawn), renormalized probabilities against float64,
determinism, seeds and generators, and the documented edge cases."""

import math

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core

VOCABS = [1, 7, 1000, 32000, 32001, 128256, 151936]
FALSE_FAILURE = 1e-9  # probability that a correct kernel fails a TV bound


def draws_for(vocab):
    """Draws per row: many for small vocabularies, fewer where every draw streams a long row."""
    return max(1 << 14, min(1 << 18, (1 << 31) // vocab))


def random_probs(rows, vocab, seed, temperature=0.25):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.randn((rows, vocab), device="cuda", generator=gen) / temperature
    return torch.softmax(logits, dim=-1)


def kept_reference(probs, top_k=None, top_p=None, min_p=None, top_k_first=True):
    """float64 [rows, vocab] filtered and renormalized distribution, the kernel's conventions:
    non-finite and negative entries count as 0, ties at a threshold are kept."""
    p = probs.double().cpu()
    p = torch.where(torch.isfinite(p) & (p > 0), p, torch.zeros_like(p))
    out = torch.zeros_like(p)
    for r in range(p.shape[0]):
        row = p[r]
        keep = torch.ones_like(row, dtype=torch.bool)
        k = top_k[r] if isinstance(top_k, list) else top_k
        if k is not None and 0 < k < row.numel():
            keep &= row >= torch.sort(row, descending=True).values[k - 1]
        tp = top_p[r] if isinstance(top_p, list) else top_p
        if tp is not None and tp < 1:
            tp = float(torch.tensor(tp, dtype=torch.float32))  # the kernel's float32 top_p
            base = row * keep if top_k_first else row
            # The largest value v with mass(p >= v) >= tp * mass: the first sorted value whose
            # running sum reaches the target (ties end up kept by the >= below).
            values = torch.sort(row, descending=True).values
            first = int(torch.nonzero(torch.cumsum(values, 0) >= tp * base.sum())[0])
            keep &= row >= values[first]
        mp = min_p[r] if isinstance(min_p, list) else min_p
        if mp is not None and mp > 0:  # the threshold as the kernel rounds it: float32
            keep &= row >= (torch.tensor(min(mp, 1.0), dtype=torch.float32) * row.max().float()).double()
        kept = row * keep
        if kept.sum() > 0:
            out[r] = kept / kept.sum()
    return out


def tv_bound(dist, draws):
    """E[TV] <= 0.5 * sum sqrt(p (1 - p) / n); TV changes by <= 1/n per draw (McDiarmid)."""
    mean = 0.5 * torch.sqrt(dist * (1 - dist) / draws).sum().item()
    return mean + math.sqrt(math.log(1 / FALSE_FAILURE) / (2 * draws))


def draw_many(fn, probs, draws, seed, **filters):
    """`draws` samples of every row of probs: [rows, draws] int64 on the CPU."""
    rows = probs.shape[0]
    indices = torch.arange(rows, device="cuda", dtype=torch.int32).repeat_interleave(draws)
    per_draw = {}
    for name, value in filters.items():  # per-row arrays follow the output rows
        per_draw[name] = value.repeat_interleave(draws) if isinstance(value, torch.Tensor) else value
    out = fn(probs, indices=indices, seed=seed, offset=0, **per_draw)
    assert out.dtype == torch.int32 and out.shape == (rows * draws,)
    return out.long().cpu().view(rows, draws)


def assert_matches(samples, ref, name):
    vocab = ref.shape[1]
    assert int(samples.min()) >= 0 and int(samples.max()) < vocab, f"{name}: index out of range"
    for r in range(ref.shape[0]):
        counts = torch.bincount(samples[r], minlength=vocab).double()
        outside = counts[ref[r] == 0].sum().item()
        assert outside == 0, f"{name} row {r}: {outside:.0f} draws of filtered-out tokens"
        freq = counts / samples.shape[1]
        tv = 0.5 * (freq - ref[r]).abs().sum().item()
        bound = tv_bound(ref[r], samples.shape[1])
        assert tv <= bound, f"{name} row {r}: TV {tv:.4f} > {bound:.4f}"


CASES = [
    ("plain", lambda: fi_core.sampling_from_probs, {}, {}),
    ("top_p", lambda: fi_core.top_p_sampling_from_probs, {"top_p": 0.8}, {"top_p": 0.8}),
    ("top_k", lambda: fi_core.top_k_sampling_from_probs, {"top_k": 20}, {"top_k": 20}),
    ("min_p", lambda: fi_core.min_p_sampling_from_probs, {"min_p": 0.05}, {"min_p": 0.05}),
    ("top_k_top_p", lambda: fi_core.top_k_top_p_sampling_from_probs, {"top_k": 30, "top_p": 0.7},
     {"top_k": 30, "top_p": 0.7}),
    ("top_k_top_p_joint", lambda: fi_core.top_k_top_p_sampling_from_probs,
     {"top_k": 30, "top_p": 0.7, "filter_apply_order": "joint"},
     {"top_k": 30, "top_p": 0.7, "top_k_first": False}),
]


@pytest.mark.parametrize("vocab", [1000, 32001, 128256])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_frequencies_match_filtered_distribution(case, vocab):
    name, fn, kwargs, ref_kwargs = case
    seed = case_seed("freq", name, vocab)
    probs = random_probs(2, vocab, seed)
    samples = draw_many(fn(), probs, draws_for(vocab), seed, **kwargs)
    assert_matches(samples, kept_reference(probs, **ref_kwargs), f"{name} vocab {vocab}")


def test_per_row_filter_values():
    seed = case_seed("per_row")
    probs = random_probs(3, 5000, seed)
    top_k = torch.tensor([1, 10, 6000], dtype=torch.int32, device="cuda")
    top_p = torch.tensor([0.5, 0.9, 1.0], dtype=torch.float32, device="cuda")
    samples = draw_many(fi_core.top_k_top_p_sampling_from_probs, probs, draws_for(5000), seed, top_k=top_k, top_p=top_p)
    ref = kept_reference(probs, top_k=[1, 10, 6000], top_p=[0.5, 0.9, 1.0])
    assert_matches(samples, ref, "per-row top_k/top_p")
    min_p = torch.tensor([0.0, 0.1, 0.5], dtype=torch.float32, device="cuda")
    samples = draw_many(fi_core.min_p_sampling_from_probs, probs, draws_for(5000), seed, min_p=min_p)
    assert_matches(samples, kept_reference(probs, min_p=[0.0, 0.1, 0.5]), "per-row min_p")


@pytest.mark.parametrize("vocab", [7, 1000, 32001, 151936])
def test_renorm_matches_reference(vocab):
    seed = case_seed("renorm", vocab)
    probs = random_probs(5, vocab, seed, temperature=1.0)
    for top_p in (0.3, 0.9, 1.0):
        out = fi_core.top_p_renorm_probs(probs, top_p)
        torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_p=top_p), rtol=1e-5, atol=1e-7)
    for top_k in (1, 5, 100, vocab):
        out = fi_core.top_k_renorm_probs(probs, top_k)
        torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_k=top_k), rtol=1e-5, atol=1e-7)
    per_row = torch.tensor([1, 2, 3, 4, 5], dtype=torch.int32, device="cuda")
    out = fi_core.top_k_renorm_probs(probs, per_row)
    torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_k=[1, 2, 3, 4, 5]), rtol=1e-5, atol=1e-7)
    inplace = probs.clone()
    fi_core.top_p_renorm_probs(inplace, 0.5, out=inplace)
    torch.testing.assert_close(inplace.double().cpu(), kept_reference(probs, top_p=0.5), rtol=1e-5, atol=1e-7)


def test_determinism_and_seeds():
    probs = random_probs(64, 32001, case_seed("det"), temperature=4.0)
    a = fi_core.top_p_sampling_from_probs(probs, 0.9, seed=123, offset=8)
    b = fi_core.top_p_sampling_from_probs(probs, 0.9, seed=123, offset=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, fi_core.top_p_sampling_from_probs(probs, 0.9, seed=124, offset=8))
    assert not torch.equal(a, fi_core.top_p_sampling_from_probs(probs, 0.9, seed=123, offset=12))
    gen = torch.Generator(device="cuda").manual_seed(7)
    state = gen.get_state()
    first = fi_core.sampling_from_probs(probs, generator=gen)
    second = fi_core.sampling_from_probs(probs, generator=gen)  # the generator moved on
    assert not torch.equal(first, second)
    gen.set_state(state)
    assert torch.equal(first, fi_core.sampling_from_probs(probs, generator=gen))
    assert not torch.equal(fi_core.sampling_from_probs(probs), fi_core.sampling_from_probs(probs))


@pytest.mark.parametrize("vocab", VOCABS)
def test_filters_that_keep_everything_equal_plain_sampling(vocab):
    probs = random_probs(16, vocab, case_seed("keep_all", vocab), temperature=2.0)
    plain = fi_core.sampling_from_probs(probs, seed=5, offset=0)
    assert int(plain.min()) >= 0 and int(plain.max()) < vocab
    same = [fi_core.top_k_sampling_from_probs(probs, vocab, seed=5, offset=0),
            fi_core.top_k_sampling_from_probs(probs, 10 * vocab, seed=5, offset=0),
            fi_core.top_p_sampling_from_probs(probs, 1.0, seed=5, offset=0),
            fi_core.min_p_sampling_from_probs(probs, 0.0, seed=5, offset=0),
            fi_core.top_k_top_p_sampling_from_probs(probs, vocab, 1.0, seed=5, offset=0)]
    for other in same:
        assert torch.equal(plain, other)


@pytest.mark.parametrize("vocab", VOCABS)
def test_filters_that_keep_only_the_largest(vocab):
    probs = random_probs(32, vocab, case_seed("argmax", vocab))
    argmax = probs.argmax(dim=-1).int()
    for seed in range(4):
        assert torch.equal(fi_core.top_k_sampling_from_probs(probs, 1, seed=seed), argmax)
        assert torch.equal(fi_core.top_p_sampling_from_probs(probs, 1e-7, seed=seed), argmax)
        assert torch.equal(fi_core.min_p_sampling_from_probs(probs, 1.0, seed=seed), argmax)
        assert torch.equal(fi_core.top_k_top_p_sampling_from_probs(probs, 1, 0.5, seed=seed), argmax)


@pytest.mark.parametrize("vocab", VOCABS)
def test_odd_rows(vocab):
    rows = torch.zeros((8, vocab), device="cuda")
    last = vocab - 1
    rows[0, last] = 0.3                      # single non-zero (unnormalized)
    rows[1] = float("nan")                   # all NaN: nothing to sample -> 0
    rows[2] = float("inf")                   # all inf: counts as 0 -> 0
    # row 3: all zeros -> 0
    rows[4] = float("nan")
    rows[4, last] = 1.0                      # NaNs count as 0: only `last` remains
    rows[5] = -1.0
    rows[5, 0] = 2.0                         # negatives count as 0
    rows[6, :] = 1.0
    rows[6, last // 2] = float("inf")        # an inf among valid values counts as 0
    rows[7, last] = 1e-30                    # tiny but positive
    expected = {0: last, 1: 0, 2: 0, 3: 0, 4: last, 5: 0, 7: last}
    for fn, kw in [(fi_core.sampling_from_probs, {}), (fi_core.top_p_sampling_from_probs, {"top_p": 0.5}),
                   (fi_core.top_k_sampling_from_probs, {"top_k": 3}),
                   (fi_core.min_p_sampling_from_probs, {"min_p": 0.1}),
                   (fi_core.top_k_top_p_sampling_from_probs, {"top_k": 3, "top_p": 0.5})]:
        for seed in range(3):
            out = fn(rows, seed=seed, **kw).cpu()
            assert int(out.min()) >= 0 and int(out.max()) < vocab, fn.__name__
            for r, want in expected.items():
                assert int(out[r]) == want, f"{fn.__name__} row {r}: {int(out[r])} != {want}"
            if vocab > 1:
                assert int(out[6]) != last // 2
    zero_renorm = fi_core.top_p_renorm_probs(rows, 0.9).cpu()
    assert torch.equal(zero_renorm[1:4], torch.zeros((3, vocab)))


def test_indices_out_of_range_give_token_zero():
    probs = random_probs(2, 1000, case_seed("indices"))
    indices = torch.tensor([0, 1, 2, -1, 1 << 40], dtype=torch.int64, device="cuda")
    out = fi_core.sampling_from_probs(probs, indices=indices, seed=0).cpu()
    assert out[2:].tolist() == [0, 0, 0]
    assert 0 <= int(out[0]) < 1000 and 0 <= int(out[1]) < 1000


def test_strided_rows_and_check_nan():
    base = random_probs(4, 32001 + 1, case_seed("strided"))
    view = base[:, :32001]  # row stride 32002 floats: odd rows not 16-byte aligned
    samples = draw_many(fi_core.top_k_sampling_from_probs, view, 1 << 16, 3, top_k=40)
    assert_matches(samples, kept_reference(view, top_k=40), "strided top_k")
    bad = base.clone()
    bad[1, 5] = float("nan")
    with pytest.raises(ValueError, match="probs: expected no NaN"):
        fi_core.sampling_from_probs(bad, check_nan=True)


# ---- rows too large for the on-chip candidates: the streamed radix passes ----

def near_uniform_probs(rows, vocab, seed):
    """Probabilities within a few percent of 1 / vocab: every first-digit bin holds far more
    tokens than fit on chip, so thresholds come from streamed passes over the row."""
    return random_probs(rows, vocab, seed, temperature=20.0)


@pytest.mark.parametrize("vocab", [32001, 128256])
def test_streamed_thresholds_renorm_exactly(vocab):
    probs = near_uniform_probs(3, vocab, case_seed("streamed_renorm", vocab))
    for top_p in (0.1, 0.5, 0.97):
        out = fi_core.top_p_renorm_probs(probs, top_p)
        torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_p=top_p), rtol=1e-5, atol=1e-9)
    for top_k in (17000, vocab // 2, vocab - 1):
        out = fi_core.top_k_renorm_probs(probs, top_k)
        torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_k=top_k), rtol=1e-5, atol=1e-9)


# Kept sets of tens of thousands of near-equal tokens (min_p 0.8 keeps about half of them).
STREAMED_CASES = [
    ("top_p", lambda: fi_core.top_p_sampling_from_probs, {"top_p": 0.5}, {"top_p": 0.5}),
    ("top_k", lambda: fi_core.top_k_sampling_from_probs, {"top_k": 40000}, {"top_k": 40000}),
    ("min_p", lambda: fi_core.min_p_sampling_from_probs, {"min_p": 0.8}, {"min_p": 0.8}),
    ("top_k_top_p", lambda: fi_core.top_k_top_p_sampling_from_probs,
     {"top_k": 60000, "top_p": 0.6}, {"top_k": 60000, "top_p": 0.6}),
    ("top_k_top_p_joint", lambda: fi_core.top_k_top_p_sampling_from_probs,
     {"top_k": 60000, "top_p": 0.6, "filter_apply_order": "joint"}, {"top_k": 60000, "top_p": 0.6, "top_k_first": False}),
]


@pytest.mark.parametrize("case", STREAMED_CASES, ids=[c[0] for c in STREAMED_CASES])
def test_streamed_sampling_keeps_the_exact_set(case):
    name, fn, kwargs, ref_kwargs = case
    vocab = 128256
    seed = case_seed("streamed_sampling", name)
    probs = near_uniform_probs(2, vocab, seed)
    samples = draw_many(fn(), probs, 1 << 18, seed, **kwargs)
    assert_matches(samples, kept_reference(probs, **ref_kwargs), f"streamed {name}")


# ---- logits ----

LOGIT_DTYPES = ["float32", "float16", "bfloat16"]


def random_logits(rows, vocab, seed, dtype="float32", scale=4.0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn((rows, vocab), device="cuda", generator=gen) * scale).to(getattr(torch, dtype))


def softmax64(logits):
    """float64 softmax with the kernels' convention: NaN and +-inf logits count as -inf; a row with
    no finite logit is all zeros."""
    x = logits.double().cpu()
    x = torch.where(torch.isfinite(x), x, torch.full_like(x, float("-inf")))
    out = torch.zeros_like(x)
    live = torch.isfinite(x).any(dim=1)
    out[live] = torch.softmax(x[live], dim=-1)
    return out


def safe_top_p(probs, desired, top_k=None):
    """Per-row top_p near `desired` (over the top-k set when top_k is given) that puts the nucleus
    boundary halfway between two tokens' cumulative masses: the GPU's float32 softmax weights
    differ from float64 by ~1e-6 and must not move a token across it."""
    values = []
    for r in range(probs.shape[0]):
        row = torch.sort(probs[r], descending=True).values
        if top_k is not None:
            row = row[:top_k]
        cum = torch.cumsum(row, 0) / row.sum()
        j = int(torch.searchsorted(cum, torch.tensor([desired], dtype=cum.dtype))[0])
        j = max(1, min(j, row.numel() - 1))
        values.append(float((cum[j - 1] + cum[j]) / 2))
    return values


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("vocab", [1000, 32001, 128256])
def test_sampling_from_logits_matches_softmax(vocab, dtype):
    seed = case_seed("logits", vocab, dtype)
    logits = random_logits(2, vocab, seed, dtype)
    samples = draw_many(fi_core.sampling_from_logits, logits, draws_for(vocab), seed)
    assert_matches(samples, softmax64(logits), f"sampling_from_logits {dtype} vocab {vocab}")


@pytest.mark.parametrize("order", ["top_k_first", "joint"])
@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("vocab", [1000, 128256])
def test_top_k_top_p_from_logits_matches_filtered_softmax(vocab, dtype, order):
    seed = case_seed("logits_top_k_top_p", vocab, dtype, order)
    logits = random_logits(2, vocab, seed, dtype, scale=2.0)
    probs = softmax64(logits)
    top_k = 40
    top_p = safe_top_p(probs, 0.7, top_k if order == "top_k_first" else None)
    top_p_arr = torch.tensor(top_p, dtype=torch.float32, device="cuda")
    samples = draw_many(fi_core.top_k_top_p_sampling_from_logits, logits, draws_for(vocab), seed,
                        top_k=top_k, top_p=top_p_arr, filter_apply_order=order)
    ref = kept_reference(probs, top_k=top_k, top_p=[float(v) for v in top_p_arr.cpu()],
                         top_k_first=order == "top_k_first")
    assert_matches(samples, ref, f"top_k_top_p_sampling_from_logits {order} {dtype} vocab {vocab}")


def test_logits_determinism_and_generator():
    logits = random_logits(64, 32001, case_seed("logits_det"), "bfloat16", scale=0.5)
    a = fi_core.top_k_top_p_sampling_from_logits(logits, 1000, 0.9, seed=11, offset=4)
    assert torch.equal(a, fi_core.top_k_top_p_sampling_from_logits(logits, 1000, 0.9, seed=11, offset=4))
    assert not torch.equal(a, fi_core.top_k_top_p_sampling_from_logits(logits, 1000, 0.9, seed=12, offset=4))
    gen = torch.Generator(device="cuda").manual_seed(3)
    state = gen.get_state()
    first = fi_core.sampling_from_logits(logits, generator=gen)
    assert not torch.equal(first, fi_core.sampling_from_logits(logits, generator=gen))
    gen.set_state(state)
    assert torch.equal(first, fi_core.sampling_from_logits(logits, generator=gen))


@pytest.mark.parametrize("vocab", VOCABS)
def test_logits_odd_rows(vocab):
    last = vocab - 1
    rows = torch.full((6, vocab), float("-inf"), device="cuda")  # row 0: all -inf -> 0
    rows[1] = float("nan")                                      # all NaN -> 0
    rows[2, last] = 3.0                                         # one finite logit
    rows[3, 0] = float("inf")                                   # +inf counts as -inf
    rows[3, last] = -50.0
    rows[4] = float("nan")
    rows[4, last] = 1e4                                         # huge but finite
    rows[5] = 0.0                                               # uniform: anything in range
    expected = {0: 0, 1: 0, 2: last, 3: last, 4: last}
    for dtype in LOGIT_DTYPES:
        x = rows.to(getattr(torch, dtype))
        for fn, kw in [(fi_core.sampling_from_logits, {}),
                       (fi_core.top_k_top_p_sampling_from_logits, {"top_k": 3, "top_p": 0.5}),
                       (fi_core.top_k_top_p_sampling_from_logits, {"top_k": 3, "top_p": 0.5, "filter_apply_order": "joint"})]:
            for seed in range(3):
                out = fn(x, seed=seed, **kw).cpu()
                assert int(out.min()) >= 0 and int(out.max()) < vocab, f"{fn.__name__} {dtype}"
                for r, want in expected.items():
                    assert int(out[r]) == want, f"{fn.__name__} {dtype} row {r}: {int(out[r])} != {want}"


def mask_reference(logits, ks):
    x = logits.float().cpu()
    x = torch.where(torch.isfinite(x), x, torch.full_like(x, float("-inf")))
    out = torch.full_like(x, float("-inf"))
    for r, k in enumerate(ks):
        keep = torch.ones_like(x[r], dtype=torch.bool)
        if 0 < k < x.shape[1]:
            keep = x[r] >= torch.topk(x[r], k).values[-1]
        out[r] = torch.where(keep, x[r], out[r])
    return out.to(logits.dtype)


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("vocab", VOCABS)
def test_top_k_mask_logits_matches_reference(vocab, dtype):
    logits = random_logits(6, vocab, case_seed("mask", vocab, dtype), dtype)
    for k in sorted({1, 5, 100, max(vocab - 1, 1), vocab, 3 * vocab}):
        out = fi_core.top_k_mask_logits(logits, k)
        assert out.dtype == logits.dtype and out.shape == logits.shape
        assert torch.equal(out.cpu(), mask_reference(logits, [k] * 6)), f"k={k}"
    ks = [1, 3, vocab, 0, -2, 7]
    out = fi_core.top_k_mask_logits(logits, torch.tensor(ks, dtype=torch.int32, device="cuda"))
    assert torch.equal(out.cpu(), mask_reference(logits, ks))
    inplace = logits.clone()
    fi_core.top_k_mask_logits(inplace, 5, out=inplace)
    assert torch.equal(inplace.cpu(), mask_reference(logits, [5] * 6))


def test_top_k_mask_logits_ties_and_odd_values():
    gen = torch.Generator(device="cuda").manual_seed(case_seed("mask_ties"))
    logits = torch.randint(-3, 4, (4, 5000), device="cuda", generator=gen).float()  # heavy ties
    logits[1, ::7] = float("nan")
    logits[2, ::5] = float("inf")
    logits[3, ::3] = float("-inf")
    logits[3, 1] = -0.0
    for k in (1, 3, 100, 4999):
        out = fi_core.top_k_mask_logits(logits, k).cpu()
        assert torch.equal(out, mask_reference(logits, [k] * 4)), f"k={k}"
        assert not torch.isnan(out).any()
    # Huge k on a row that is already masked: nothing but the finite logits survives.
    big = fi_core.top_k_mask_logits(logits, 10**6).cpu()
    assert torch.equal(big, mask_reference(logits, [0] * 4))


@pytest.mark.parametrize("vocab", [1000, 128256])
def test_mask_then_softmax_equals_top_k_renorm(vocab):
    logits = random_logits(4, vocab, case_seed("mask_softmax", vocab), scale=1.5)
    for k in (1, 20, 500):
        masked = torch.softmax(fi_core.top_k_mask_logits(logits, k), dim=-1)
        renormed = fi_core.top_k_renorm_probs(torch.softmax(logits, dim=-1), k)
        torch.testing.assert_close(masked, renormed, rtol=1e-5, atol=1e-7)


# ---- chain speculative sampling ----

def spec_batch(batch, steps, vocab, seed, draft_temperature=1.0, target_temperature=1.0):
    """One request replicated `batch` times: draft and target rows ([steps, vocab] and
    [steps + 1, vocab]) and, per copy, draft tokens drawn from the draft rows."""
    draft_rows = random_probs(steps, vocab, seed, draft_temperature) if steps else torch.zeros((0, vocab), device="cuda")
    target_rows = random_probs(steps + 1, vocab, seed + 1, target_temperature)
    gen = torch.Generator(device="cuda").manual_seed(seed + 2)
    ids = torch.stack([torch.multinomial(draft_rows[j], batch, replacement=True, generator=gen)
                       for j in range(steps)], dim=1) if steps else torch.zeros((batch, 0), device="cuda")
    draft = draft_rows.unsqueeze(0).expand(batch, steps, vocab).contiguous()
    target = target_rows.unsqueeze(0).expand(batch, steps + 1, vocab).contiguous()
    return draft, ids.to(torch.int32), target, draft_rows.double().cpu(), target_rows.double().cpu()


def assert_chain_structure(out, ids, emitted, vocab):
    """Accepted prefix = draft tokens, one emitted token in range, then -1."""
    steps = ids.shape[1]
    out, ids, emitted = out.cpu().long(), ids.cpu().long(), emitted.cpu().long()
    pos = torch.arange(steps + 1).unsqueeze(0)
    assert ((emitted >= 0) & (emitted <= steps)).all()
    prefix = pos < emitted.unsqueeze(1)
    assert torch.equal(out[:, :steps][prefix[:, :steps]], ids[prefix[:, :steps]])
    at = out.gather(1, emitted.unsqueeze(1)).squeeze(1)
    assert ((at >= 0) & (at < vocab)).all()
    assert (out[pos > emitted.unsqueeze(1)] == -1).all()


def test_speculative_positions_follow_the_target_distribution():
    batch, steps, vocab = 1 << 17, 3, 100
    seed = case_seed("spec_dist")
    draft, ids, target, draft64, target64 = spec_batch(batch, steps, vocab, seed, 1.0, 0.7)
    out, accepted, emitted = fi_core.chain_speculative_sampling(draft, ids, target, seed=seed, offset=0)
    assert out.shape == (batch, steps + 1) and out.dtype == torch.int32
    assert accepted.dtype == torch.int32 and emitted.dtype == torch.int32
    assert_chain_structure(out, ids, emitted, vocab)
    out = out.cpu().long()
    for j in range(steps + 1):
        reached = out[:, j] >= 0
        n = int(reached.sum())
        assert n > 1000
        freq = torch.bincount(out[reached, j], minlength=vocab).double() / n
        tv = 0.5 * (freq - target64[j]).abs().sum().item()
        assert tv <= tv_bound(target64[j], n), f"position {j}: TV {tv:.4f} > {tv_bound(target64[j], n):.4f}"
    # Acceptance: each draft token passes with probability sum_t min(draft, target).
    alpha = torch.minimum(draft64, target64[:steps]).sum(dim=1)
    slack = steps * math.sqrt(math.log(2 / FALSE_FAILURE) / (2 * batch))
    assert abs(accepted.double().mean().item() - alpha.sum().item()) <= slack
    expected_emitted = sum(torch.prod(alpha[: j + 1]).item() for j in range(steps))
    assert abs(emitted.double().mean().item() - expected_emitted) <= slack
    assert (accepted >= emitted).all()


@pytest.mark.parametrize("vocab", [7, 32001, 128256])
def test_speculative_exact_cases(vocab):
    batch, steps = 16, 4
    seed = case_seed("spec_exact", vocab)
    draft, ids, _, _, _ = spec_batch(batch, steps, vocab, seed)
    # draft == target: every draft token is accepted, then a bonus token.
    target = torch.cat([draft, draft[:, :1]], dim=1).contiguous()
    out, accepted, emitted = fi_core.chain_speculative_sampling(draft, ids, target, seed=1, offset=0)
    assert (emitted == steps).all() and (accepted == steps).all()
    assert torch.equal(out[:, :steps], ids)
    assert_chain_structure(out, ids, emitted, vocab)
    # The target gives the draft tokens no mass: rejected at once, resampled elsewhere.
    if vocab > 1:
        zeroed = target.clone()
        zeroed.scatter_(2, torch.cat([ids, ids[:, :1]], dim=1).long().unsqueeze(2), 0.0)
        out, accepted, emitted = fi_core.chain_speculative_sampling(draft, ids, zeroed, seed=2, offset=0)
        assert (emitted == 0).all() and (accepted == 0).all()
        assert (out[:, 0] != ids[:, 0]).all() and (out[:, 1:] == -1).all()
    # Counts are added to the arrays given, as in FlashInfer; each independently.
    acc0 = torch.full((batch,), 5, dtype=torch.int32, device="cuda")
    _, acc, emi = fi_core.chain_speculative_sampling(draft, ids, target, acc0, None, seed=1, offset=0)
    assert acc is acc0 and (acc == 5 + steps).all() and (emi == steps).all()
    # A draft token id outside the vocabulary is rejected, never read.
    bad = ids.clone()
    bad[:, 1] = vocab
    bad[::2, 1] = -1
    out, accepted, emitted = fi_core.chain_speculative_sampling(draft, bad, target, seed=3, offset=0)
    assert (emitted == 1).all() and (accepted == steps - 1).all()
    assert_chain_structure(out, bad, emitted, vocab)


def test_speculative_determinism_and_bonus_only():
    draft, ids, target, _, _ = spec_batch(4096, 2, 300, case_seed("spec_det"), 1.0, 1.3)
    a = fi_core.chain_speculative_sampling(draft, ids, target, seed=9, offset=4)
    b = fi_core.chain_speculative_sampling(draft, ids, target, seed=9, offset=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], fi_core.chain_speculative_sampling(draft, ids, target, seed=10, offset=4)[0])
    gen = torch.Generator(device="cuda").manual_seed(5)
    first = fi_core.chain_speculative_sampling(draft, ids, target, generator=gen)[0]
    assert not torch.equal(first, fi_core.chain_speculative_sampling(draft, ids, target, generator=gen)[0])
    # No draft tokens: the bonus token alone, from target[0].
    batch, vocab = 1 << 16, 50
    d0, i0, t0, _, t64 = spec_batch(batch, 0, vocab, case_seed("spec_bonus"))
    out, accepted, emitted = fi_core.chain_speculative_sampling(d0, i0, t0, seed=4, offset=0)
    assert out.shape == (batch, 1) and (accepted == 0).all() and (emitted == 0).all()
    freq = torch.bincount(out[:, 0].long().cpu(), minlength=vocab).double() / batch
    assert 0.5 * (freq - t64[0]).abs().sum().item() <= tv_bound(t64[0], batch)

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
            base = row * keep if top_k_first else row
            # The largest value v with mass(p >= v) >= tp * mass: the first sorted value whose
            # running sum reaches the target (ties end up kept by the >= below).
            values = torch.sort(row, descending=True).values
            first = int(torch.nonzero(torch.cumsum(values, 0) >= tp * base.sum())[0])
            keep &= row >= values[first]
        mp = min_p[r] if isinstance(min_p, list) else min_p
        if mp is not None and mp > 0:
            keep &= row >= min(mp, 1.0) * row.max()
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

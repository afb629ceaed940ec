"""Sampling paths chosen from the first-digit histogram: top-p and min-p histograms keep masses
only and bound the candidate count by mass / (lowest value of the bin), so a tied block just
under the candidate capacity may take the on-chip or the streamed path; both must keep the exact
set. Also rows whose mass sits in one bin, denormal rows (the bound's unit floor), and the
benchmark's workload (softmax of 3 * randn, vocab 128256) against the float64 reference."""

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu
from test_sampling_gpu import assert_matches, draw_many, draws_for, kept_reference

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core

VOCAB = 128256
CANDIDATE_CAPACITY = 16384  # kMaxCandidates in sampling.cuh (less on devices with less smem)


def tied_block_rows(rows, vocab, tied, value, seed):
    """`tied` tokens of `value` at random positions, the rest far smaller and distinct."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    probs = torch.rand((rows, vocab), device="cuda", generator=gen) * (value * 1e-6)
    for r in range(rows):
        where = torch.randperm(vocab, device="cuda", generator=gen)[:tied]
        probs[r, where] = value
    return probs


# value 1.0: the bound is exact; 1.99: the bound overestimates by 6% (the bin's lowest value is
# 1.875), so 15800 tied tokens fit on chip by count but not by the bound (streamed path).
@pytest.mark.parametrize("tied,value", [(15000, 1.0), (15800, 1.99), (40000, 1.99)])
def test_tied_block_near_capacity_keeps_every_tie(tied, value):
    seed = case_seed("tied_block", tied, value)
    probs = tied_block_rows(2, VOCAB, tied, value, seed)
    for name, fn, kwargs in [("top_p", fi_core.top_p_sampling_from_probs, {"top_p": 0.5}),
                             ("min_p", fi_core.min_p_sampling_from_probs, {"min_p": 0.9}),
                             ("top_k_top_p", fi_core.top_k_top_p_sampling_from_probs, {"top_k": tied, "top_p": 0.3})]:
        # Few draws (every one streams a 128256-token row): the support check is the point.
        samples = draw_many(fn, probs, 1 << 14, seed, **kwargs)
        ref = kept_reference(probs, **kwargs)
        assert int((ref[0] > 0).sum()) == tied  # the reference keeps exactly the tied block
        assert_matches(samples, ref, f"{name} tied {tied} x {value}")
    out = fi_core.top_p_renorm_probs(probs, 0.5)
    torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_p=0.5), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("vocab", [1000, 32001])
def test_mass_in_one_bin(vocab):
    """Every value within 0.1% of one another: one first-digit bin holds the whole row, so every
    lane of a warp adds to the same histogram words (and the units word wraps many times)."""
    seed = case_seed("one_bin", vocab)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    probs = 1.5 + torch.rand((2, vocab), device="cuda", generator=gen) * 1e-3
    for top_p in (0.1, 0.6):
        samples = draw_many(fi_core.top_p_sampling_from_probs, probs, draws_for(vocab), seed, top_p=top_p)
        assert_matches(samples, kept_reference(probs, top_p=top_p), f"one bin top_p {top_p}")
        out = fi_core.top_p_renorm_probs(probs, top_p)
        torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_p=top_p), rtol=1e-5, atol=1e-9)


def test_denormal_rows():
    """Values around 1e-39 (float32 denormals): bins whose lowest value is 0 bound counts by one
    unit per token."""
    seed = case_seed("denormal")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    probs = torch.softmax(torch.randn((2, 1000), device="cuda", generator=gen), dim=-1) * 1e-36
    assert bool((probs < 1.17e-38).any())
    for name, fn, kwargs in [("top_p", fi_core.top_p_sampling_from_probs, {"top_p": 0.7}),
                             ("top_k", fi_core.top_k_sampling_from_probs, {"top_k": 50}),
                             ("plain", fi_core.sampling_from_probs, {})]:
        samples = draw_many(fn, probs, 1 << 17, seed, **kwargs)
        assert_matches(samples, kept_reference(probs, **kwargs), f"denormal {name}")


def test_benchmark_workload():
    """The benchmark's rows (bench/gpu_runner.py build_sampling): top-p 0.9, and top-k 50 then
    top-p 0.9, over vocab 128256; repeated calls give the same tokens."""
    seed = case_seed("bench_workload")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    probs = torch.softmax(torch.randn((2, VOCAB), device="cuda", generator=gen) * 3.0, dim=-1)
    samples = draw_many(fi_core.top_p_sampling_from_probs, probs, 1 << 15, seed, top_p=0.9)
    assert_matches(samples, kept_reference(probs, top_p=0.9), "bench top_p")
    samples = draw_many(fi_core.top_k_top_p_sampling_from_probs, probs, 1 << 15, seed, top_k=50, top_p=0.9)
    assert_matches(samples, kept_reference(probs, top_k=50, top_p=0.9), "bench top_k_top_p")
    batch = torch.softmax(torch.randn((128, VOCAB), device="cuda", generator=gen) * 3.0, dim=-1)
    first = fi_core.top_p_sampling_from_probs(batch, 0.9, seed=11, offset=3)
    for _ in range(3):
        assert torch.equal(first, fi_core.top_p_sampling_from_probs(batch, 0.9, seed=11, offset=3))

"""Rows split over a thread-block cluster (sm_90): FI_CORE_SAMPLING_ROW_SPLIT forces 1, 2, 4 or 8
CTAs per row, so every cluster size runs the statistical checks of test_sampling_gpu.py
(frequencies against the exact filtered distribution, renormalization and masking against
float64 / exact references, determinism, odd rows). On devices without clusters the launcher
falls back to one CTA per row and these tests check that path again. Vocabularies like 7 and
32001 give uneven and empty slices."""

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu
from test_sampling_gpu import (assert_matches, draw_many, draws_for, kept_reference, mask_reference,
                               near_uniform_probs, random_logits, random_probs, softmax64)

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core

SPLITS = [1, 2, 4, 8]
ROW_SPLIT_ENV = "FI_CORE_SAMPLING_ROW_SPLIT"


@pytest.fixture
def row_split(request, monkeypatch):
    """Forces the CTAs per row for the test (read by the host code on every call)."""
    monkeypatch.setenv(ROW_SPLIT_ENV, str(request.param))
    return request.param


def split_params():
    return pytest.mark.parametrize("row_split", SPLITS, indirect=True, ids=[f"split{s}" for s in SPLITS])


CASES = [
    ("plain", lambda: fi_core.sampling_from_probs, {}, {}),
    ("top_p", lambda: fi_core.top_p_sampling_from_probs, {"top_p": 0.9}, {"top_p": 0.9}),
    ("top_k", lambda: fi_core.top_k_sampling_from_probs, {"top_k": 20}, {"top_k": 20}),
    ("min_p", lambda: fi_core.min_p_sampling_from_probs, {"min_p": 0.05}, {"min_p": 0.05}),
    ("top_k_top_p", lambda: fi_core.top_k_top_p_sampling_from_probs, {"top_k": 50, "top_p": 0.9},
     {"top_k": 50, "top_p": 0.9}),
    ("top_k_top_p_joint", lambda: fi_core.top_k_top_p_sampling_from_probs,
     {"top_k": 30, "top_p": 0.7, "filter_apply_order": "joint"}, {"top_k": 30, "top_p": 0.7, "top_k_first": False}),
]


@split_params()
@pytest.mark.parametrize("vocab", [1000, 32001, 128256])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_split_frequencies_match_filtered_distribution(case, vocab, row_split):
    name, fn, kwargs, ref_kwargs = case
    seed = case_seed("split_freq", name, vocab, row_split)
    probs = random_probs(2, vocab, seed)
    samples = draw_many(fn(), probs, draws_for(vocab), seed, **kwargs)
    assert_matches(samples, kept_reference(probs, **ref_kwargs), f"{name} vocab {vocab} split {row_split}")


@split_params()
@pytest.mark.parametrize("case", CASES[1:], ids=[c[0] for c in CASES[1:]])
def test_split_streamed_sets(case, row_split):
    """Near-uniform rows: kept sets too large for the candidates, thresholds from streamed passes."""
    name, fn, kwargs, ref_kwargs = case
    kwargs = dict(kwargs)
    ref_kwargs = dict(ref_kwargs)
    if "top_k" in kwargs:
        kwargs["top_k"] = ref_kwargs["top_k"] = 40000
    if "min_p" in kwargs:
        kwargs["min_p"] = ref_kwargs["min_p"] = 0.8
    seed = case_seed("split_streamed", name, row_split)
    probs = near_uniform_probs(2, 128256, seed)
    samples = draw_many(fn(), probs, 1 << 16, seed, **kwargs)
    assert_matches(samples, kept_reference(probs, **ref_kwargs), f"streamed {name} split {row_split}")


@split_params()
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_split_small_batches_by_repeated_calls(batch, row_split):
    """The shape the split is for: a few rows per call. `batch` copies of one row, drawn over many
    offsets, against the exact top-p and top-k + top-p distributions."""
    vocab = 128256
    seed = case_seed("split_small_batch", batch, row_split)
    row = torch.softmax(torch.randn((1, vocab), device="cuda",
                                    generator=torch.Generator(device="cuda").manual_seed(seed)) * 3.0, dim=-1)
    probs = row.expand(batch, vocab).contiguous()
    calls = max(1, (1 << 14) // batch)
    for name, fn, kwargs in [("top_p", fi_core.top_p_sampling_from_probs, {"top_p": 0.9}),
                             ("top_k_top_p", fi_core.top_k_top_p_sampling_from_probs, {"top_k": 50, "top_p": 0.9})]:
        out = torch.cat([fn(probs, seed=seed, offset=4 * i, **kwargs) for i in range(calls)])
        samples = out.long().cpu().view(1, -1)
        assert_matches(samples, kept_reference(row, **kwargs), f"{name} batch {batch} split {row_split}")


@split_params()
def test_split_agrees_with_one_cta_per_row(row_split, monkeypatch):
    """Both paths draw u from the same Philox word and invert the same kept distribution; only the
    rounding of the kept mass differs, so tokens differ only where u * mass lands within rounding
    of a cumulative boundary: practically never."""
    seed = case_seed("split_agrees", row_split)
    probs = random_probs(16, 128256, seed, temperature=0.5)
    calls = []
    for split in (1, row_split):
        monkeypatch.setenv(ROW_SPLIT_ENV, str(split))
        calls.append(torch.cat([
            fi_core.top_p_sampling_from_probs(probs, 0.9, seed=seed, offset=i) for i in range(64)] + [
            fi_core.top_k_top_p_sampling_from_probs(probs, 50, 0.9, seed=seed, offset=i) for i in range(64)] + [
            fi_core.sampling_from_probs(probs, seed=seed, offset=i) for i in range(64)]))
    agree = (calls[0] == calls[1]).double().mean().item()
    assert agree >= 0.999, f"split {row_split}: only {agree:.4f} of the tokens agree"


@split_params()
@pytest.mark.parametrize("batch", [1, 5, 16])
@pytest.mark.parametrize("vocab", [7, 1000, 32001, 128256])
def test_split_renorm_matches_reference(vocab, batch, row_split):
    seed = case_seed("split_renorm", vocab, batch, row_split)
    for probs in (random_probs(batch, vocab, seed, temperature=1.0), near_uniform_probs(batch, vocab, seed)):
        out = torch.full_like(probs, float("nan"))
        for top_p in (0.3, 0.9, 1.0):
            fi_core.top_p_renorm_probs(probs, top_p, out=out)
            torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_p=top_p), rtol=1e-5, atol=1e-9)
        for top_k in sorted({1, 5, 100, vocab // 2 + 1, vocab}):
            out.fill_(float("nan"))
            fi_core.top_k_renorm_probs(probs, top_k, out=out)
            torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_k=top_k), rtol=1e-5, atol=1e-9)


@split_params()
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("vocab", [7, 32001, 128256])
def test_split_top_k_mask_logits(vocab, dtype, row_split):
    logits = random_logits(3, vocab, case_seed("split_mask", vocab, dtype, row_split), dtype)
    for k in sorted({1, 5, 100, max(vocab - 1, 1), vocab}):
        out = torch.full_like(logits, float("nan"))
        fi_core.top_k_mask_logits(logits, k, out=out)
        assert torch.equal(out.cpu(), mask_reference(logits, [k] * 3)), f"k={k} split {row_split}"


@split_params()
@pytest.mark.parametrize("vocab", [1000, 128256])
def test_split_sampling_from_logits(vocab, row_split):
    """The row's maximum logit is agreed over the cluster before any weight is computed."""
    seed = case_seed("split_logits", vocab, row_split)
    logits = random_logits(2, vocab, seed, "float16")
    samples = draw_many(fi_core.sampling_from_logits, logits, draws_for(vocab), seed)
    assert_matches(samples, softmax64(logits), f"sampling_from_logits split {row_split}")
    a = fi_core.top_k_top_p_sampling_from_logits(logits, 40, 0.8, seed=3, offset=1)
    assert torch.equal(a, fi_core.top_k_top_p_sampling_from_logits(logits, 40, 0.8, seed=3, offset=1))


@split_params()
@pytest.mark.parametrize("batch", [1, 2, 16])
def test_split_determinism(batch, row_split):
    probs = random_probs(batch, 128256, case_seed("split_det", batch, row_split), temperature=4.0)
    for fn, args in [(fi_core.top_p_sampling_from_probs, (0.9,)), (fi_core.top_k_top_p_sampling_from_probs, (50, 0.9)),
                     (fi_core.min_p_sampling_from_probs, (0.1,)), (fi_core.sampling_from_probs, ())]:
        first = fn(probs, *args, seed=21, offset=6)
        for _ in range(3):
            assert torch.equal(first, fn(probs, *args, seed=21, offset=6)), fn.__name__
        assert int(first.min()) >= 0 and int(first.max()) < 128256


@split_params()
@pytest.mark.parametrize("vocab", [1, 7, 1000, 32001])
def test_split_odd_rows(vocab, row_split):
    """Zeros, NaN, a single non-zero (in the last slice, and in the first), top_k = 1 and a tiny
    top_p (the argmax), on slices that are uneven or empty."""
    last = vocab - 1
    rows = torch.zeros((6, vocab), device="cuda")
    rows[0, last] = 0.3                      # single non-zero, last slice
    rows[1] = float("nan")                   # nothing to sample -> 0
    # row 2: all zeros -> 0
    rows[3, 0] = 1e-30                       # single non-zero, first slice
    rows[4] = float("nan")
    rows[4, last // 2] = 2.0                 # a middle slice
    rows[5] = torch.rand(vocab, device="cuda")
    expected = {0: last, 1: 0, 2: 0, 3: 0, 4: last // 2}
    for fn, kw in [(fi_core.sampling_from_probs, {}), (fi_core.top_p_sampling_from_probs, {"top_p": 0.5}),
                   (fi_core.top_k_sampling_from_probs, {"top_k": 3}),
                   (fi_core.min_p_sampling_from_probs, {"min_p": 0.1}),
                   (fi_core.top_k_top_p_sampling_from_probs, {"top_k": 3, "top_p": 0.5})]:
        for seed in range(3):
            out = fn(rows, seed=seed, **kw).cpu()
            assert int(out.min()) >= 0 and int(out.max()) < vocab, fn.__name__
            for r, want in expected.items():
                assert int(out[r]) == want, f"{fn.__name__} row {r} split {row_split}: {int(out[r])} != {want}"
    argmax = rows[5].argmax().item()
    for seed in range(4):
        assert int(fi_core.top_k_sampling_from_probs(rows[5:], 1, seed=seed)[0]) == argmax
        assert int(fi_core.top_p_sampling_from_probs(rows[5:], 1e-7, seed=seed)[0]) == argmax
    renorm = fi_core.top_p_renorm_probs(rows, 0.9).cpu()
    assert torch.equal(renorm[1:3], torch.zeros((2, vocab)))
    indices = torch.tensor([5, -1, 99], dtype=torch.int32, device="cuda")
    assert fi_core.sampling_from_probs(rows, indices=indices, seed=0).cpu()[1:].tolist() == [0, 0]


@split_params()
def test_split_strided_rows(row_split):
    """Row stride 32002 floats: odd rows start off 16-byte alignment, and so do their slices."""
    base = random_probs(3, 32002, case_seed("split_strided", row_split))
    view = base[:, :32001]
    samples = draw_many(fi_core.top_p_sampling_from_probs, view, 1 << 15, 5, top_p=0.8)
    assert_matches(samples, kept_reference(view, top_p=0.8), f"strided top_p split {row_split}")


@pytest.mark.parametrize("batch", [1, 2, 4, 8, 16, 32, 64, 128])
def test_automatic_split_is_deterministic_and_in_range(batch, monkeypatch):
    """Without the variable the launcher picks the CTAs per row from the batch and the device."""
    monkeypatch.delenv(ROW_SPLIT_ENV, raising=False)
    probs = random_probs(batch, 128256, case_seed("auto_split", batch), temperature=2.0)
    a = fi_core.top_p_sampling_from_probs(probs, 0.9, seed=2, offset=0)
    assert torch.equal(a, fi_core.top_p_sampling_from_probs(probs, 0.9, seed=2, offset=0))
    assert int(a.min()) >= 0 and int(a.max()) < 128256
    kept = kept_reference(probs, top_p=0.9)
    assert bool((kept[torch.arange(batch), a.long().cpu()] > 0).all())

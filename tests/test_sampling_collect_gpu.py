"""The first pass collects the candidates while it builds the histogram (CollectWhileCounting in
sampling.cuh): its floor rises as the candidate buffer fills, and the collecting pass is skipped
when the floor ends at or below the lowest bin that holds a threshold; otherwise the collecting
pass runs as before. Rows here make the floor rise at every chunk (ascending values: each chunk
beats the last) or once (descending), put the kept tokens in the first or the last chunk, and
place candidate counts around a buffer block (kChunk = 8192) and around capacity - kChunk (where
the first pass gives up), with 1, 2 and 8 CTAs per row and uneven slices (vocab 32001). Every case
against the float64 reference; renormalization and masking exactly; determinism."""

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu
from test_sampling_gpu import assert_matches, draw_many, kept_reference, mask_reference, safe_top_p, softmax64

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core

SPLITS = [1, 2, 8]
ROW_SPLIT_ENV = "FI_CORE_SAMPLING_ROW_SPLIT"
CHUNK = 8192  # kChunk in sampling.cuh


@pytest.fixture
def row_split(request, monkeypatch):
    monkeypatch.setenv(ROW_SPLIT_ENV, str(request.param))
    return request.param


def split_params():
    return pytest.mark.parametrize("row_split", SPLITS, indirect=True, ids=[f"split{s}" for s in SPLITS])


def ordered_logits(rows, vocab, seed, descending):
    """3 * randn sorted along the row (the benchmark's distribution, in index order)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.randn((rows, vocab), device="cuda", generator=gen) * 3.0
    return logits.sort(dim=-1, descending=descending).values


FILTERS = [
    ("top_p", lambda: fi_core.top_p_sampling_from_probs, {"top_p": 0.9}),
    ("top_k_top_p", lambda: fi_core.top_k_top_p_sampling_from_probs, {"top_k": 50, "top_p": 0.9}),
    ("min_p", lambda: fi_core.min_p_sampling_from_probs, {"min_p": 0.05}),
    ("top_k", lambda: fi_core.top_k_sampling_from_probs, {"top_k": 1000}),
    ("top_k_large", lambda: fi_core.top_k_sampling_from_probs, {"top_k": 12000}),
]


@split_params()
@pytest.mark.parametrize("vocab", [32001, 128256])
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_ordered_rows_match_reference(descending, vocab, row_split):
    """Kept tokens all in the last chunk (ascending: the floor rises at almost every chunk and the
    buffer is replaced again and again) or all in the first (descending)."""
    seed = case_seed("collect_ordered", descending, vocab, row_split)
    probs = torch.softmax(ordered_logits(2, vocab, seed, descending), dim=-1)
    for name, fn, kwargs in FILTERS:
        samples = draw_many(fn(), probs, 1 << 15, seed, **kwargs)
        assert_matches(samples, kept_reference(probs, **kwargs), f"{name} descending={descending} split {row_split}")
    out = torch.full_like(probs, float("nan"))
    for top_p in (0.5, 0.9, 0.99):
        fi_core.top_p_renorm_probs(probs, top_p, out=out)
        torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_p=top_p), rtol=1e-5, atol=1e-9)
    for top_k in (1, 50, 8192, 12000):
        out.fill_(float("nan"))
        fi_core.top_k_renorm_probs(probs, top_k, out=out)
        torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_k=top_k), rtol=1e-5, atol=1e-9)


@split_params()
@pytest.mark.parametrize("vocab", [32001, 128256])
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_ordered_logits_mask_and_sample(descending, vocab, row_split):
    """The same orders for top_k_mask_logits (keys of the logits themselves, whose empty key is
    -inf) and sampling from logits."""
    logits = ordered_logits(3, vocab, case_seed("collect_mask", descending, vocab, row_split), descending)
    for k in (1, 100, CHUNK, 12000):
        out = torch.full_like(logits, float("nan"))
        fi_core.top_k_mask_logits(logits, k, out=out)
        assert torch.equal(out.cpu(), mask_reference(logits, [k] * 3)), f"k={k} split {row_split}"
    probs = softmax64(logits)
    seed = case_seed("collect_logits", descending, vocab, row_split)
    top_p = torch.tensor(safe_top_p(probs, 0.9, top_k=40), dtype=torch.float32, device="cuda")
    samples = draw_many(fi_core.top_k_top_p_sampling_from_logits, logits, 1 << 15, seed, top_k=40, top_p=top_p)
    ref = kept_reference(probs, top_k=40, top_p=[float(v) for v in top_p.cpu()])
    assert_matches(samples, ref, f"logits descending={descending} split {row_split}")


def tied_block_rows(vocab, tied, at_end, seed):
    """`tied` tokens of 1.0 in one run at the start or the end of the row, the rest below 1e-6."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    probs = torch.rand((2, vocab), device="cuda", generator=gen) * 1e-6
    if at_end:
        probs[:, vocab - tied:] = 1.0
    else:
        probs[:, :tied] = 1.0
    return probs


# 8191-8193: one buffer block of candidates, and the most the first pass may keep (capacity -
# kChunk on devices with the full buffer); 12000 and 16384: the first pass gives up and the
# collecting pass runs; 16385: more than the buffer holds (streamed thresholds).
@split_params()
@pytest.mark.parametrize("tied", [CHUNK - 1, CHUNK, CHUNK + 1, 12000, 2 * CHUNK, 2 * CHUNK + 1])
@pytest.mark.parametrize("at_end", [False, True], ids=["at_start", "at_end"])
def test_tied_block_around_buffer_sizes(at_end, tied, row_split):
    vocab = 128256
    seed = case_seed("collect_tied", at_end, tied, row_split)
    probs = tied_block_rows(vocab, tied, at_end, seed)
    for name, fn, kwargs in [("top_p", fi_core.top_p_sampling_from_probs, {"top_p": 0.5}),
                             ("top_k", fi_core.top_k_sampling_from_probs, {"top_k": tied}),
                             ("min_p", fi_core.min_p_sampling_from_probs, {"min_p": 0.9})]:
        samples = draw_many(fn, probs, 1 << 14, seed, **kwargs)
        ref = kept_reference(probs, **kwargs)
        assert int((ref[0] > 0).sum()) == tied  # the reference keeps exactly the tied block
        assert_matches(samples, ref, f"{name} tied {tied} at_end={at_end} split {row_split}")
    out = torch.full_like(probs, float("nan"))
    fi_core.top_p_renorm_probs(probs, 0.5, out=out)
    torch.testing.assert_close(out.double().cpu(), kept_reference(probs, top_p=0.5), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("batch", [1, 16, 128])
def test_ordered_rows_are_deterministic(batch, monkeypatch):
    """Automatic split; the buffer's contents depend on when the floor rose, the draw must not."""
    monkeypatch.delenv(ROW_SPLIT_ENV, raising=False)
    seed = case_seed("collect_det", batch)
    probs = torch.softmax(ordered_logits(batch, 128256, seed, descending=False), dim=-1)
    for fn, args in [(fi_core.top_p_sampling_from_probs, (0.9,)), (fi_core.top_k_top_p_sampling_from_probs, (50, 0.9)),
                     (fi_core.min_p_sampling_from_probs, (0.05,))]:
        first = fn(probs, *args, seed=seed, offset=1)
        for _ in range(3):
            assert torch.equal(first, fn(probs, *args, seed=seed, offset=1)), fn.__name__
        assert int(first.min()) >= 128256 - 20000, fn.__name__  # the kept tokens are at the end

"""Cost model of the sampling row kernel (include/flashinfer/sampling.cuh): which passes over a
row's probabilities in global memory it makes, replayed in numpy on the sampling suite's rows.

No GPU needed:  python -m bench.sampling_passes [--batch 128] [--vocab 128256] [--torch]

Rows are those of bench/gpu_runner.py: softmax(3 * standard normal logits) in float32. The bench
draws them with torch's CUDA generator, whose stream depends on the launch configuration and on
what the run drew before, so numpy draws rows of the same distribution here (seed 0); pass counts
depend on the distribution, not on the draw. --torch takes the rows from the bench's own builder
(needs torch with a GPU).

The kernel's decisions, per row (one CTA; a split row makes the same decisions on cluster sums):
  1. histogram: stream the row, 2048 bins of the first key digit (8 exponent + 3 mantissa bits)
  2. descend the bins to the first-digit bin of each threshold (top-k by count, top-p by mass)
  3. tokens at or above the lowest such bin fit in the candidate buffer (kMaxCandidates; top-p
     judges by a count bound = bin mass / bin's lowest value)?  yes: everything else on chip,
     after a collecting pass (before: 2 passes in all), or with the candidates the histogram
     pass collected when they fit with a chunk to spare (after: 1 pass; collect_while_counting)
  4. else per threshold: its bin fits -> collect the bin (1 pass), else 2 finer-digit passes
  5. draw (not on chip): stream the row up to the chunk holding u * kept mass
  - renorm writes the row once more (not counted: reads only).
Every pass costs about the same (bound by one SM's loads in flight, or by DRAM at B >= #SMs), so
the predicted time is (passes + draw fraction) * time of one pass.
"""

import argparse

import numpy as np

CHUNK = 1024 * 8            # kSamplingThreads * kElemsPerThread
MAX_CANDIDATES = 2 * CHUNK  # kMaxCandidates
FIRST_SHIFT = 21            # bits of the key below the first digit


def first_digit_bins(row):
    return ((row.view(np.uint32).astype(np.uint64) << 1) & 0xFFFFFFFF) >> FIRST_SHIFT


def count_bound(mass):
    """The kernel's count bound of each bin (top-p, min-p): its mass / its lowest value, i.e.
    units / the lowest key's mantissa, an integer division (normal values)."""
    b = np.arange(2048, dtype=np.float64)
    lowest_value = (2.0 ** (np.floor(b / 8) - 127)) * (1 + (b % 8) / 8)
    return np.floor(mass / lowest_value).astype(np.int64)


def first_digit_histogram(row):
    """Per bin: exact mass (float64), count (top-k histograms) and count bound (top-p)."""
    bins = first_digit_bins(row).astype(np.int64)
    mass = np.bincount(bins, weights=row.astype(np.float64), minlength=2048)
    count = np.bincount(bins, minlength=2048)
    return mass, count, count_bound(mass)


def collect_while_counting(row, top_k):
    """The first pass's collecting (after): tokens with key >= floor go to the buffer as they
    stream by; when the next chunk might not fit, the floor rises to the lowest bin whose count
    (top-k) or count bound (top-p) over the chunks seen so far is at most capacity - CHUNK.
    Returns the final floor bin (the buffer holds every token of the row at or above it) and the
    number of raises (each an on-chip scan of the bins and of the buffer)."""
    floor, fill, raises = 1, 0, 0  # bin 0 holds the zeros, which the kernel counts only at the end
    seen_mass, seen_count = np.zeros(2048), np.zeros(2048, dtype=np.int64)
    bins = first_digit_bins(row)
    for start in range(0, len(row), CHUNK):
        mass, count, _ = first_digit_histogram(row[start:start + CHUNK])
        seen_mass += mass
        seen_count += count
        seen = seen_count if top_k else count_bound(seen_mass)
        chunk_bins = bins[start:start + CHUNK]
        if fill + np.count_nonzero(chunk_bins >= floor) > MAX_CANDIDATES:
            above = np.cumsum(seen[::-1])[::-1]  # above[b] = sum over bins >= b
            floor = max(floor, int(np.argmax(above <= MAX_CANDIDATES - CHUNK)))
            raises += 1
            fill = np.count_nonzero(bins[:start] >= floor)
        fill += np.count_nonzero(chunk_bins >= floor)
    return floor, raises


def bin_from_top(values, goal):
    """First bin from the top whose running sum reaches goal (descend())."""
    running = np.cumsum(values[::-1])
    hit = np.nonzero(running >= goal)[0]
    return 2047 - (hit[0] if len(hit) else 2047)


def row_passes(row, top_p, top_k=None, fused=False):
    """Full passes over the row and the chunks the draw streams, for one row (top-k first);
    fused: the first pass collects the candidates as well (collect_while_counting)."""
    mass, count, bound = first_digit_histogram(row)
    passes, draw_chunks = 1, 0
    count_used = count if top_k else bound
    if top_k:
        k_bin = bin_from_top(count, top_k)
        kept_by_k = mass[k_bin:].sum()  # top-p is taken over the top-k set (at least its bins)
        p_bin = max(k_bin, bin_from_top(mass, top_p * kept_by_k) if top_p < 1 else k_bin)
        floor_bin = k_bin
        thresholds = [k_bin] if p_bin == k_bin else [k_bin, p_bin]
    else:
        p_bin = bin_from_top(mass, top_p * mass.sum())
        floor_bin = p_bin
        thresholds = [p_bin]
    candidates = count_used[floor_bin:].sum()
    early_floor, raises = collect_while_counting(row, top_k) if fused else (2048, 0)
    collected = early_floor <= floor_bin
    on_chip = collected or candidates <= MAX_CANDIDATES
    if on_chip:
        passes += 0 if collected else 1  # the collecting pass
    else:
        for b in thresholds:
            passes += 1 if count_used[b] <= MAX_CANDIDATES else 2
        # the draw streams chunks in index order until the running kept mass reaches u * kept:
        # on average up to the chunk where the kept mass's quantile u lies (u uniform).
        kept = np.where(row >= threshold_value(row, p_bin), row, 0)
        per_chunk = np.add.reduceat(kept.astype(np.float64), np.arange(0, len(row), CHUNK))
        cdf = np.cumsum(per_chunk) / per_chunk.sum()
        draw_chunks = float(np.mean(np.searchsorted(cdf, (np.arange(64) + 0.5) / 64) + 1))
    return dict(passes=passes, draw_chunks=draw_chunks, on_chip=on_chip, raises=raises,
                candidates=int(candidates), chunks=-(-len(row) // CHUNK))


def threshold_value(row, bin_):
    """Lowest value of a first-digit bin (the model keeps the whole bin; close enough for cost)."""
    return np.float32((2.0 ** (bin_ // 8 - 127)) * (1 + (bin_ % 8) / 8))


def rows(batch, vocab, use_torch):
    if use_torch:
        import torch
        from bench.gpu_runner import build_sampling
        torch.manual_seed(0)
        return build_sampling(dict(batch=batch, vocab=vocab, logit_scale=3.0)).probs.cpu().numpy()
    logits = np.random.default_rng(0).standard_normal((batch, vocab), dtype=np.float32) * np.float32(3.0)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True, dtype=np.float32)).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--torch", action="store_true", help="rows from bench.gpu_runner (GPU)")
    args = ap.parse_args(argv)
    probs = rows(args.batch, args.vocab, args.torch)
    for name, top_p, top_k in [("top_p 0.9", 0.9, None), ("top_k 50 + top_p 0.9", 0.9, 50),
                               ("top_p 0.99", 0.99, None), ("top_p 0.999", 0.999, None)]:
        for fused in (False, True):
            r = [row_passes(row, top_p, top_k, fused) for row in probs]
            passes = np.mean([x["passes"] + x["draw_chunks"] / x["chunks"] for x in r])
            print(f"{name:22s} {'after ' if fused else 'before'} on chip {np.mean([x['on_chip'] for x in r]):4.0%}  "
                  f"candidates (median) {int(np.median([x['candidates'] for x in r])):6d}  "
                  f"passes/row {passes:.2f}  bytes/row {passes * args.vocab * 4 / 1e3:.0f} KB  "
                  f"floor raises {np.mean([x['raises'] for x in r]):.1f}")


if __name__ == "__main__":
    main()

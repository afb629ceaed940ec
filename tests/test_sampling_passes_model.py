"""bench/sampling_passes.py, the pass-count model of the sampling kernel (CPU, numpy): the
benchmark's rows take two passes before the first pass collected candidates and one after; rows
whose candidates fill more than capacity - one chunk still take the collecting pass."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import sampling_passes as model  # noqa: E402


def test_benchmark_rows_take_one_pass_after_two_before():
    probs = model.rows(2, 128256, use_torch=False)
    for top_p, top_k in [(0.9, None), (0.9, 50)]:
        for row in probs:
            before = model.row_passes(row, top_p, top_k, fused=False)
            after = model.row_passes(row, top_p, top_k, fused=True)
            assert before["on_chip"] and after["on_chip"]
            assert (before["passes"], after["passes"]) == (2, 1)
            assert before["draw_chunks"] == after["draw_chunks"] == 0


def test_candidates_past_the_spare_room_take_the_collecting_pass():
    row = np.random.default_rng(1).random(128256, dtype=np.float32) * np.float32(1e-6)
    row[:12000] = 1.0  # 12000 tied candidates: fit the buffer, not capacity - one chunk
    assert model.row_passes(row, 0.5, fused=True)["passes"] == 2
    row[:12000] = 1e-7
    row[:8000] = 1.0
    assert model.row_passes(row, 0.5, fused=True)["passes"] == 1


def test_rows_too_flat_for_the_buffer_stream_the_draw():
    probs = model.rows(1, 32000, use_torch=False)
    r = model.row_passes(probs[0], 0.999, fused=True)
    assert not r["on_chip"] and r["passes"] == 2 and 0 < r["draw_chunks"] <= r["chunks"]

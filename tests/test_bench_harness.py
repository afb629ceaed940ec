"""CPU tests of the benchmark harness (bench/): counting, tables, missing peers, file names, grids.

Expected numbers are worked out by hand in the comments, not computed by the harness's own code.
Needs only the standard library and pytest (no torch, no GPU).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from bench import peers, report, settle, workloads  # noqa: E402
from bench import __main__ as cli  # noqa: E402


# ---------------------------------------------------------------------------------------------
# FLOP and byte counting
# ---------------------------------------------------------------------------------------------

def test_attention_flops_non_causal_and_causal():
    # 4 * 16384 * 16384 * 32 * 128 = 4 * 268435456 * 4096 = 4398046511104
    assert workloads.attention_flops(16384, 16384, 32, 128, causal=False) == 4398046511104
    assert workloads.attention_flops(16384, 16384, 32, 128, causal=True) == 2199023255552


def test_single_prefill_workload_counts():
    w = workloads.single_prefill(4096, 32, 128, causal=False)
    # 4 * 4096^2 * 32 * 128 = 4 * 16777216 * 4096 = 274877906944
    assert w.flops == 274877906944
    # q, k, v read + out written: 4 tensors of 4096 * 32 * 128 bf16 = 4 * 33554432 bytes
    assert w.bytes == 134217728
    assert w.bound == workloads.COMPUTE_BOUND


def test_single_decode_bytes_bf16_and_fp8():
    w = workloads.single_decode(32768, 32, 8, 128, "bf16")
    # K + V: 2 * 32768 * 8 * 128 * 2 B = 134217728; q + out: 2 * 32 * 128 * 2 B = 16384
    assert w.bytes == 134234112
    # flops: 4 * 1 * 32768 * 32 * 128 = 536870912
    assert w.flops == 536870912
    fp8 = workloads.single_decode(32768, 32, 8, 128, "fp8_e4m3")
    # K + V at 1 byte: 67108864; q and out stay bf16: 16384
    assert fp8.bytes == 67125248
    assert w.bound == workloads.MEMORY_BOUND


def test_batch_decode_bytes_do_not_depend_on_page_size():
    paged16 = workloads.batch_decode(128, 4096, 32, 8, 128, 16, "bf16")
    paged1 = workloads.batch_decode(128, 4096, 32, 8, 128, 1, "bf16")
    # K + V: 2 * 128 * 4096 * 8 * 128 * 2 = 2147483648; q + out: 2 * 128 * 32 * 128 * 2 = 2097152
    assert paged16.bytes == 2149580800
    assert paged1.bytes == 2149580800


def test_batch_prefill_counts_sum_over_requests():
    w = workloads.batch_prefill("custom", [100, 200], 32, 8, 64, 16, causal=True)
    # (4*100^2*32*64 + 4*200^2*32*64) / 2 = 8192 * 50000 / 2 = 204800000
    assert w.flops == 204800000
    # 300 tokens * 64 dims * 2 B * (2*32 q/out heads + 2*8 k/v heads) = 300 * 128 * 80
    assert w.bytes == 3072000


@pytest.mark.parametrize("make, expected_bytes", [
    # x read + out written: 2 * 8192 * 8192 * 2 B, weight 8192 * 2 B
    (lambda: workloads.rmsnorm(8192, 8192), 268451840),
    # x and residual read and written: 4 * 8192 * 8192 * 2 B, weight 8192 * 2 B
    (lambda: workloads.fused_add_rmsnorm(8192, 8192), 536887296),
    # input 8192 x 28672 read, output 8192 x 14336 written: 3 * 8192 * 14336 * 2 B
    (lambda: workloads.silu_and_mul(8192, 14336), 704643072),
    # q (32 heads) and k (8 heads) read and written: 2 * 16384 * 40 * 128 * 2 B, positions 16384 * 4 B
    (lambda: workloads.apply_rope_pos_ids(16384, 32, 8, 128), 335609856),
    # The gemma norm and GELU siblings move the same bytes.
    (lambda: workloads.rmsnorm(8192, 8192, op="gemma_rmsnorm"), 268451840),
    (lambda: workloads.silu_and_mul(8192, 14336, op="gelu_tanh_and_mul"), 704643072),
    # The cos/sin-cache RoPE also reads int64 positions (4 B more a token) and a float32 row of
    # 128 cos/sin values a token: 335609856 + 16384 * 4 + 16384 * 512
    (lambda: workloads.apply_rope_pos_ids(16384, 32, 8, 128, op="apply_rope_with_cos_sin_cache"), 344064000),
    # fp32 probs 128 * 128256 * 4 B read, 128 int32 samples written
    (lambda: workloads.sampling("top_p_sampling_from_probs", 128, 128256), 65667584),
])
def test_operator_bytes(make, expected_bytes):
    assert make().bytes == expected_bytes


def test_zipf_and_uniform_lengths():
    assert sorted(workloads.zipf_lengths(4, 1000, exponent=1.0, shortest=64), reverse=True) == [1000, 500, 333, 250]
    assert sorted(workloads.zipf_lengths(20, 1000, shortest=64))[0] == 64
    lengths = workloads.uniform_lengths(16, 512, 2048, seed=0)
    assert len(lengths) == 16 and all(512 <= n <= 2048 for n in lengths)
    assert lengths == workloads.uniform_lengths(16, 512, 2048, seed=0)  # deterministic


# ---------------------------------------------------------------------------------------------
# Derived figures and table formatting
# ---------------------------------------------------------------------------------------------

CEILINGS = {"copy_tbps": 3.0, "gemm_tflops": 800.0}


def memory_row(results):
    return {"op": "batch_decode", "label": "B=128 kv=4096", "params": {}, "bound": workloads.MEMORY_BOUND,
            "flops": 0.0, "bytes": 3e9, "results": results, "check": {}}


def test_derived_figures_memory_and_compute():
    row = report.add_derived_figures(memory_row({"fi_core": report.ok(1000.0),
                                                 "flashinfer": report.ok(1100.0)}), CEILINGS)
    # 3e9 bytes in 1 ms = 3.0 TB/s = 1.00 of a 3.0 TB/s copy
    assert row["results"]["fi_core"]["tbps"] == pytest.approx(3.0)
    assert row["results"]["fi_core"]["fraction_of_ceiling"] == pytest.approx(1.0)
    # peer takes 1.1 ms: fi_core is 1.1x as fast
    assert row["speed_vs_peer"]["flashinfer"] == pytest.approx(1.1)
    compute = {"op": "single_prefill", "label": "S", "params": {}, "bound": workloads.COMPUTE_BOUND,
               "flops": 1e12, "bytes": 0.0, "results": {"fi_core": report.ok(2000.0)}, "check": {}}
    report.add_derived_figures(compute, CEILINGS)
    # 1e12 FLOP in 2 ms = 500 TFLOP/s = 0.625 of 800
    assert compute["results"]["fi_core"]["tflops"] == pytest.approx(500.0)
    assert compute["results"]["fi_core"]["fraction_of_ceiling"] == pytest.approx(0.625)


def test_latency_rows_have_no_ceiling_ratio():
    row = {"op": "top_p_sampling_from_probs", "label": "B=1", "params": {}, "bound": workloads.LATENCY,
           "flops": 0.0, "bytes": 1e6, "results": {"fi_core": report.ok(50.0)}, "check": {}}
    report.add_derived_figures(row, CEILINGS)
    assert row["results"]["fi_core"]["fraction_of_ceiling"] is None
    table = report.render_op_table([row])
    assert table.splitlines()[0] == "| workload | fi_core |"
    assert "| B=1 | 50.0 us |" in table


def test_time_formatting():
    assert report.format_time_us(5.0) == "5.00 us"
    assert report.format_time_us(95.04) == "95.0 us"
    assert report.format_time_us(2476.0) == "2.48 ms"


def test_table_shows_ratios_missing_and_errors():
    missing_peer = peers.import_library("fi_core_bench_test_no_such_module")
    row = memory_row({
        "fi_core": report.ok(1000.0),
        "fi_core-cc": report.ok(2000.0),
        "flashinfer": report.missing(missing_peer.missing_reason),
        "flashinfer-tc": report.failed("RuntimeError: boom"),
    })
    report.add_derived_figures(row, CEILINGS)
    lines = report.render_op_table([row]).splitlines()
    assert lines[0] == "| workload | fi_core | TB/s | of copy | fi_core-cc | flashinfer | flashinfer-tc |"
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    # fi_core-cc: 2 ms -> fi_core is 2x as fast; 3e9 B / 2 ms = 1.5 TB/s = 0.50 of copy
    assert cells[:5] == ["B=128 kv=4096", "1.00 ms", "3.00", "1.00", "2.00x (2.00 ms; 0.50 of copy)"]
    assert cells[5].startswith("missing: import fi_core_bench_test_no_such_module failed")
    assert cells[6] == "error: RuntimeError: boom"
    notes = "\n".join(lines[3:])
    # The full reason appears once below the table.
    assert "No module named 'fi_core_bench_test_no_such_module'" in notes


def test_missing_subject_still_shows_peer_times():
    row = memory_row({"fi_core": report.missing("fi_core 0.1.0 has no BatchDecodeWithPagedKVCacheWrapper"),
                      "flashinfer": report.ok(1500.0)})
    report.add_derived_figures(row, CEILINGS)
    cells = [c.strip() for c in report.render_op_table([row]).splitlines()[2].strip("|").split("|")]
    assert cells[1].startswith("missing: fi_core 0.1.0 has no BatchDecodeWithPagedKVCacheWrapper")
    # 3e9 B / 1.5 ms = 2.0 TB/s = 0.67 of a 3.0 TB/s copy
    assert cells[2:] == ["-", "-", "- (1.50 ms; 0.67 of copy)"]


def test_pipes_in_error_text_do_not_break_the_table():
    row = memory_row({"fi_core": report.failed("ValueError: a|b")})
    line = report.render_op_table([row]).splitlines()[2]
    assert "a\\|b" in line


def test_output_mismatch_is_flagged():
    row = memory_row({"fi_core": report.ok(10.0), "flashinfer": report.ok(10.0)})
    row["check"] = {"flashinfer": 0.5}
    assert "OUTPUT MISMATCH" in report.render_op_table([row])
    row["check"] = {"flashinfer": 1e-3}
    assert "OUTPUT MISMATCH" not in report.render_op_table([row])


def test_host_bound_result_is_flagged():
    row = memory_row({"fi_core": report.ok(10.0, host_call_us=350.0, host_bound=True)})
    assert "HOST-BOUND B=128 kv=4096: one fi_core call takes 350 us" in report.render_op_table([row])
    row = memory_row({"fi_core": report.ok(10.0, host_call_us=30.0)})
    assert "HOST-BOUND" not in report.render_op_table([row])


class FakeClock:
    """A clock that advances only when slept on, so the settle loop's waits are exact."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def probes(values):
    readings = iter(values)
    return lambda: next(readings)


def test_settle_waits_until_the_probe_recovers():
    clock = FakeClock()
    # Baseline 3.0 TB/s, tolerance 0.97 -> 2.91 needed: 2.1 and 2.9 fall short, 2.95 is enough.
    result = settle.wait_for_bandwidth(probes([2.1, 2.9, 2.95, 1.0]), 3.0, tolerance=0.97, max_seconds=1.0,
                                       pause_seconds=0.01, clock=clock, sleep=clock.sleep)
    assert result == {"settled": True, "waited_ms": 20.0, "probes": 3, "first_tbps": 2.1, "last_tbps": 2.95}


def test_settle_returns_at_once_when_memory_is_at_speed():
    clock = FakeClock()
    result = settle.wait_for_bandwidth(probes([3.0]), 3.0, clock=clock, sleep=clock.sleep)
    assert result["settled"] and result["probes"] == 1 and result["waited_ms"] == 0.0


def test_settle_gives_up_after_the_longest_wait():
    clock = FakeClock()
    # Never above 2.0 of 3.0: probes at 0, 0.25, 0.5, 0.75, 1.0 s, then the wait is over.
    result = settle.wait_for_bandwidth(lambda: 2.0, 3.0, max_seconds=1.0, pause_seconds=0.25, clock=clock,
                                       sleep=clock.sleep)
    assert result["settled"] is False and result["probes"] == 5 and result["waited_ms"] == 1000.0


def test_settling_needs_gigabytes_freed_or_mapped():
    gib = 1 << 30
    # 34 GB freed by the last workload: wait, whatever this one reserves.
    assert settle.needs_settling(34 * gib, 10 * gib, 10 * gib, threshold=4 * gib)
    # Nothing freed, 2 + 3 GiB newly reserved: 5 GiB moved.
    assert settle.needs_settling(2 * gib, 1 * gib, 4 * gib, threshold=4 * gib)
    # Inputs built from torch's cache (reserved went down is not a mapping): 1 GiB in all.
    assert not settle.needs_settling(1 * gib, 8 * gib, 6 * gib, threshold=4 * gib)


def test_settle_waits_are_noted_under_the_table():
    waited = memory_row({"fi_core": report.ok(10.0)})
    waited["settle"] = {"settled": True, "waited_ms": 42.0, "probes": 7, "first_tbps": 2.5, "last_tbps": 2.95}
    text = report.render_op_table([waited, memory_row({"fi_core": report.ok(10.0)})])
    assert "before 1 workload(s) (longest 42 ms, before B=128 kv=4096)" in text
    assert "UNSETTLED" not in text
    waited["settle"] = {"settled": False, "waited_ms": 3000.0, "probes": 90, "first_tbps": 2.0, "last_tbps": 2.4}
    assert "UNSETTLED B=128 kv=4096: timed while the copy probe still read 2.40 TB/s after 3000 ms" in \
        report.render_op_table([waited])


def sample_payload():
    rows = [report.add_derived_figures(memory_row({"fi_core": report.ok(1000.0),
                                                   "flashinfer": report.ok(1100.0)}), CEILINGS),
            report.add_derived_figures(
                {"op": "batch_decode_plan", "label": "B=32", "params": {}, "bound": workloads.LATENCY,
                 "flops": 0.0, "bytes": 0.0,
                 "results": {"fi_core": report.ok(40.0), "flashinfer": report.ok(190.0)}, "check": {}},
                CEILINGS)]
    meta = {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-11-25", "timing": "median",
            "versions": {"torch": "2.11.0", "flashinfer": "0.5.3", "fi_core": "missing"}, "notes": []}
    return {"suite": "decode", "quick": True, "meta": meta, "ceilings": CEILINGS, "rows": rows,
            "skipped_for_memory": []}


def test_markdown_document_has_ceilings_and_one_section_per_op():
    text = report.render_markdown(sample_payload())
    assert "device copy 3.00 TB/s" in text and "GEMM 8192^3 800 TFLOP/s" in text
    assert "## batch_decode\n" in text
    assert "## batch_decode_plan (host time of plan())" in text
    # plan row: 40 us vs 190 us -> 4.75x
    assert "| B=32 | 40.0 us | 4.75x (190.0 us) |" in text


def test_interrupted_and_aborted_runs_say_so():
    payload = sample_payload()
    payload["incomplete"] = "2 of 5 workloads measured"
    payload["aborted"] = "CUDA context unusable after an error: RuntimeError: illegal address"
    text = report.render_markdown(payload)
    assert "INCOMPLETE (run interrupted): 2 of 5 workloads measured." in text
    assert "RUN ABORTED: CUDA context unusable" in text


def test_ceiling_failure_is_reported_not_hidden():
    payload = sample_payload()
    payload["ceilings"] = {"gemm_tflops": 800.0, "copy_error": "OutOfMemoryError: no room"}
    assert "not measured (OutOfMemoryError: no room)" in report.render_markdown(payload)


def test_payload_round_trips_through_json(tmp_path):
    path = tmp_path / "x.json"
    report.write_json(sample_payload(), str(path))
    loaded = json.loads(path.read_text())
    assert loaded["rows"][0]["results"]["fi_core"]["time_us"] == 1000.0
    assert loaded["ceilings"]["copy_tbps"] == 3.0


# ---------------------------------------------------------------------------------------------
# Missing peers
# ---------------------------------------------------------------------------------------------

def test_failed_import_becomes_missing_with_reason():
    library = peers.import_library("fi_core_bench_test_no_such_module")
    assert not library.available
    assert "No module named 'fi_core_bench_test_no_such_module'" in library.missing_reason


def test_import_that_raises_is_reported_with_its_error(tmp_path, monkeypatch):
    (tmp_path / "fi_core_bench_broken_peer.py").write_text("raise RuntimeError('broken build')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    library = peers.import_library("fi_core_bench_broken_peer")
    assert not library.available
    assert "RuntimeError: broken build" in library.missing_reason


def test_every_implementation_of_a_missing_library_is_missing():
    libraries = {"fi_core": peers.Library("fi_core", module=object(), version="0.1.0"),
                 "flashinfer": peers.import_library("fi_core_bench_test_no_such_module"),
                 "torch": peers.disabled_library("torch", "disabled by --no-peers")}
    assert peers.unavailable_reason("fi_core-cc", libraries) is None
    assert "No module named" in peers.unavailable_reason("flashinfer-tc", libraries)
    assert peers.unavailable_reason("sdpa-cudnn", libraries) == "disabled by --no-peers"
    for implementations in workloads.OP_IMPLEMENTATIONS.values():
        for name in implementations:
            assert name in peers.IMPLEMENTATION_LIBRARY


def test_absent_op_is_missing_with_library_and_name():
    module = type(sys)("fake_fi_core")
    module.rmsnorm = lambda x, w, eps: x
    library = peers.Library("fi_core", module=module, version="0.1.0")
    assert peers.find_op(library, "rmsnorm") is module.rmsnorm
    with pytest.raises(peers.MissingOp, match="fi_core 0.1.0 has no silu_and_mul"):
        peers.find_op(library, "silu_and_mul")
    with pytest.raises(peers.MissingOp, match="No module named"):
        peers.find_op(peers.import_library("fi_core_bench_test_no_such_module"), "rmsnorm")


def test_variant_keyword_check():
    library = peers.Library("fi_core", module=object(), version="0.1.0")

    def without_backend(q, k, v, causal=False):
        return q

    def with_kwargs(q, k, v, **kwargs):
        return q

    with pytest.raises(peers.MissingOp, match="takes no backend argument"):
        peers.require_keyword(library, "single_prefill_with_kv_cache", without_backend, "backend")
    peers.require_keyword(library, "single_prefill_with_kv_cache", with_kwargs, "backend")
    assert peers.accepts_keyword(with_kwargs, "backend") is True
    assert peers.accepts_keyword(without_backend, "causal") is True


def test_version_note_only_when_versions_differ():
    other = peers.Library("flashinfer", module=object(), version="0.6.0")
    assert "0.6.0" in peers.version_note(other, "0.5.3")
    assert peers.version_note(peers.Library("flashinfer", module=object(), version="0.5.3"), "0.5.3") is None


# ---------------------------------------------------------------------------------------------
# Result files
# ---------------------------------------------------------------------------------------------

def test_result_file_names():
    assert report.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert report.result_stem("2026-11-25", "NVIDIA H100 80GB HBM3", "decode") == \
        "2026-11-25-nvidia-h100-80gb-hbm3-decode"
    assert report.result_stem("2026-11-25", "NVIDIA H200", "batch_decode") == "2026-11-25-nvidia-h200-batch_decode"
    assert report.result_stem("2026-11-25", "NVIDIA H200", "decode", quick=True) == "2026-11-25-nvidia-h200-decode-quick"
    assert report.result_stem("2026-11-25", "NVIDIA H200", "decode", filters=["B=128", "bf16"]) == \
        "2026-11-25-nvidia-h200-decode.only-b-128-bf16"
    with pytest.raises(ValueError):
        report.result_stem("25/11/2026", "NVIDIA H200", "decode")
    with pytest.raises(ValueError):
        report.result_stem("2026-11-25", "NVIDIA H200", "everything")
    assert report.parse_result_name("2026-11-25-nvidia-h200-batch_decode.md") == \
        ("2026-11-25", "nvidia-h200", "batch_decode", False)
    assert report.parse_result_name("2026-11-25-nvidia-h200-decode.md") == ("2026-11-25", "nvidia-h200", "decode", False)
    assert report.parse_result_name("2026-11-25-nvidia-h200-decode-quick.md") == \
        ("2026-11-25", "nvidia-h200", "decode", True)
    assert report.parse_result_name("2026-11-25-nvidia-h200-decode.only-b-128.md") is None
    assert report.parse_result_name("LATEST.md") is None


def test_latest_links_newest_table_per_suite(tmp_path):
    for name in ["2026-11-20-nvidia-h100-80gb-hbm3-decode", "2026-11-25-nvidia-h100-80gb-hbm3-decode",
                 "2026-11-26-nvidia-h100-80gb-hbm3-decode.only-bf16", "2026-11-24-nvidia-h100-80gb-hbm3-decode-quick",
                 "2026-11-22-nvidia-h200-prefill"]:
        (tmp_path / f"{name}.md").write_text("table\n")
        (tmp_path / f"{name}.json").write_text("{}\n")
    (tmp_path / "notes.md").write_text("not a result\n")
    text = open(report.update_latest(str(tmp_path))).read()
    assert "| decode | full | 2026-11-25 | nvidia-h100-80gb-hbm3 | [2026-11-25-nvidia-h100-80gb-hbm3-decode.md]" in text
    assert "| decode | quick | 2026-11-24 |" in text
    assert "2026-11-20" not in text and "only-bf16" not in text
    assert "| prefill | full | 2026-11-22 | nvidia-h200 |" in text
    assert "[json](2026-11-22-nvidia-h200-prefill.json)" in text
    assert "notes.md" not in text


def test_latest_without_results_says_so(tmp_path):
    assert "No results yet" in open(report.update_latest(str(tmp_path))).read()


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    from bench import plot
    path = tmp_path / "plot.png"
    assert plot.plot_payload(sample_payload(), str(path)) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suite", workloads.SUITES)
def test_quick_grid_is_a_nonempty_subset_of_the_full_grid(suite):
    quick, _ = workloads.suite_workloads(suite, quick=True)
    full, too_big = workloads.suite_workloads(suite, quick=False)
    full_keys = {w.key() for w in full}
    assert quick
    assert {w.key() for w in quick} <= full_keys
    assert len(full_keys) == len(full), "duplicate grid points"
    assert not too_big or all(w.footprint_bytes > workloads.MAX_FOOTPRINT_BYTES for w in too_big)


def test_decode_quick_grid_holds_the_acceptance_points():
    quick, _ = workloads.suite_workloads("decode", quick=True)
    points = {(w.params["kv_len"], w.params["num_qo_heads"], w.params["num_kv_heads"])
              for w in quick if w.op == "single_decode"
              and w.params["head_dim"] == 128 and w.params["kv_dtype"] == "bf16"}
    assert points == {(32768, 32, 32), (131072, 32, 32), (32768, 32, 8), (131072, 32, 8)}
    plan_batches = {w.params["batch"] for w in quick if w.op == "batch_decode_plan"}
    assert plan_batches == {32, 128, 256}


def test_full_grids_cover_the_issue():
    decode, too_big = workloads.suite_workloads("decode")
    batch = [w for w in decode + too_big if w.op == "batch_decode"]
    assert {w.params["batch"] for w in batch} >= {1, 8, 32, 128, 256}
    assert {w.params["kv_len"] for w in batch} == {512, 4096, 32768}
    assert {(w.params["num_qo_heads"], w.params["num_kv_heads"]) for w in batch} == {(32, 32), (32, 8), (64, 8)}
    assert {w.params["page_size"] for w in batch} == {1, 16}
    assert {w.params["head_dim"] for w in batch} == {64, 128, 256}
    assert {w.params["kv_dtype"] for w in batch} == {"bf16", "fp8_e4m3"}
    prefill, _ = workloads.suite_workloads("prefill")
    singles = [w for w in prefill if w.op == "single_prefill"]
    assert {w.params["seq_len"] for w in singles} >= {1024, 4096, 16384}
    assert {w.params["causal"] for w in singles} == {True, False}
    assert {w.params["distribution"] for w in prefill if w.op == "batch_prefill"} == {"uniform", "zipf"}
    operators, _ = workloads.suite_workloads("operators")
    assert {w.op for w in operators} == {
        "rmsnorm", "gemma_rmsnorm", "fused_add_rmsnorm", "gemma_fused_add_rmsnorm", "silu_and_mul",
        "gelu_and_mul", "gelu_tanh_and_mul", "apply_rope_pos_ids", "apply_llama31_rope_pos_ids",
        "apply_rope_with_cos_sin_cache"}
    sampling, _ = workloads.suite_workloads("sampling")
    assert {w.params["vocab"] for w in sampling} == {32000, 128256, 151936}
    assert min(w.params["batch"] for w in sampling) == 1 and max(w.params["batch"] for w in sampling) == 512


def test_points_over_60_gb_are_left_out():
    # B=256, kv 32768, 32 kv heads, d 128, bf16: K+V = 2 * 256 * 32768 * 32 * 128 * 2 B = 137 GB
    _, too_big = workloads.suite_workloads("decode")
    labels = {w.label for w in too_big}
    assert "B=256 kv=32768 h=32/32 d=128 page=16 bf16" in labels
    # Same with 8 kv heads: 34 GB, kept.
    kept, _ = workloads.suite_workloads("decode")
    assert "B=256 kv=32768 h=32/8 d=128 page=16 bf16" in {w.label for w in kept}


def test_all_runs_each_family_once():
    assert workloads.expand_suite_choice("all") == ["decode", "prefill", "operators", "sampling"]
    assert workloads.expand_suite_choice("batch_decode") == ["batch_decode"]
    with pytest.raises(ValueError):
        workloads.expand_suite_choice("nope")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def test_without_gpu_prints_a_message_and_exits_zero(monkeypatch, capsys):
    monkeypatch.setattr(cli, "gpu_unavailable_reason", lambda: "no CUDA GPU is visible to PyTorch")
    assert cli.main(["--suite", "decode", "--quick"]) == 0
    assert "no CUDA GPU is visible to PyTorch; nothing was measured" in capsys.readouterr().out


def test_filters_must_all_match():
    decode, _ = workloads.suite_workloads("decode")
    picked = workloads.matching(decode, ["batch_decode ", "B=128 kv=4096 h=32/8 d=128 page=16"])
    assert sorted(w.label for w in picked) == ["B=128 kv=4096 h=32/8 d=128 page=16 bf16",
                                               "B=128 kv=4096 h=32/8 d=128 page=16 fp8_e4m3"]
    assert len(workloads.matching(decode, [])) == len(decode)


def test_list_needs_no_gpu(capsys):
    assert cli.main(["--suite", "sampling", "--quick", "--list"]) == 0
    out = capsys.readouterr().out
    assert "== suite sampling (quick grid): 3 workloads" in out
    assert "B=128 V=128256" in out


def test_harness_modules_do_not_import_torch():
    code = textwrap.dedent("""
        import sys
        import bench.workloads, bench.peers, bench.report, bench.plot, bench.__main__
        print(sorted(m for m in ("torch", "triton", "flashinfer", "fi_core", "matplotlib") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_profile_refuses_what_it_cannot_run(capsys):
    from bench import profile
    assert profile.main(["--suite", "operators", "--filter", "no such workload"]) == 2
    assert "no workload matches" in capsys.readouterr().err
    assert profile.main(["--suite", "sampling", "--quick", "--implementation", "sdpa-flash"]) == 2
    assert "sdpa-flash does not implement" in capsys.readouterr().err


def test_split_sweep_maps_choices_to_plan_options():
    from bench import split_sweep
    args = split_sweep.parse_args(["--batch", "16", "--split", "auto", "--split", "whole", "--split", "64"])
    assert args.batch == [16] and args.kv_len == 32768 and args.heads == "32/8"
    assert [split_sweep.plan_options(s) for s in args.split] == [
        {}, {"disable_split_kv": True}, {"fixed_split_size": 64}]
    for bad in ("0", "-4", "half"):
        with pytest.raises(SystemExit):
            split_sweep.parse_args(["--batch", "1", "--split", bad])


# ---------------------------------------------------------------------------------------------
# bench.compare: base / change / base-again table
# ---------------------------------------------------------------------------------------------

def _write_result_folder(folder, rows):
    os.makedirs(folder)
    payload = {"suite": "sampling", "rows": [
        {"op": op, "label": label, "results": {"fi_core": result, "flashinfer": {"status": "ok", "time_us": 1.0}}}
        for op, label, result in rows]}
    with open(os.path.join(folder, "run.json"), "w") as handle:
        json.dump(payload, handle)


def test_compare_table_uses_the_best_base_time_and_skips_failed_rows(tmp_path):
    from bench import compare
    ok = lambda us: {"status": "ok", "time_us": us}  # noqa: E731
    _write_result_folder(str(tmp_path / "a"), [("top_p", "B=128", ok(96.0)), ("top_k", "B=1", ok(50.0))])
    _write_result_folder(str(tmp_path / "b"), [("top_p", "B=128", ok(60.0)),
                                               ("top_k", "B=1", {"status": "error", "time_us": 1.0})])
    _write_result_folder(str(tmp_path / "c"), [("top_p", "B=128", ok(90.0)), ("top_k", "B=1", ok(52.0))])
    table = compare.render([("base", compare.load_times(str(tmp_path / "a"))),
                            ("change", compare.load_times(str(tmp_path / "b"))),
                            ("base_again", compare.load_times(str(tmp_path / "c")))])
    lines = table.splitlines()
    assert lines[0] == "| workload | base (us) | change (us) | base_again (us) | change speed-up |"
    # Best base 90.0 us over the change's 60.0 us: 1.50x. The failed change row shows "-".
    assert lines[2] == "| top_p B=128 | 96.0 | 60.0 | 90.0 | 1.50x |"
    assert lines[3] == "| top_k B=1 | 50.0 | - | 52.0 | - |"
    assert compare.main([]) == 2

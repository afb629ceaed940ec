"""Is batch decode B=16 x kv 32768 slow after a large free (as in the bench's grid order, where it
follows B=256 x kv 32768 and measures 0.86 of copy instead of 1.02) because of where its cache
lands, or only for a while after the free? And does the bench's copy probe (bench/settle.py) see
the same slowdown, so that waiting for the probe is enough? On a GPU machine, from the repository
root:

    PYTHONPATH=<unpacked package> python3 -m bench.experiments.decode_after_free

Each case builds (and, as in the grid, runs for about a second) B=256, frees it, builds B=16 and
then prints a time course: every few ms, the copy probe's bandwidth and B=16's median over a few
calls. A slowdown that persists for the same inputs points at their placement; one that fades
points at the driver's work after the free or the new mapping. If the probe fades with it, the
bench's settle step removes the artifact."""
import statistics
import time

import torch

from bench.gpu_runner import (FULL_TIMING, GpuTimer, build_batch_decode, load_libraries, measure_ceilings,
                              planned_batch_decode)

library = load_libraries(use_peers=False)["fi_core"]
timer = GpuTimer(FULL_TIMING)
measure_ceilings(timer)
print(f"probe baseline {timer.probe_baseline_tbps:.2f} TB/s", flush=True)

TRACE_SECONDS = 0.6
CALLS_PER_POINT = 5


def params(batch):
    return dict(batch=batch, kv_len=32768, num_qo_heads=32, num_kv_heads=8, head_dim=128, page_size=16,
                kv_dtype="bf16")


def planned(batch):
    """B=batch's inputs and a wrapper planned for them, as the bench plans fi_core."""
    p = dict(params(batch), split_pages=0)
    inputs = build_batch_decode(p)
    return inputs, planned_batch_decode(library, inputs, p, use_tensor_cores=False).wrapper


def median_us(fn, calls):
    """Median GPU time of a few calls, timed the bench's way (L2 flushed, host launch covered)."""
    return statistics.median(timer._timed_runs(fn, calls)[0])


def trace(label, began):
    """Time course of the probe and of B=16 from `began` (perf_counter after the free)."""
    inputs, wrapper = planned(16)
    run = lambda: wrapper.run(inputs.q, inputs.cache)  # noqa: E731
    run()
    torch.cuda.synchronize()
    print(f"-- {label}: B=16 built {1000 * (time.perf_counter() - began):.0f} ms after the free", flush=True)
    while time.perf_counter() - began < TRACE_SECONDS:
        at_ms = 1000 * (time.perf_counter() - began)
        probe = timer.probe_copy_tbps()
        print(f"  t={at_ms:6.0f} ms  probe {probe:.2f} TB/s  B=16 {median_us(run, CALLS_PER_POINT):7.1f} us",
              flush=True)
    print(f"  full measurement now: {timer.measure(run)['time_us']:.1f} us", flush=True)
    del inputs, wrapper


def after_b256(freed_to, run_seconds=1.0):
    """B=256 built, run for run_seconds (0: only built), freed to `freed_to` ("driver" or "torch's
    cache"), then the trace of B=16."""
    big, wrapper = planned(256)
    stop = time.perf_counter() + run_seconds
    while time.perf_counter() < stop:
        wrapper.run(big.q, big.cache)
        torch.cuda.synchronize()
    del big, wrapper
    if freed_to == "driver":
        torch.cuda.empty_cache()
    trace(f"after B=256 (run {run_seconds:.0f} s) freed to {freed_to}", time.perf_counter())
    torch.cuda.empty_cache()


trace("fresh process", time.perf_counter())
torch.cuda.empty_cache()
after_b256("driver")
after_b256("driver", run_seconds=0.0)
after_b256("torch's cache")

"""Waiting for device memory to come back to full speed after gigabytes were freed or mapped.

Why: in every full decode grid since 2026-12-07, batch decode B=16 x kv 32768 read 0.86 of copy
right after B=256 x kv 32768 (whose 34 GB cache the runner hands back to the driver) and 1.02 in
a fresh process with the same plan, while FlashInfer, timed a few tens of ms later on the same
inputs, read 1.01. Whatever the driver does after a large free or a large new mapping, the first
implementation timed after it pays. So before timing a workload whose setup moved more than
SETTLE_MOVED_BYTES, the runner times a small probe copy until it runs at its own speed again.

Pure Python (no torch): the loop takes the probe as a function, so it is tested on a CPU.
"""

import time

# Freed to the driver by the last workload plus newly reserved by this one's inputs.
SETTLE_MOVED_BYTES = 4 << 30
# The probe counts as recovered at this fraction of the bandwidth it had at the start of the run.
SETTLE_TOLERANCE = 0.97
# Longest wait: past this the workload is timed anyway, and the row says the GPU never settled.
SETTLE_MAX_SECONDS = 3.0
# Pause between probes, so a background transfer is not slowed by the probes themselves.
SETTLE_PAUSE_SECONDS = 0.005


def wait_for_bandwidth(probe_tbps, baseline_tbps, tolerance=SETTLE_TOLERANCE, max_seconds=SETTLE_MAX_SECONDS,
                       pause_seconds=SETTLE_PAUSE_SECONDS, clock=time.monotonic, sleep=time.sleep):
    """Calls probe_tbps() until it returns at least tolerance * baseline_tbps or max_seconds have
    passed. Returns what the row records: whether it settled, the wait in ms, the probes taken,
    and the first and last bandwidth seen (TB/s)."""
    started = clock()
    first = last = probe_tbps()
    probes = 1
    while last < tolerance * baseline_tbps and clock() - started < max_seconds:
        sleep(pause_seconds)
        last = probe_tbps()
        probes += 1
    return {"settled": last >= tolerance * baseline_tbps, "waited_ms": round((clock() - started) * 1000.0, 1),
            "probes": probes, "first_tbps": round(first, 3), "last_tbps": round(last, 3)}


def needs_settling(released_bytes, reserved_before, reserved_after, threshold=SETTLE_MOVED_BYTES):
    """Whether the memory moved since the last timed workload (freed to the driver, then newly
    reserved for this workload's inputs) is large enough to wait for the GPU to settle."""
    return released_bytes + max(0, reserved_after - reserved_before) >= threshold

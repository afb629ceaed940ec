"""Is batch decode B=16 x kv 32768 slow after a large free (as in the bench's grid order, where it
follows B=256 x kv 32768 and measures 0.86 of copy instead of 1.02) because of where its cache
lands, or only for a while after the free? On a GPU machine, from the repository root:

    PYTHONPATH=<unpacked package> python3 -m bench.experiments.decode_after_free

A slowdown that persists for the same inputs points at their placement; one that fades with
re-measurement or a pause points at the driver's work after the free, and the bench should let
the GPU settle after releasing memory before it times the next workload."""
import time
import torch
from bench.gpu_runner import FULL_TIMING, GpuTimer, build_batch_decode, load_libraries, new_workspace

fi = load_libraries(use_peers=False)["fi_core"].module
timer = GpuTimer(FULL_TIMING)


def params(batch):
    return dict(batch=batch, kv_len=32768, num_qo_heads=32, num_kv_heads=8, head_dim=128, page_size=16,
                kv_dtype="bf16")


def planned(batch):
    inputs = build_batch_decode(params(batch))
    wrapper = fi.BatchDecodeWithPagedKVCacheWrapper(new_workspace(), "NHD")
    wrapper.plan(inputs.indptr, inputs.indices, inputs.last_page_len, 32, 8, 128, 16,
                 q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    return inputs, wrapper


def measure(label, inputs, wrapper):
    t = timer.first_call_then_measure(lambda: wrapper.run(inputs.q, inputs.cache))["time_us"]
    print(f"{label}: {t:.1f} us", flush=True)


def after(freed_b256_to, pause_s=0.0):
    """B=16 measured twice on fresh inputs (and once more after pause_s), after B=256's inputs
    were built and freed to `freed_b256_to` ("driver", "torch's cache", or None: nothing built)."""
    if freed_b256_to is not None:
        big = build_batch_decode(params(256))
        torch.cuda.synchronize()
        del big
        if freed_b256_to == "driver":
            torch.cuda.empty_cache()
    where = f"after B=256 freed to {freed_b256_to}" if freed_b256_to else "fresh process"
    inputs, wrapper = planned(16)
    measure(f"B=16 {where}", inputs, wrapper)
    measure("B=16 same inputs again", inputs, wrapper)
    if pause_s:
        time.sleep(pause_s)
        measure(f"B=16 same inputs after {pause_s:.0f} s", inputs, wrapper)
    del inputs, wrapper
    torch.cuda.empty_cache()


after(None)
after("driver", pause_s=2.0)
after("torch's cache")

"""Runs suites on a CUDA GPU: the ceilings, fi_core and its peers, timed side by side in one process.

torch, fi_core and flashinfer are imported here and only here; __main__ imports this module only
after it has checked that a GPU is present, so the rest of bench/ works on any machine.
"""

import datetime
import gc
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch

from bench import peers, plot, report, settle, workloads
from bench.peers import MissingOp, describe_exception, find_op, require_keyword
from bench.workloads import SUBJECT

# Written before every timed run: larger than any L2 (50 MB on H100), so each run reads its
# inputs from device memory even when they would fit in L2.
L2_FLUSH_BYTES = 256 * 1024 * 1024
COPY_CEILING_BYTES = 1 << 30  # the copy's source buffer; bytes moved = read + written = 2x this
GEMM_CEILING_SIZE = 8192
# fp8 tensors are filled through a bf16 temporary of at most this many elements.
FILL_CHUNK_ELEMENTS = 1 << 27
FIRST_CALL_NOTE_SECONDS = 10.0

TORCH_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
KV_SCALE = 1.0  # k_scale / v_scale passed with fp8 KV (values are drawn in fp8's range)
RMSNORM_EPS = 1e-6


@dataclass
class TimingSettings:
    warmup_ms: float  # GPU time spent re-running fn before timing (clocks up, caches settled)
    budget_ms: float  # GPU time aimed at for the timed runs (flush and cover included)
    min_runs: int
    max_runs: int
    host_runs: int  # plan() calls timed on the host


QUICK_TIMING = TimingSettings(warmup_ms=10, budget_ms=30, min_runs=10, max_runs=300, host_runs=50)
FULL_TIMING = TimingSettings(warmup_ms=10, budget_ms=40, min_runs=20, max_runs=1000, host_runs=100)

# Before every timed run the GPU is kept busy about this long (after the L2 flush), so the host
# has issued the whole call before the start event is reached: the events time GPU work, not
# Python or launch overhead (which is recorded separately as host_call_us).
HOST_COVER_US = 200.0
ESTIMATE_RUNS = 3


class FatalCudaError(RuntimeError):
    """The CUDA context is unusable (a sticky error such as an illegal address): stop the run."""


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def quantile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


class GpuTimer:
    def __init__(self, settings):
        self.settings = settings
        self.flush_buffer = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
        self.sleep_cycles = self._calibrate_sleep()
        # GPU time each run costs besides fn itself; run counts are sized on fn + this overhead.
        self.overhead_us = self._time_flush_us() + (HOST_COVER_US if self.sleep_cycles else 0.0)
        # The memory-speed probe (settle.py): its copy target, its bandwidth once the run's ceilings
        # are measured, and the bytes freed to the driver since the last workload was timed.
        self.probe_target = None
        self.probe_baseline_tbps = None
        self.released_bytes = 0

    @staticmethod
    def _calibrate_sleep():
        """GPU clock cycles of torch.cuda._sleep that last about HOST_COVER_US (0 if unavailable)."""
        if not hasattr(torch.cuda, "_sleep"):
            return 0
        cycles = 1_000_000
        torch.cuda._sleep(50 * cycles)  # tens of ms of spinning first, so clocks are up
        cycles_per_us = 0.0
        for _ in range(3):  # the fastest clock seen, so the cover is never shorter than meant
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(cycles)
            end.record()
            torch.cuda.synchronize()
            cycles_per_us = max(cycles_per_us, cycles / max(start.elapsed_time(end) * 1000.0, 1.0))
        return int(cycles_per_us * HOST_COVER_US)

    def _flush_l2(self):
        # A read pass, not a write: written lines would sit dirty in L2 and their write-back
        # (about 50 MB on an H100, ~17 us) would be charged to the next timed run.
        torch.amax(self.flush_buffer)

    def _time_flush_us(self):
        self._flush_l2()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        self._flush_l2()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1000.0

    def describe(self):
        cover = (f"then the GPU is kept busy for about {HOST_COVER_US:.0f} us (torch.cuda._sleep) so "
                 "host launch overhead is not timed" if self.sleep_cycles else
                 "(torch.cuda._sleep unavailable: host overhead beyond the flush time is timed)")
        s = self.settings
        return (f"median of {s.min_runs}-{s.max_runs} runs (about {s.budget_ms:.0f} ms per measurement, after "
                f"{s.warmup_ms:.0f} ms of warm-up runs) timed with CUDA events; before every run a "
                f"{L2_FLUSH_BYTES >> 20} MiB buffer is read so inputs come from device memory, not L2 (a read "
                "leaves no dirty lines whose write-back would be timed), "
                f"{cover}; plan() rows: median host time of {s.host_runs} calls")

    def _timed_runs(self, fn, count):
        """GPU times (us) of count runs, and the host time of each call of fn."""
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
        host_us = []
        for start, end in zip(starts, ends):
            self._flush_l2()
            if self.sleep_cycles:
                torch.cuda._sleep(self.sleep_cycles)
            start.record()
            begin = time.perf_counter()
            fn()
            host_us.append((time.perf_counter() - begin) * 1e6)
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) * 1000.0 for start, end in zip(starts, ends)], host_us

    def _runs_for(self, milliseconds, estimate_us, minimum):
        wanted = int(milliseconds * 1000.0 / (estimate_us + self.overhead_us))
        return min(self.settings.max_runs, max(minimum, wanted))

    def measure(self, fn):
        """Timing statistics of fn (median time_us, spread, runs, host_call_us). fn must have
        been called once already, so JIT compilation and module loading stay out of the numbers."""
        estimate_us = statistics.median(self._timed_runs(fn, ESTIMATE_RUNS)[0])
        self._timed_runs(fn, self._runs_for(self.settings.warmup_ms, estimate_us, 1))
        runs = self._runs_for(self.settings.budget_ms, estimate_us, self.settings.min_runs)
        gpu_us, host_us = self._timed_runs(fn, runs)
        ordered = sorted(gpu_us)
        return {"time_us": statistics.median(gpu_us), "runs": runs, "min_us": ordered[0],
                "p10_us": quantile(ordered, 0.1), "p90_us": quantile(ordered, 0.9),
                "host_call_us": statistics.median(host_us)}

    def probe_copy_tbps(self, runs=3):
        """Bandwidth (TB/s, bytes read + written) of copying the flush buffer, median of a few
        copies: whether device memory runs at its full speed right now."""
        if self.probe_target is None:
            self.probe_target = torch.empty_like(self.flush_buffer)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        for start, end in zip(starts, ends):
            start.record()
            self.probe_target.copy_(self.flush_buffer)
            end.record()
        torch.cuda.synchronize()
        time_us = statistics.median(start.elapsed_time(end) * 1000.0 for start, end in zip(starts, ends))
        return report.achieved_tbps(2 * L2_FLUSH_BYTES, time_us)

    def settle_memory(self, reserved_before_inputs):
        """Before a workload is timed: if gigabytes were freed to the driver or newly reserved since
        the last one (settle.py says why that matters), probe the copy speed until it is back.
        Returns what the row records, or None when nothing was waited for."""
        moved = settle.needs_settling(self.released_bytes, reserved_before_inputs, torch.cuda.memory_reserved())
        self.released_bytes = 0
        if not moved or self.probe_baseline_tbps is None:
            return None
        return settle.wait_for_bandwidth(self.probe_copy_tbps, self.probe_baseline_tbps)

    def first_call_then_measure(self, fn):
        fn()
        torch.cuda.synchronize()
        return self.measure(fn)

    def median_host_us(self, fn):
        """Median host time of fn (plan() sits on the serving loop's critical path)."""
        for _ in range(ESTIMATE_RUNS):
            fn()
        times = []
        for _ in range(self.settings.host_runs):
            torch.cuda.synchronize()  # start every call from an idle queue
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e6)
        torch.cuda.synchronize()
        return statistics.median(times), self.settings.host_runs


def time_copy_us(timer):
    source = torch.empty(COPY_CEILING_BYTES // 2, dtype=torch.bfloat16, device="cuda").normal_()
    target = torch.empty_like(source)
    return timer.first_call_then_measure(lambda: target.copy_(source))["time_us"]


def time_gemm_us(timer):
    n = GEMM_CEILING_SIZE
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    c = torch.empty(n, n, dtype=torch.bfloat16, device="cuda")
    return timer.first_call_then_measure(lambda: torch.matmul(a, b, out=c))["time_us"]


def measure_ceilings(timer):
    """Copy bandwidth (bytes read + written) and bf16 GEMM rate, measured once per run."""
    ceilings = {"copy_bytes": 2 * COPY_CEILING_BYTES, "gemm_size": GEMM_CEILING_SIZE}
    try:
        ceilings["copy_time_us"] = time_copy_us(timer)
        ceilings["copy_tbps"] = report.achieved_tbps(2 * COPY_CEILING_BYTES, ceilings["copy_time_us"])
    except Exception as exc:
        ceilings["copy_error"] = describe_exception(exc)
    try:
        ceilings["gemm_time_us"] = time_gemm_us(timer)
        ceilings["gemm_tflops"] = report.achieved_tflops(2.0 * GEMM_CEILING_SIZE**3, ceilings["gemm_time_us"])
    except Exception as exc:
        ceilings["gemm_error"] = describe_exception(exc)
    release_gpu_memory()
    timer.probe_baseline_tbps = max(timer.probe_copy_tbps() for _ in range(3))
    ceilings["probe_copy_tbps"] = timer.probe_baseline_tbps
    return ceilings


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def fill_random_(tensor):
    """Standard-normal values (never zeros: they hide unwritten outputs and can run faster)."""
    if tensor.dtype in FP8_DTYPES:
        flat = tensor.view(-1)
        for begin in range(0, flat.numel(), FILL_CHUNK_ELEMENTS):
            part = flat[begin:begin + FILL_CHUNK_ELEMENTS]
            part.copy_(torch.randn(part.numel(), dtype=torch.bfloat16, device=tensor.device))
    else:
        tensor.normal_()
    return tensor


def random_tensor(*shape, dtype=torch.bfloat16):
    return fill_random_(torch.empty(*shape, dtype=dtype, device="cuda"))


def int32_tensor(values):
    return torch.tensor(values, dtype=torch.int32, device="cuda")


def page_table(kv_lens, page_size):
    """CSR page table (int32 on the GPU) of requests whose pages lie in random order in the page
    pool, as in a serving engine."""
    pages_per_request = [workloads.pages_for(n, page_size) for n in kv_lens]
    indptr = [0]
    for pages in pages_per_request:
        indptr.append(indptr[-1] + pages)
    return SimpleNamespace(
        num_pages=indptr[-1],
        indptr=int32_tensor(indptr),
        indices=torch.randperm(indptr[-1], device="cuda").to(torch.int32),
        last_page_len=int32_tensor([n - (pages - 1) * page_size
                                    for n, pages in zip(kv_lens, pages_per_request)]),
    )


def paged_kv_cache(kv_lens, num_kv_heads, head_dim, page_size, kv_dtype):
    """A page table and its NHD cache [num_pages, 2, page_size, H, D]."""
    table = page_table(kv_lens, page_size)
    table.cache = random_tensor(table.num_pages, 2, page_size, num_kv_heads, head_dim, dtype=kv_dtype)
    return table


def kv_scales(kv_dtype):
    """k_scale/v_scale keyword arguments: passed only with fp8 KV, so bf16 calls stay plain."""
    return dict(k_scale=KV_SCALE, v_scale=KV_SCALE) if kv_dtype in FP8_DTYPES else {}


# ---------------------------------------------------------------------------------------------
# Implementations. Each factory takes (inputs, params, libraries) and returns a zero-argument
# callable that launches one run (or raises MissingOp). fi_core and FlashInfer get the same call.
# ---------------------------------------------------------------------------------------------

def sdpa_call(backend_name, q, k, v, is_causal, to_output_layout):
    """torch SDPA pinned to one backend; q/k/v are [batch, heads, seq, dim] views."""
    try:
        import torch.nn.functional as functional
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError as exc:
        raise MissingOp(f"torch.nn.attention not available ({exc})")
    backend = getattr(SDPBackend, backend_name, None)
    if backend is None:
        raise MissingOp(f"torch {torch.__version__} has no SDPBackend.{backend_name}")
    if k.dtype in FP8_DTYPES:
        raise MissingOp("torch SDPA takes no fp8 K/V")
    kwargs = {"is_causal": is_causal}
    if q.shape[1] != k.shape[1]:
        kwargs["enable_gqa"] = True

    def call():
        with sdpa_kernel(backend):
            return to_output_layout(functional.scaled_dot_product_attention(q, k, v, **kwargs))
    return call


SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-cudnn": "CUDNN_ATTENTION"}


# --- single decode ---------------------------------------------------------------------------

def build_single_decode(p):
    kv_dtype = TORCH_DTYPES[p["kv_dtype"]]
    return SimpleNamespace(
        q=random_tensor(p["num_qo_heads"], p["head_dim"]),
        k=random_tensor(p["kv_len"], p["num_kv_heads"], p["head_dim"], dtype=kv_dtype),
        v=random_tensor(p["kv_len"], p["num_kv_heads"], p["head_dim"], dtype=kv_dtype),
    )


def single_decode_factory(library_name):
    def factory(inputs, p, libraries):
        decode = find_op(libraries[library_name], "single_decode_with_kv_cache")
        kwargs = dict(kv_layout="NHD", **kv_scales(inputs.k.dtype))
        return lambda: decode(inputs.q, inputs.k, inputs.v, **kwargs)
    return factory


def single_decode_sdpa_factory(implementation):
    def factory(inputs, p, libraries):
        num_qo_heads, head_dim = inputs.q.shape
        q = inputs.q.view(1, num_qo_heads, 1, head_dim)
        k = inputs.k.unsqueeze(0).transpose(1, 2)  # [1, kv_heads, kv_len, dim] view of NHD
        v = inputs.v.unsqueeze(0).transpose(1, 2)
        return sdpa_call(SDPA_BACKENDS[implementation], q, k, v, False,
                         lambda out: out.view(num_qo_heads, head_dim))
    return factory


# --- batch decode ----------------------------------------------------------------------------

def build_batch_decode(p):
    kv = paged_kv_cache([p["kv_len"]] * p["batch"], p["num_kv_heads"], p["head_dim"], p["page_size"],
                        TORCH_DTYPES[p["kv_dtype"]])
    kv.q = random_tensor(p["batch"], p["num_qo_heads"], p["head_dim"])
    return kv


def build_batch_decode_plan(p):
    """Only the page table: plan() never touches the cache."""
    return page_table([p["kv_len"]] * p["batch"], p["page_size"])


def new_workspace():
    # Zeroed, as FlashInfer requires for a workspace's first use (this is scratch, not input data).
    return torch.zeros(workloads.WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")


def planned_batch_decode(library, inputs, p, use_tensor_cores):
    """A planned BatchDecodeWithPagedKVCacheWrapper, its workspace, and a function re-planning it."""
    wrapper_class = find_op(library, "BatchDecodeWithPagedKVCacheWrapper")
    planned = SimpleNamespace(workspace=new_workspace())
    planned.wrapper = wrapper_class(planned.workspace, "NHD", use_tensor_cores=use_tensor_cores)

    def plan():
        split = {"fixed_split_size": p["split_pages"]} if p["split_pages"] else {}
        planned.wrapper.plan(inputs.indptr, inputs.indices, inputs.last_page_len, p["num_qo_heads"],
                             p["num_kv_heads"], p["head_dim"], p["page_size"],
                             q_data_type=torch.bfloat16, kv_data_type=TORCH_DTYPES[p["kv_dtype"]], **split)
    planned.plan = plan
    plan()
    return planned


def batch_decode_factory(library_name, use_tensor_cores=False):
    def factory(inputs, p, libraries):
        # The callables close over `planned`, which also keeps the workspace alive.
        planned = planned_batch_decode(libraries[library_name], inputs, p, use_tensor_cores)
        scales = kv_scales(inputs.cache.dtype)
        return lambda: planned.wrapper.run(inputs.q, inputs.cache, **scales)
    return factory


def batch_decode_plan_factory(library_name):
    def factory(inputs, p, libraries):
        return planned_batch_decode(libraries[library_name], inputs, p, use_tensor_cores=False).plan
    return factory


# --- prefill ---------------------------------------------------------------------------------

def build_single_prefill(p):
    shape = (p["seq_len"], p["num_heads"], p["head_dim"])
    return SimpleNamespace(q=random_tensor(*shape), k=random_tensor(*shape), v=random_tensor(*shape))


def single_prefill_factory(library_name, backend=None):
    def factory(inputs, p, libraries):
        library = libraries[library_name]
        prefill = find_op(library, "single_prefill_with_kv_cache")
        kwargs = {"causal": p["causal"]}
        if backend is not None:
            require_keyword(library, "single_prefill_with_kv_cache", prefill, "backend")
            kwargs["backend"] = backend
        return lambda: prefill(inputs.q, inputs.k, inputs.v, **kwargs)
    return factory


def single_prefill_sdpa_factory(implementation):
    def factory(inputs, p, libraries):
        # [S, H, D] -> [1, H, S, D] views; the output is turned back into [S, H, D] (a view).
        q, k, v = (x.unsqueeze(0).transpose(1, 2) for x in (inputs.q, inputs.k, inputs.v))
        return sdpa_call(SDPA_BACKENDS[implementation], q, k, v, p["causal"],
                         lambda out: out.squeeze(0).transpose(0, 1))
    return factory


def build_batch_prefill(p):
    kv = paged_kv_cache(p["qo_lens"], p["num_kv_heads"], p["head_dim"], p["page_size"], torch.bfloat16)
    qo_indptr = [0]
    for n in p["qo_lens"]:
        qo_indptr.append(qo_indptr[-1] + n)
    kv.qo_indptr = int32_tensor(qo_indptr)
    kv.q = random_tensor(qo_indptr[-1], p["num_qo_heads"], p["head_dim"])
    return kv


def batch_prefill_factory(library_name, backend=None):
    def factory(inputs, p, libraries):
        library = libraries[library_name]
        wrapper_class = find_op(library, "BatchPrefillWithPagedKVCacheWrapper")
        extra = {}
        if backend is not None:
            require_keyword(library, "BatchPrefillWithPagedKVCacheWrapper", wrapper_class, "backend")
            extra["backend"] = backend
        planned = SimpleNamespace(workspace=new_workspace())
        planned.wrapper = wrapper_class(planned.workspace, "NHD", **extra)
        planned.wrapper.plan(inputs.qo_indptr, inputs.indptr, inputs.indices, inputs.last_page_len,
                             p["num_qo_heads"], p["num_kv_heads"], p["head_dim"], p["page_size"],
                             causal=p["causal"], q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
        return lambda: planned.wrapper.run(inputs.q, inputs.cache)
    return factory


# --- operators -------------------------------------------------------------------------------

def build_norm(p):
    return SimpleNamespace(x=random_tensor(p["tokens"], p["hidden"]),
                           residual=random_tensor(p["tokens"], p["hidden"]),
                           weight=random_tensor(p["hidden"]))


def rmsnorm_factory(library_name, op):
    def factory(inputs, p, libraries):
        rmsnorm = find_op(libraries[library_name], op)
        return lambda: rmsnorm(inputs.x, inputs.weight, RMSNORM_EPS)
    return factory


def fused_add_rmsnorm_factory(library_name, op):
    def factory(inputs, p, libraries):
        # In place on x and residual; repeated calls keep the values finite (x is renormalized).
        fused = find_op(libraries[library_name], op)
        return lambda: fused(inputs.x, inputs.residual, inputs.weight, RMSNORM_EPS)
    return factory


def build_act_and_mul(p):
    return SimpleNamespace(x=random_tensor(p["tokens"], 2 * p["intermediate"]))


def act_and_mul_factory(library_name, op):
    def factory(inputs, p, libraries):
        act_and_mul = find_op(libraries[library_name], op)
        return lambda: act_and_mul(inputs.x)
    return factory


def build_rope(p):
    return SimpleNamespace(
        q=random_tensor(p["tokens"], p["num_qo_heads"], p["head_dim"]),
        k=random_tensor(p["tokens"], p["num_kv_heads"], p["head_dim"]),
        pos_ids=torch.arange(p["tokens"], dtype=torch.int32, device="cuda"),
    )


def rope_factory(library_name, op):
    def factory(inputs, p, libraries):
        rope = find_op(libraries[library_name], op)
        return lambda: rope(inputs.q, inputs.k, inputs.pos_ids)
    return factory


ROPE_CACHE_POSITIONS = 131072


def build_rope_cos_sin_cache(p):
    """vLLM's layout: flat [tokens, heads * head_dim] q and k, int64 positions, a float32 table of
    cos then sin per position (random angles: the kernel does not care what they are)."""
    d, tokens = p["head_dim"], p["tokens"]
    angles = torch.rand(ROPE_CACHE_POSITIONS, d // 2, device="cuda") * 6.2831853
    return SimpleNamespace(
        q=random_tensor(tokens, p["num_qo_heads"] * d), k=random_tensor(tokens, p["num_kv_heads"] * d),
        positions=torch.randint(0, ROPE_CACHE_POSITIONS, (tokens,), dtype=torch.int64, device="cuda"),
        cache=torch.cat([angles.cos(), angles.sin()], dim=-1).contiguous())


def rope_cos_sin_cache_factory(library_name, op):
    def factory(inputs, p, libraries):
        rope = find_op(libraries[library_name], op)
        return lambda: rope(inputs.positions, inputs.q, inputs.k, p["head_dim"], inputs.cache, True)
    return factory


def operator_factories(make_factory, op):
    """The op's fi_core and FlashInfer implementations (same name and arguments in both)."""
    return {library: make_factory(library, op) for library in ("fi_core", "flashinfer")}


# --- sampling --------------------------------------------------------------------------------

def build_sampling(p):
    logits = torch.randn(p["batch"], p["vocab"], dtype=torch.float32, device="cuda") * p["logit_scale"]
    return SimpleNamespace(probs=torch.softmax(logits, dim=-1))


def top_p_factory(library_name):
    def factory(inputs, p, libraries):
        sample = find_op(libraries[library_name], "top_p_sampling_from_probs")
        return lambda: sample(inputs.probs, p["top_p"])
    return factory


def top_k_top_p_factory(library_name):
    def factory(inputs, p, libraries):
        sample = find_op(libraries[library_name], "top_k_top_p_sampling_from_probs")
        return lambda: sample(inputs.probs, p["top_k"], p["top_p"])
    return factory


def keep_nucleus(sorted_probs, top_p):
    """Zero the sorted probabilities past the top-p nucleus (the token crossing top_p stays)."""
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    return sorted_probs.masked_fill(mass_before > top_p, 0.0)


def torch_top_p_factory(inputs, p, libraries):
    def sample():
        sorted_probs, sorted_ids = torch.sort(inputs.probs, dim=-1, descending=True)
        picked = torch.multinomial(keep_nucleus(sorted_probs, p["top_p"]), 1)
        return sorted_ids.gather(-1, picked).squeeze(-1)
    return sample


def torch_top_k_top_p_factory(inputs, p, libraries):
    def sample():
        # Top-k first (topk returns them sorted), renormalize, then the top-p nucleus.
        top_probs, top_ids = torch.topk(inputs.probs, p["top_k"], dim=-1)
        top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)
        picked = torch.multinomial(keep_nucleus(top_probs, p["top_p"]), 1)
        return top_ids.gather(-1, picked).squeeze(-1)
    return sample


# op -> (input builder, {implementation: factory}). Implementation names match
# workloads.OP_IMPLEMENTATIONS.
OPS = {
    "single_decode": (build_single_decode, {
        "fi_core": single_decode_factory("fi_core"),
        "flashinfer": single_decode_factory("flashinfer"),
        "sdpa-flash": single_decode_sdpa_factory("sdpa-flash"),
        "sdpa-cudnn": single_decode_sdpa_factory("sdpa-cudnn"),
    }),
    "batch_decode": (build_batch_decode, {
        "fi_core": batch_decode_factory("fi_core", use_tensor_cores=None),  # its automatic choice
        "fi_core-cc": batch_decode_factory("fi_core", use_tensor_cores=False),
        "flashinfer": batch_decode_factory("flashinfer"),
        "flashinfer-tc": batch_decode_factory("flashinfer", use_tensor_cores=True),
    }),
    "batch_decode_plan": (build_batch_decode_plan, {
        "fi_core": batch_decode_plan_factory("fi_core"),
        "flashinfer": batch_decode_plan_factory("flashinfer"),
    }),
    "single_prefill": (build_single_prefill, {
        "fi_core": single_prefill_factory("fi_core"),
        "fi_core-fa2": single_prefill_factory("fi_core", backend="fa2"),
        "flashinfer": single_prefill_factory("flashinfer"),
        "flashinfer-fa2": single_prefill_factory("flashinfer", backend="fa2"),
        "sdpa-flash": single_prefill_sdpa_factory("sdpa-flash"),
        "sdpa-cudnn": single_prefill_sdpa_factory("sdpa-cudnn"),
    }),
    "batch_prefill": (build_batch_prefill, {
        "fi_core": batch_prefill_factory("fi_core"),
        "fi_core-fa2": batch_prefill_factory("fi_core", backend="fa2"),
        "flashinfer": batch_prefill_factory("flashinfer"),
        "flashinfer-fa2": batch_prefill_factory("flashinfer", backend="fa2"),
    }),
    **{op: (build_norm, operator_factories(rmsnorm_factory, op)) for op in workloads.NORM_OPS},
    **{op: (build_norm, operator_factories(fused_add_rmsnorm_factory, op))
       for op in workloads.FUSED_ADD_NORM_OPS},
    **{op: (build_act_and_mul, operator_factories(act_and_mul_factory, op)) for op in workloads.ACT_AND_MUL_OPS},
    **{op: (build_rope, operator_factories(rope_factory, op)) for op in workloads.ROPE_POS_IDS_OPS},
    workloads.ROPE_CACHE_OP: (build_rope_cos_sin_cache,
                              operator_factories(rope_cos_sin_cache_factory, workloads.ROPE_CACHE_OP)),
    "top_p_sampling_from_probs": (build_sampling, {"fi_core": top_p_factory("fi_core"),
                                                   "flashinfer": top_p_factory("flashinfer"),
                                                   "torch-sort": torch_top_p_factory}),
    "top_k_top_p_sampling_from_probs": (build_sampling, {"fi_core": top_k_top_p_factory("fi_core"),
                                                         "flashinfer": top_k_top_p_factory("flashinfer"),
                                                         "torch-sort": torch_top_k_top_p_factory}),
}

# plan() is timed on the host; everything else with CUDA events.
HOST_TIMED_OPS = {"batch_decode_plan"}
# Ops whose outputs are compared with fi_core's: not the in-place op (its inputs change with
# every call) and not sampling (random by design).
CHECKED_OPS = {"single_decode", "batch_decode", "single_prefill", "batch_prefill", *workloads.NORM_OPS,
               *workloads.ACT_AND_MUL_OPS, *workloads.ROPE_POS_IDS_OPS, workloads.ROPE_CACHE_OP}


# ---------------------------------------------------------------------------------------------
# Output check
# ---------------------------------------------------------------------------------------------

def output_tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for t in output if isinstance(t, torch.Tensor)]
    return []


def relative_error(output, reference):
    """Largest relative L2 distance over the output tensors; None if not comparable or not finite."""
    outputs, references = output_tensors(output), output_tensors(reference)
    if not outputs or len(outputs) != len(references):
        return None
    worst = 0.0
    for out, ref in zip(outputs, references):
        if out.shape != ref.shape:
            return None
        ref32 = ref.float()
        error = ((out.float() - ref32).norm() / ref32.norm().clamp_min(1e-30)).item()
        if error != error or error == float("inf"):
            return None
        worst = max(worst, error)
    return worst


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def ensure_cuda_alive(row):
    """Raise FatalCudaError (carrying the row measured so far) if the CUDA context is dead."""
    try:
        torch.cuda.synchronize()
    except Exception as exc:
        fatal = FatalCudaError(f"CUDA context unusable after an error: {describe_exception(exc)}")
        fatal.row = row
        raise fatal from exc


def release_gpu_memory(timer=None):
    """Frees torch's cached blocks to the driver; the timer counts the bytes (settle_memory)."""
    gc.collect()
    reserved = torch.cuda.memory_reserved()
    torch.cuda.empty_cache()
    if timer is not None:
        timer.released_bytes += max(0, reserved - torch.cuda.memory_reserved())


@dataclass
class Measurement:
    result: dict
    reference_output: object = None  # fi_core's first output: what the others are checked against
    checked: bool = False
    relative_error: object = None


def measure_implementation(workload, name, inputs, libraries, timer, reference):
    started = time.perf_counter()
    fn = OPS[workload.op][1][name](inputs, workload.params, libraries)  # may plan, and so JIT-compile
    if workload.op in HOST_TIMED_OPS:
        time_us, runs = timer.median_host_us(fn)
        return Measurement(report.ok(time_us, runs=runs, timer="host"))
    output = fn()  # the warm-up call FlashInfer needs: its first call JIT-compiles
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - started
    if first_call_s > FIRST_CALL_NOTE_SECONDS:
        print(f"    ({name}: first call took {first_call_s:.0f} s: JIT compilation or module load)",
              flush=True)
    measurement = Measurement(result=None)
    if workload.op in CHECKED_OPS:
        if name == SUBJECT:
            # Cloned: the library may hand back a buffer it reuses on later calls.
            measurement.reference_output = [t.clone() for t in output_tensors(output)]
        elif reference is not None:
            measurement.checked = True
            measurement.relative_error = relative_error(output, reference)
    del output
    stats = timer.measure(fn)
    if timer.sleep_cycles and stats["host_call_us"] > HOST_COVER_US:
        # The host could not issue the call within the cover: launch gaps are in the GPU time.
        stats["host_bound"] = True
    measurement.result = report.ok(stats.pop("time_us"), timer="cuda-events", first_call_s=round(first_call_s, 3),
                                   **stats)
    return measurement


def measure_workload(workload, libraries, timer):
    row = {"op": workload.op, "label": workload.label, "params": workload.params,
           "bound": workload.bound, "flops": workload.flops, "bytes": workload.bytes,
           # Filled in implementation order, which is also the table's column order.
           "results": {name: None for name in workload.implementations}, "check": {}}
    runnable = []
    for name in workload.implementations:
        reason = peers.unavailable_reason(name, libraries)
        if reason is None:
            runnable.append(name)
        else:
            row["results"][name] = report.missing(reason)
    if not runnable:
        return row
    reserved_before_inputs = torch.cuda.memory_reserved()
    try:
        inputs = OPS[workload.op][0](workload.params)
    except Exception as exc:  # out of memory, most likely
        for name in runnable:
            row["results"][name] = report.failed(f"building the inputs failed ({describe_exception(exc)})")
        ensure_cuda_alive(row)
        release_gpu_memory(timer)
        return row
    settled = timer.settle_memory(reserved_before_inputs)
    if settled is not None:
        row["settle"] = settled
    reference = None
    for name in runnable:
        try:
            measurement = measure_implementation(workload, name, inputs, libraries, timer, reference)
            row["results"][name] = measurement.result
            if measurement.reference_output is not None:
                reference = measurement.reference_output
            if measurement.checked:
                row["check"][name] = measurement.relative_error
        except MissingOp as exc:
            row["results"][name] = report.missing(exc)
        except Exception as exc:
            row["results"][name] = report.failed(describe_exception(exc))
            ensure_cuda_alive(row)
            release_gpu_memory(timer)  # after an out-of-memory error, give the next implementation room
    del inputs, reference
    release_gpu_memory(timer)
    return row


def progress_line(index, total, row):
    parts = [f"[{index:>4}/{total}] {row['op']} {row['label']}"]
    for name, result in row["results"].items():
        if report.is_ok(result):
            text = f"{name} {report.format_time_us(result['time_us'])}"
            if result.get("fraction_of_ceiling") is not None:
                text += f" ({result['fraction_of_ceiling']:.2f} of {report.ceiling_name(row['bound'])})"
            parts.append(text)
        else:
            parts.append(f"{name} {report.format_not_ok(result)[:40]}")
    return " | ".join(parts)


def git_commit():
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        return done.stdout.strip() or None
    except Exception:
        return None


def library_versions(libraries):
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton
        versions["triton"] = triton.__version__
    except Exception:
        pass
    for name in ("flashinfer", "fi_core"):
        library = libraries[name]
        versions[name] = (library.version or "unknown version") if library.available else "missing"
    return versions


def collect_metadata(libraries, args, timer, max_footprint_bytes):
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    now = datetime.datetime.now(datetime.timezone.utc)
    notes = [note for note in [peers.version_note(libraries["flashinfer"], peers.EXPECTED_FLASHINFER_VERSION)]
             if note]
    return {
        "gpu": properties.name,
        "sm_count": properties.multi_processor_count,
        "gpu_memory_gb": round(properties.total_memory / 1e9, 1),
        "l2_bytes": getattr(properties, "L2_cache_size", None),
        "date": now.strftime("%Y-%m-%d"),
        "timestamp": now.isoformat(timespec="seconds"),
        "versions": library_versions(libraries),
        "libraries": {name: {"available": lib.available, "version": lib.version,
                             "missing_reason": lib.missing_reason,
                             "file": getattr(lib.module, "__file__", None)}
                      for name, lib in libraries.items()},
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "command": " ".join(["python -m bench"] + sys.argv[1:]),
        "quick": args.quick,
        "timing": timer.describe(),
        "timing_settings": dict(asdict(timer.settings), l2_flush_bytes=L2_FLUSH_BYTES,
                                host_cover_us=HOST_COVER_US if timer.sleep_cycles else 0),
        "max_footprint_gb": round(max_footprint_bytes / 1e9, 1),
        "data": "standard-normal inputs (fp8 KV: normal values cast to fp8, k_scale = v_scale = 1); "
                "paged KV pages in random order; sampling probs = softmax(3 * normal logits)",
        "notes": notes,
    }


def load_libraries(use_peers):
    libraries = {"fi_core": peers.import_library("fi_core")}
    if use_peers:
        libraries["flashinfer"] = peers.import_library("flashinfer")
        libraries["torch"] = peers.Library("torch", module=torch, version=torch.__version__)
    else:
        libraries["flashinfer"] = peers.disabled_library("flashinfer", "disabled by --no-peers")
        libraries["torch"] = peers.disabled_library("torch", "disabled by --no-peers")
    return libraries


def run_suite(suite, args, libraries, timer, ceilings, meta, max_footprint_bytes):
    to_run, too_big = workloads.suite_workloads(suite, quick=args.quick, max_footprint_bytes=max_footprint_bytes)
    to_run = workloads.matching(to_run, args.filter)
    stem = report.result_stem(meta["date"], meta["gpu"], suite, quick=args.quick, filters=args.filter)
    paths = {ext: os.path.join(args.out, f"{stem}.{ext}") for ext in ("json", "md", "png")}
    payload = {"suite": suite, "quick": args.quick, "filters": list(args.filter), "meta": meta, "ceilings": ceilings,
               "skipped_for_memory": [f"{w.op} {w.label}" for w in too_big], "rows": []}
    started = time.perf_counter()
    print(f"\n== suite {suite}: {len(to_run)} workloads"
          + (f", {len(too_big)} left out for memory" if too_big else "") + f" -> {paths['md']}", flush=True)
    try:
        for index, workload in enumerate(to_run, 1):
            row_started = time.perf_counter()
            row = report.add_derived_figures(measure_workload(workload, libraries, timer), ceilings)
            row["elapsed_s"] = round(time.perf_counter() - row_started, 2)
            payload["rows"].append(row)
            print(progress_line(index, len(to_run), row), flush=True)
            # Checkpoint after every row so an interrupted run still leaves its numbers.
            report.write_json(payload, paths["json"])
            report.write_text(report.render_markdown(payload), paths["md"])
            report.update_latest(args.out)
    except FatalCudaError as exc:
        payload["rows"].append(report.add_derived_figures(exc.row, ceilings))  # with the error that killed it
        payload["aborted"] = str(exc)
        raise
    finally:
        if len(payload["rows"]) < len(to_run):
            payload["incomplete"] = f"{len(payload['rows'])} of {len(to_run)} workloads measured"
        report.write_json(payload, paths["json"])
        markdown = report.render_markdown(payload)
        report.write_text(markdown, paths["md"])
        if payload["rows"]:
            why_not = plot.plot_payload(payload, paths["png"])
            if why_not:
                print(f"(no plot: {why_not})", flush=True)
        report.update_latest(args.out)
        print(f"== suite {suite}: {len(payload['rows'])} of {len(to_run)} workloads measured in "
              f"{time.perf_counter() - started:.0f} s -> {paths['md']}", flush=True)
    return markdown


def exit_on_sigterm(signum, frame):
    # Turns `timeout`'s SIGTERM into SystemExit, so the finally blocks still write the plot and LATEST.md.
    sys.exit(128 + signum)


def run(suites, args):
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    settings = QUICK_TIMING if args.quick else FULL_TIMING
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    libraries = load_libraries(use_peers=not args.no_peers)
    for name, library in libraries.items():
        state = f"version {library.version}" if library.available else f"missing: {library.missing_reason}"
        print(f"{name}: {state}", flush=True)
    total_memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    max_footprint_bytes = min(workloads.MAX_FOOTPRINT_BYTES, int(0.75 * total_memory))
    timer = GpuTimer(settings)
    meta = collect_metadata(libraries, args, timer, max_footprint_bytes)
    print(f"GPU: {meta['gpu']}", flush=True)
    for note in meta["notes"]:
        print(f"note: {note}", flush=True)
    ceilings = measure_ceilings(timer)
    print("ceilings: copy " + (f"{ceilings['copy_tbps']:.2f} TB/s" if "copy_tbps" in ceilings
                               else ceilings.get("copy_error", "?"))
          + ", bf16 GEMM " + (f"{ceilings['gemm_tflops']:.0f} TFLOP/s" if "gemm_tflops" in ceilings
                              else ceilings.get("gemm_error", "?")), flush=True)

    tables = []
    status = 0
    for suite in suites:
        try:
            tables.append(run_suite(suite, args, libraries, timer, ceilings, meta, max_footprint_bytes))
        except FatalCudaError as exc:
            print(f"\nbench: stopping, {exc}", file=sys.stderr, flush=True)
            status = 1
            break
    print()
    for table in tables:
        print(table)
    return status

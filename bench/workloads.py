"""Workloads of every suite: their grids, FLOP and byte counts and GPU memory footprints.

Pure Python (no torch, no GPU) so that the CPU tests can check the counting against numbers
worked out by hand. Counting follows shared/ANCHORS.md:
  - attention FLOPs = 4 * S_q * S_kv * H_qo * D, halved for causal masks;
  - bytes = what must be read plus written once (decode: the K and V cache actually read,
    plus q and the output).
"""

import math
import random
from dataclasses import dataclass

# Bytes per element of the dtype names used in workload parameters.
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "int32": 4, "fp8_e4m3": 1, "fp8_e5m2": 1}

# How a row is judged: achieved bandwidth against the copy ceiling, achieved FLOP rate against
# the GEMM ceiling, or plain time (sampling, host-side planning) with no ceiling.
MEMORY_BOUND = "memory"
COMPUTE_BOUND = "compute"
LATENCY = "latency"

# Grid points whose inputs would not fit comfortably on an 80 GB card are left out.
MAX_FOOTPRINT_BYTES = 60 * 10**9

# Every float workspace handed to a plan/run wrapper (FlashInfer recommends 128 MB).
WORKSPACE_BYTES = 128 * 1024 * 1024

# The implementations measured for each op, in table-column order. The first is the subject
# (fi_core); the rest are fi_core variants and peers, each compared with the subject.
#   -tc:  use_tensor_cores=True;  -cc: use_tensor_cores=False (fi_core's default picks by group size);
#   -fa2: backend="fa2" (FlashInfer's default on H100 is FA3).
# The operator ops, by the inputs they take (the benchmark builds one kind of input per family).
NORM_OPS = ("rmsnorm", "gemma_rmsnorm")
FUSED_ADD_NORM_OPS = ("fused_add_rmsnorm", "gemma_fused_add_rmsnorm")
GELU_OPS = ("gelu_and_mul", "gelu_tanh_and_mul")
ACT_AND_MUL_OPS = ("silu_and_mul",) + GELU_OPS
ROPE_POS_IDS_OPS = ("apply_rope_pos_ids", "apply_llama31_rope_pos_ids")
ROPE_CACHE_OP = "apply_rope_with_cos_sin_cache"
OPERATOR_OPS = NORM_OPS + FUSED_ADD_NORM_OPS + ACT_AND_MUL_OPS + ROPE_POS_IDS_OPS + (ROPE_CACHE_OP,)

OP_IMPLEMENTATIONS = {
    "single_decode": ["fi_core", "flashinfer", "sdpa-flash", "sdpa-cudnn"],
    "batch_decode": ["fi_core", "fi_core-cc", "flashinfer", "flashinfer-tc"],
    "batch_decode_plan": ["fi_core", "flashinfer"],
    "single_prefill": ["fi_core", "fi_core-fa2", "flashinfer", "flashinfer-fa2", "sdpa-flash", "sdpa-cudnn"],
    "batch_prefill": ["fi_core", "fi_core-fa2", "flashinfer", "flashinfer-fa2"],
    **{op: ["fi_core", "flashinfer"] for op in OPERATOR_OPS},
    "top_p_sampling_from_probs": ["fi_core", "flashinfer", "torch-sort"],
    "top_k_top_p_sampling_from_probs": ["fi_core", "flashinfer", "torch-sort"],
}

SUBJECT = "fi_core"


@dataclass
class Workload:
    """One grid point: an op, its parameters, and what it costs."""

    op: str
    label: str
    params: dict
    bound: str
    flops: float = 0.0
    bytes: float = 0.0
    footprint_bytes: int = 0

    @property
    def implementations(self):
        return OP_IMPLEMENTATIONS[self.op]

    def key(self):
        """Identity of the grid point, independent of labels (lists become tuples)."""
        items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in self.params.items()))
        return (self.op, items)


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------

def attention_flops(qo_len, kv_len, num_qo_heads, head_dim, causal):
    """QK^T and PV, 2 FLOPs per multiply-add each: 4*Sq*Skv*H*D, halved under a causal mask."""
    flops = 4.0 * qo_len * kv_len * num_qo_heads * head_dim
    return flops / 2 if causal else flops


def decode_bytes(batch, kv_len, num_qo_heads, num_kv_heads, head_dim, kv_dtype, q_dtype="bf16"):
    """K and V read once for every request, q read and the output written once."""
    kv = 2 * batch * kv_len * num_kv_heads * head_dim * DTYPE_BYTES[kv_dtype]
    q_and_out = 2 * batch * num_qo_heads * head_dim * DTYPE_BYTES[q_dtype]
    return float(kv + q_and_out)


def prefill_bytes(qo_lens, num_qo_heads, num_kv_heads, head_dim, dtype="bf16"):
    """q, k, v read and the output written once (qo_len == kv_len for every request)."""
    tokens = sum(qo_lens)
    return float(tokens * head_dim * DTYPE_BYTES[dtype] * (2 * num_qo_heads + 2 * num_kv_heads))


def pages_for(kv_len, page_size):
    return -(-kv_len // page_size)


# ---------------------------------------------------------------------------------------------
# Workload constructors (one per op)
# ---------------------------------------------------------------------------------------------

def _heads_label(num_qo_heads, num_kv_heads):
    return f"h={num_qo_heads}/{num_kv_heads}"


def single_decode(kv_len, num_qo_heads, num_kv_heads, head_dim, kv_dtype):
    kv_bytes = 2 * kv_len * num_kv_heads * head_dim * DTYPE_BYTES[kv_dtype]
    return Workload(
        op="single_decode",
        label=f"kv={kv_len} {_heads_label(num_qo_heads, num_kv_heads)} d={head_dim} {kv_dtype}",
        params=dict(kv_len=kv_len, num_qo_heads=num_qo_heads, num_kv_heads=num_kv_heads,
                    head_dim=head_dim, kv_dtype=kv_dtype),
        bound=MEMORY_BOUND,
        flops=attention_flops(1, kv_len, num_qo_heads, head_dim, causal=False),
        bytes=decode_bytes(1, kv_len, num_qo_heads, num_kv_heads, head_dim, kv_dtype),
        # K and V, plus the outputs of four implementations kept for the output check.
        footprint_bytes=kv_bytes + 8 * num_qo_heads * head_dim * 2,
    )


def _paged_cache_bytes(batch, kv_len, num_kv_heads, head_dim, page_size, kv_dtype):
    num_pages = batch * pages_for(kv_len, page_size)
    return num_pages * 2 * page_size * num_kv_heads * head_dim * DTYPE_BYTES[kv_dtype]


def _batch_decode_point(batch, kv_len, num_qo_heads, num_kv_heads, head_dim, page_size, kv_dtype,
                        split_pages=None):
    """Label and parameters shared by the batch-decode kernel and plan() workloads. split_pages:
    plan(fixed_split_size=...) instead of the automatic split."""
    return dict(
        label=(f"B={batch} kv={kv_len} {_heads_label(num_qo_heads, num_kv_heads)} d={head_dim} "
               f"page={page_size} {kv_dtype}" + (f" split={split_pages}" if split_pages else "")),
        params=dict(batch=batch, kv_len=kv_len, num_qo_heads=num_qo_heads, num_kv_heads=num_kv_heads,
                    head_dim=head_dim, page_size=page_size, kv_dtype=kv_dtype, split_pages=split_pages),
    )


def batch_decode(batch, kv_len, num_qo_heads, num_kv_heads, head_dim, page_size, kv_dtype, split_pages=None):
    return Workload(
        op="batch_decode",
        **_batch_decode_point(batch, kv_len, num_qo_heads, num_kv_heads, head_dim, page_size, kv_dtype,
                              split_pages),
        bound=MEMORY_BOUND,
        flops=batch * attention_flops(1, kv_len, num_qo_heads, head_dim, causal=False),
        bytes=decode_bytes(batch, kv_len, num_qo_heads, num_kv_heads, head_dim, kv_dtype),
        footprint_bytes=(_paged_cache_bytes(batch, kv_len, num_kv_heads, head_dim, page_size, kv_dtype)
                         + len(OP_IMPLEMENTATIONS["batch_decode"]) * WORKSPACE_BYTES),
    )


def batch_decode_plan(batch, kv_len, num_qo_heads, num_kv_heads, head_dim, page_size, kv_dtype):
    """Host time of wrapper.plan(): on the serving loop's critical path, so timed on its own."""
    num_pages = batch * pages_for(kv_len, page_size)
    return Workload(
        op="batch_decode_plan",
        **_batch_decode_point(batch, kv_len, num_qo_heads, num_kv_heads, head_dim, page_size, kv_dtype),
        bound=LATENCY,
        footprint_bytes=4 * (num_pages + 2 * batch + 1) + 2 * WORKSPACE_BYTES,
    )


def single_prefill(seq_len, num_heads, head_dim, causal):
    io_bytes = prefill_bytes([seq_len], num_heads, num_heads, head_dim)
    num_implementations = len(OP_IMPLEMENTATIONS["single_prefill"])
    return Workload(
        op="single_prefill",
        label=f"S={seq_len} h={num_heads} d={head_dim} {'causal' if causal else 'non-causal'}",
        params=dict(seq_len=seq_len, num_heads=num_heads, head_dim=head_dim, causal=causal),
        bound=COMPUTE_BOUND,
        flops=attention_flops(seq_len, seq_len, num_heads, head_dim, causal),
        bytes=io_bytes,
        # q, k, v plus one output per implementation (kept for the output check).
        footprint_bytes=int(io_bytes * (3 + num_implementations) / 4),
    )


def uniform_lengths(num_requests, low, high, seed=0):
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(num_requests)]


def zipf_lengths(num_requests, longest, exponent=1.0, shortest=64, seed=0):
    """Rank-based Zipf profile (length ~ longest / rank^exponent), shuffled so the longest
    request does not always come first: one long request among many short ones is the case a
    scheduler must balance."""
    lengths = [max(shortest, round(longest / (rank ** exponent))) for rank in range(1, num_requests + 1)]
    random.Random(seed).shuffle(lengths)
    return lengths


def batch_prefill(distribution, qo_lens, num_qo_heads, num_kv_heads, head_dim, page_size, causal):
    """Paged prefill of a batch of fresh requests (qo_len == kv_len per request)."""
    flops = sum(attention_flops(n, n, num_qo_heads, head_dim, causal) for n in qo_lens)
    io_bytes = prefill_bytes(qo_lens, num_qo_heads, num_kv_heads, head_dim)
    cache = sum(_paged_cache_bytes(1, n, num_kv_heads, head_dim, page_size, "bf16") for n in qo_lens)
    num_implementations = len(OP_IMPLEMENTATIONS["batch_prefill"])
    q_bytes = sum(qo_lens) * num_qo_heads * head_dim * 2
    return Workload(
        op="batch_prefill",
        label=(f"{len(qo_lens)} req {distribution} ({sum(qo_lens)} tok, max {max(qo_lens)}) "
               f"{_heads_label(num_qo_heads, num_kv_heads)} d={head_dim} page={page_size} "
               f"{'causal' if causal else 'non-causal'}"),
        params=dict(distribution=distribution, qo_lens=list(qo_lens), num_qo_heads=num_qo_heads,
                    num_kv_heads=num_kv_heads, head_dim=head_dim, page_size=page_size, causal=causal),
        bound=COMPUTE_BOUND,
        flops=flops,
        bytes=io_bytes,
        footprint_bytes=cache + q_bytes * (1 + num_implementations) + num_implementations * WORKSPACE_BYTES,
    )


def rmsnorm(tokens, hidden, op="rmsnorm"):
    """rmsnorm or gemma_rmsnorm (the same traffic)."""
    io_bytes = float((2 * tokens * hidden + hidden) * 2)  # x read, out written, weight read
    return Workload(op=op, label=f"{tokens}x{hidden}", params=dict(tokens=tokens, hidden=hidden),
                    bound=MEMORY_BOUND, bytes=io_bytes, footprint_bytes=int(io_bytes * 2))


def fused_add_rmsnorm(tokens, hidden, op="fused_add_rmsnorm"):
    """fused_add_rmsnorm or its gemma form."""
    # In place: x and residual are both read and both written back, plus the weight.
    io_bytes = float((4 * tokens * hidden + hidden) * 2)
    return Workload(op=op, label=f"{tokens}x{hidden}",
                    params=dict(tokens=tokens, hidden=hidden),
                    bound=MEMORY_BOUND, bytes=io_bytes, footprint_bytes=int(io_bytes))


def silu_and_mul(tokens, intermediate, op="silu_and_mul"):
    """A gated activation: silu_and_mul, gelu_and_mul or gelu_tanh_and_mul."""
    # Input [tokens, 2*intermediate] read, output [tokens, intermediate] written.
    io_bytes = float(3 * tokens * intermediate * 2)
    return Workload(op=op, label=f"{tokens}x2*{intermediate}",
                    params=dict(tokens=tokens, intermediate=intermediate),
                    bound=MEMORY_BOUND, bytes=io_bytes, footprint_bytes=int(io_bytes * 2))


def apply_rope_pos_ids(tokens, num_qo_heads, num_kv_heads, head_dim, op="apply_rope_pos_ids"):
    """apply_rope_pos_ids, apply_llama31_rope_pos_ids or apply_rope_with_cos_sin_cache."""
    # q and k read, rotated q and k written, int32 positions read; cos/sin computed on the fly.
    io_bytes = float(2 * tokens * (num_qo_heads + num_kv_heads) * head_dim * 2 + 4 * tokens)
    if op == ROPE_CACHE_OP:
        # int64 positions, and each token's float32 row of the table (head_dim / 2 cos, then sin).
        io_bytes += 4 * tokens + 4 * tokens * head_dim
    return Workload(op=op,
                    label=f"{tokens} tok {_heads_label(num_qo_heads, num_kv_heads)} d={head_dim}",
                    params=dict(tokens=tokens, num_qo_heads=num_qo_heads, num_kv_heads=num_kv_heads,
                                head_dim=head_dim),
                    bound=MEMORY_BOUND, bytes=io_bytes, footprint_bytes=int(io_bytes * 2))


SAMPLING_TOP_P = 0.9
SAMPLING_TOP_K = 50
# Logits are standard normal times this, then softmax: a peaked, LLM-like distribution.
SAMPLING_LOGIT_SCALE = 3.0


def sampling(op, batch, vocab):
    params = dict(batch=batch, vocab=vocab, top_p=SAMPLING_TOP_P, logit_scale=SAMPLING_LOGIT_SCALE)
    label = f"B={batch} V={vocab} top_p={SAMPLING_TOP_P}"
    if op == "top_k_top_p_sampling_from_probs":
        params["top_k"] = SAMPLING_TOP_K
        label += f" top_k={SAMPLING_TOP_K}"
    probs_bytes = batch * vocab * 4
    return Workload(op=op, label=label, params=params, bound=LATENCY,
                    bytes=float(probs_bytes + batch * 4),
                    # probs, plus the sort-based peer's sorted copy, indices and cumsum.
                    footprint_bytes=probs_bytes * 5)


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------

KV_DTYPES = ["bf16", "fp8_e4m3"]
HEAD_DIMS = [64, 128, 256]

SINGLE_DECODE_KV_LENS = [512, 4096, 32768, 131072]
SINGLE_DECODE_HEADS = [(32, 32), (32, 8)]

BATCH_DECODE_BATCHES = [1, 8, 32, 128, 256]
BATCH_DECODE_KV_LENS = [512, 4096, 32768]
BATCH_DECODE_SPLIT_PAGES = [4, 16, 64]
BATCH_DECODE_HEADS = [(32, 32), (32, 8), (64, 8)]
PAGE_SIZES = [1, 16]
PLAN_BATCHES = [1, 8, 32, 128, 256]

SINGLE_PREFILL_SEQ_LENS = [1024, 4096, 8192, 16384]
SINGLE_PREFILL_HEADS = 32
BATCH_PREFILL_REQUESTS = 16
BATCH_PREFILL_HEADS = (32, 8)


def batch_prefill_lengths(distribution):
    if distribution == "uniform":
        return uniform_lengths(BATCH_PREFILL_REQUESTS, 512, 2048, seed=0)
    if distribution == "zipf":
        return zipf_lengths(BATCH_PREFILL_REQUESTS, longest=8192, exponent=1.0, seed=0)
    raise ValueError(f"unknown length distribution {distribution!r}")


OPERATOR_TOKENS = [1, 16, 128, 1024, 4096, 8192, 16384]
NORM_HIDDEN = [4096, 8192]
# Llama-3 8B and 70B MLP widths (hidden 4096 and 8192).
SILU_INTERMEDIATE = [14336, 28672]
ROPE_HEADS = [(32, 8), (64, 8)]
ROPE_HEAD_DIM = 128
# The siblings of apply_rope_pos_ids, measured at one head configuration.
OTHER_ROPE_OPS = ROPE_POS_IDS_OPS[1:] + (ROPE_CACHE_OP,)

SAMPLING_OPS = ["top_p_sampling_from_probs", "top_k_top_p_sampling_from_probs"]
SAMPLING_BATCHES = [1, 16, 64, 128, 256, 512]
SAMPLING_VOCABS = [32000, 128256, 151936]


def _single_decode_full():
    return [single_decode(kv, hq, hk, d, dt) for dt in KV_DTYPES for d in HEAD_DIMS
            for hq, hk in SINGLE_DECODE_HEADS for kv in SINGLE_DECODE_KV_LENS]


def _single_decode_quick():
    # The issue-2 acceptance points: bf16, d=128, 32/32 and 32/8 heads, kv 32768 and 131072.
    return [single_decode(kv, hq, hk, 128, "bf16") for hq, hk in [(32, 32), (32, 8)]
            for kv in [32768, 131072]]


def _batch_decode_full():
    grid = [batch_decode(b, kv, hq, hk, d, p, dt) for dt in KV_DTYPES for d in HEAD_DIMS
            for hq, hk in BATCH_DECODE_HEADS for p in PAGE_SIZES for kv in BATCH_DECODE_KV_LENS
            for b in BATCH_DECODE_BATCHES]
    # The ANCHORS point "B=16, kv 32768" lies outside the batch list.
    grid += [batch_decode(16, 32768, 32, 8, 128, p, "bf16") for p in PAGE_SIZES]
    # Small batches with fixed chunk lengths (plan's fixed_split_size, in pages of 16): where the
    # automatic split's fixed costs (chunks, partial states, merge) show, e.g. --filter split=.
    return grid + [batch_decode(b, kv, 32, 8, 128, 16, "bf16", split_pages=s) for b in [1, 8]
                   for kv in [4096, 32768] for s in BATCH_DECODE_SPLIT_PAGES]


def _batch_decode_quick():
    # ANCHORS points: the large-batch target, page 1 vs 16, B=16 long context, B=1 latency.
    return [
        batch_decode(128, 4096, 32, 8, 128, 16, "bf16"),
        batch_decode(128, 4096, 32, 8, 128, 1, "bf16"),
        batch_decode(16, 32768, 32, 8, 128, 16, "bf16"),
        batch_decode(1, 4096, 32, 8, 128, 16, "bf16"),
    ]


def _plan_full():
    return [batch_decode_plan(b, 4096, 32, 8, 128, p, "bf16") for p in PAGE_SIZES for b in PLAN_BATCHES]


def _plan_quick():
    return [batch_decode_plan(b, 4096, 32, 8, 128, 16, "bf16") for b in [32, 128, 256]]


def _prefill_full():
    single = [single_prefill(s, SINGLE_PREFILL_HEADS, d, c) for d in HEAD_DIMS for c in [False, True]
              for s in SINGLE_PREFILL_SEQ_LENS]
    hq, hk = BATCH_PREFILL_HEADS
    batched = [batch_prefill(dist, batch_prefill_lengths(dist), hq, hk, d, 16, True)
               for d in HEAD_DIMS for dist in ["uniform", "zipf"]]
    return single + batched


def _prefill_quick():
    hq, hk = BATCH_PREFILL_HEADS
    return ([single_prefill(s, SINGLE_PREFILL_HEADS, 128, c) for c in [False, True] for s in [4096, 16384]]
            + [batch_prefill(dist, batch_prefill_lengths(dist), hq, hk, 128, 16, True)
               for dist in ["uniform", "zipf"]])


def _operators_full():
    # The ops of the anchors over every size; their siblings (gemma norms, the GELU
    # activations, the other RoPE entry points) at one LLM shape each over the same token counts.
    return ([rmsnorm(t, h) for h in NORM_HIDDEN for t in OPERATOR_TOKENS]
            + [fused_add_rmsnorm(t, h) for h in NORM_HIDDEN for t in OPERATOR_TOKENS]
            + [silu_and_mul(t, i) for i in SILU_INTERMEDIATE for t in OPERATOR_TOKENS]
            + [apply_rope_pos_ids(t, hq, hk, ROPE_HEAD_DIM) for hq, hk in ROPE_HEADS
               for t in OPERATOR_TOKENS]
            + [rmsnorm(t, 8192, op="gemma_rmsnorm") for t in OPERATOR_TOKENS]
            + [fused_add_rmsnorm(t, 8192, op="gemma_fused_add_rmsnorm") for t in OPERATOR_TOKENS]
            + [silu_and_mul(t, 14336, op=op) for op in GELU_OPS for t in OPERATOR_TOKENS]
            + [apply_rope_pos_ids(t, 32, 8, ROPE_HEAD_DIM, op=op) for op in OTHER_ROPE_OPS
               for t in OPERATOR_TOKENS])


def _operators_quick():
    # The ANCHORS shapes, plus one tiny launch-bound rmsnorm.
    return [rmsnorm(8192, 8192), rmsnorm(16, 4096), fused_add_rmsnorm(8192, 8192),
            silu_and_mul(8192, 14336), apply_rope_pos_ids(16384, 32, 8, 128)]


def _sampling_full():
    return [sampling(op, b, v) for op in SAMPLING_OPS for v in SAMPLING_VOCABS for b in SAMPLING_BATCHES]


def _sampling_quick():
    return [sampling("top_p_sampling_from_probs", 128, 128256),
            sampling("top_k_top_p_sampling_from_probs", 128, 128256),
            sampling("top_p_sampling_from_probs", 1, 128256)]


# suite -> (full grid builder, quick grid builder). The decode suite holds single decode and the
# batched wrapper; batch_decode is the batched part on its own.
_SUITE_GRIDS = {
    "decode": (lambda: _single_decode_full() + _batch_decode_full() + _plan_full(),
               lambda: _single_decode_quick() + _batch_decode_quick() + _plan_quick()),
    "batch_decode": (lambda: _batch_decode_full() + _plan_full(),
                     lambda: _batch_decode_quick() + _plan_quick()),
    "prefill": (_prefill_full, _prefill_quick),
    "operators": (_operators_full, _operators_quick),
    "sampling": (_sampling_full, _sampling_quick),
}

SUITES = list(_SUITE_GRIDS)
# "all" runs every kernel family once (batch_decode is already inside decode).
ALL_SUITES = ["decode", "prefill", "operators", "sampling"]


def expand_suite_choice(choice):
    if choice == "all":
        return list(ALL_SUITES)
    if choice not in _SUITE_GRIDS:
        raise ValueError(f"unknown suite {choice!r}; choose from {SUITES + ['all']}")
    return [choice]


def suite_workloads(suite, quick=False, max_footprint_bytes=MAX_FOOTPRINT_BYTES):
    """The grid of a suite: (workloads to run, workloads left out because they would not fit)."""
    full_grid, quick_grid = _SUITE_GRIDS[suite]
    kept, too_big = [], []
    for workload in (quick_grid() if quick else full_grid()):
        (too_big if workload.footprint_bytes > max_footprint_bytes else kept).append(workload)
    return kept, too_big


def matching(workload_list, texts):
    """The workloads whose "op label" contains every one of texts (all of them for none)."""
    return [w for w in workload_list if all(text in f"{w.op} {w.label}" for text in texts)]


def footprint_gb(workload):
    return workload.footprint_bytes / 1e9


def describe(workload):
    """One line for --list."""
    return f"{workload.op:32s} {workload.label:60s} {math.ceil(footprint_gb(workload) * 10) / 10:6.1f} GB"

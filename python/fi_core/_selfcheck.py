"""GPU self-check and speed line of `python -m fi_core`: one decode against a float64 reference
on fresh random data, then one timed decode compared with the device copy bandwidth measured in
the same run. Uses PyTorch when importable, else CuPy."""

from __future__ import annotations

import math
import statistics

import numpy as np

from .decode import BatchDecodeWithPagedKVCacheWrapper, single_decode_with_kv_cache


class _Torch:
    name = "torch"

    def __init__(self):
        import torch
        self.torch = torch
        self.half = torch.bfloat16
        self.half_name = "bfloat16"
        self.float32 = torch.float32

    def randn(self, shape, seed):
        g = self.torch.Generator(device="cuda").manual_seed(seed)
        return self.torch.randn(shape, generator=g, device="cuda", dtype=self.half)

    def full(self, shape, value, dtype=None):
        return self.torch.full(shape, value, device="cuda", dtype=dtype or self.half)

    def to_numpy(self, x):
        return x.double().cpu().numpy()

    def gpu_name(self):
        return self.torch.cuda.get_device_name()

    def events(self):
        return self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)

    def synchronize(self):
        self.torch.cuda.synchronize()

    def empty_bytes(self, n):
        return self.torch.empty(n, dtype=self.torch.uint8, device="cuda")

    def copy(self, dst, src):
        dst.copy_(src)


class _Cupy:
    name = "cupy"

    def __init__(self):
        import cupy
        self.cupy = cupy
        self.half = cupy.float16  # CuPy has no bfloat16
        self.half_name = "float16"
        self.float32 = cupy.float32

    def randn(self, shape, seed):
        return self.cupy.random.default_rng(seed).standard_normal(shape, dtype=self.cupy.float32).astype(self.half)

    def full(self, shape, value, dtype=None):
        return self.cupy.full(shape, value, dtype=dtype or self.half)

    def to_numpy(self, x):
        return self.cupy.asnumpy(x).astype(np.float64)

    def gpu_name(self):
        return self.cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()

    def events(self):
        return self.cupy.cuda.Event(), self.cupy.cuda.Event()

    def synchronize(self):
        self.cupy.cuda.Device().synchronize()

    def empty_bytes(self, n):
        return self.cupy.empty(n, dtype=self.cupy.uint8)

    def copy(self, dst, src):
        dst[...] = src


def _backend():
    for make in (_Torch, _Cupy):
        try:
            return make()
        except ImportError:
            continue
    return None


def reference_decode(q, k, v, sm_scale):
    """float64 attention of q [H, D] over k, v [N, Hkv, D]; returns (out, base-2 lse)."""
    group = q.shape[0] // k.shape[1]
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    logits = np.einsum("hd,nhd->hn", q, k) * sm_scale
    m = logits.max(axis=1, keepdims=True)
    p = np.exp(logits - m)
    denom = p.sum(axis=1, keepdims=True)
    out = np.einsum("hn,nhd->hd", p / denom, v)
    lse = (m[:, 0] + np.log(denom[:, 0])) / math.log(2.0)
    return out, lse


def _time_ms(backend, fn, repeats, calls_per_sample=10):
    """Median GPU time of one call. Each sample times several back-to-back calls, so the GPU stays
    busy and host-side call overhead (which runs ahead asynchronously) is not counted."""
    samples = []
    for _ in range(repeats):
        start, stop = backend.events()
        start.record()
        for _ in range(calls_per_sample):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(_elapsed_ms(backend, start, stop) / calls_per_sample)
    return statistics.median(samples)


def _elapsed_ms(backend, start, stop):
    if backend.name == "torch":
        return start.elapsed_time(stop)
    return backend.cupy.cuda.get_elapsed_time(start, stop)


def _check_batch_decode(backend, head_dim) -> bool:
    """Batch decode of three requests over a paged cache with pages in random order."""
    kv_lens, page_size = [1, 4097, 300], 16
    pages = [-(-n // page_size) for n in kv_lens]
    indptr = np.concatenate([[0], np.cumsum(pages)]).astype(np.int32)
    indices = np.random.default_rng(0).permutation(int(indptr[-1]) + 5)[: indptr[-1]].astype(np.int32)
    last = np.array([n - (p - 1) * page_size for n, p in zip(kv_lens, pages)], dtype=np.int32)
    cache = backend.randn((int(indptr[-1]) + 5, 2, page_size, 8, head_dim), 6)
    q = backend.randn((len(kv_lens), 32, head_dim), 7)
    wrapper = BatchDecodeWithPagedKVCacheWrapper(backend.empty_bytes(64 << 20))
    wrapper.plan(indptr, indices, last, 32, 8, head_dim, page_size, q_data_type=backend.half_name)
    out = backend.to_numpy(wrapper.run(q, cache))
    cache_np, q_np = backend.to_numpy(cache), backend.to_numpy(q)
    worst = 0.0
    for b, n in enumerate(kv_lens):
        ids = indices[indptr[b]:indptr[b + 1]]
        k = cache_np[ids, 0].reshape(-1, 8, head_dim)[:n]
        v = cache_np[ids, 1].reshape(-1, 8, head_dim)[:n]
        ref, _ = reference_decode(q_np[b], k, v, 1 / math.sqrt(head_dim))
        worst = max(worst, float(np.linalg.norm(out[b] - ref) / np.linalg.norm(ref)))
    ok = bool(np.isfinite(out).all() and worst < 1e-2)
    kernel = "tensor cores" if wrapper.plan_info()["tensor_cores"] else "CUDA cores"
    print(f"self-check batch_decode {backend.half_name} d={head_dim} 32/8 heads, kv_len {kv_lens}, page "
          f"size {page_size} ({kernel}): worst relative error {worst:.2e} -> {'PASS' if ok else 'FAIL'}")
    return ok


def run(head_dims) -> bool:
    backend = _backend()
    if backend is None:
        print("GPU present, but neither PyTorch nor CuPy is importable to make arrays: self-check skipped")
        return True
    head_dim = 128 if 128 in head_dims else head_dims[0]
    print(f"GPU: {backend.gpu_name()} (arrays from {backend.name})")

    # Correctness: 32 query heads over 8 KV heads, a KV long enough to be split and merged.
    q, k, v = backend.randn((32, head_dim), 1), backend.randn((3001, 8, head_dim), 2), backend.randn((3001, 8, head_dim), 3)
    out = backend.full((32, head_dim), float("nan"))
    lse = backend.full((32,), float("nan"), dtype=backend.float32)
    single_decode_with_kv_cache(q, k, v, out=out, lse=lse)
    backend.synchronize()
    ref_out, ref_lse = reference_decode(backend.to_numpy(q), backend.to_numpy(k), backend.to_numpy(v), 1 / math.sqrt(head_dim))
    got_out, got_lse = backend.to_numpy(out), backend.to_numpy(lse)
    rel = float(np.linalg.norm(got_out - ref_out) / np.linalg.norm(ref_out))
    lse_err = float(np.max(np.abs(got_lse - ref_lse)))
    ok = bool(np.isfinite(got_out).all() and rel < 1e-2 and lse_err < 1e-2)
    print(f"self-check single_decode {backend.half_name} d={head_dim} 32/8 heads kv_len=3001: "
          f"relative error {rel:.2e}, lse error {lse_err:.2e} -> {'PASS' if ok else 'FAIL'}")
    ok = _check_batch_decode(backend, head_dim) and ok

    # Speed: a KV cache far larger than L2, against a device-to-device copy of 1 GiB.
    kv_len = 131072
    k, v = backend.randn((kv_len, 8, head_dim), 4), backend.randn((kv_len, 8, head_dim), 5)
    out = backend.full((32, head_dim), 0.0)
    decode = lambda: single_decode_with_kv_cache(q, k, v, out=out)
    decode()
    decode_ms = _time_ms(backend, decode, 20)
    src, dst = backend.empty_bytes(1 << 30), backend.empty_bytes(1 << 30)
    backend.copy(dst, src)
    copy_ms = _time_ms(backend, lambda: backend.copy(dst, src), 5)
    copy_tbs = 2 * (1 << 30) / copy_ms / 1e9
    decode_bytes = 2 * kv_len * 8 * head_dim * 2 + 2 * 32 * head_dim * 2
    decode_tbs = decode_bytes / decode_ms / 1e9
    print(f"speed single_decode {backend.half_name} d={head_dim} 32/8 heads kv_len={kv_len}: "
          f"{decode_ms * 1e3:.1f} us, {decode_tbs:.2f} TB/s = {decode_tbs / copy_tbs:.2f} of device copy "
          f"bandwidth ({copy_tbs:.2f} TB/s measured)")
    return ok

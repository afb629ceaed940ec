"""Framework adaptation: which framework an array belongs to, how to allocate outputs through it,
and which CUDA stream to launch on. The kernels see only DLPack arrays and a stream handle."""

from __future__ import annotations

import sys
from typing import Any, Optional, Sequence, Tuple

# DLPack device types (dlpack.h).
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_DEVICE_NAMES = {_DL_CPU: "the CPU", _DL_CUDA_HOST: "pinned host memory", 4: "OpenCL",
                 7: "Vulkan", 8: "Metal", 10: "ROCm"}
_FP8_NAMES = ("float8_e4m3fn", "float8_e5m2")


def cuda_device_of(x: Any, name: str) -> int:
    """CUDA device ordinal of a DLPack array; TypeError for anything else."""
    if not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__"):
        raise TypeError(
            f"{name}: expected a CUDA array supporting DLPack (torch.Tensor, cupy.ndarray, "
            f"jax.Array, ...), got {type(x).__module__}.{type(x).__qualname__}")
    device_type, device_id = x.__dlpack_device__()
    if int(device_type) not in (_DL_CUDA, _DL_CUDA_MANAGED):
        where = _DEVICE_NAMES.get(int(device_type), f"DLPack device type {int(device_type)}")
        raise TypeError(f"{name}: expected a CUDA array, got an array on {where}")
    return int(device_id)


class Framework:
    """A framework with no allocator or stream we know of: outputs must be passed in."""

    name = "DLPack"
    synchronize = False  # wait for the launch before returning

    def __init__(self, like: Any, device: int):
        self.like = like
        self.device = device

    def empty(self, shape: Sequence[int], dtype: Optional[str], arg: str) -> Any:
        raise TypeError(
            f"{arg}: fi_core cannot allocate arrays of type {type(self.like).__qualname__}; "
            f"pass {arg}= explicitly (or use torch, CuPy or JAX arrays)")

    def current_stream(self) -> int:
        return 0  # the legacy default stream

    def kernel_input(self, x: Any) -> Tuple[Any, Optional[str]]:
        """The object to hand to DLPack, and the fp8 format when x is fp8 viewed as bytes."""
        return x, None


class TorchFramework(Framework):
    name = "torch"

    def empty(self, shape, dtype, arg):
        import torch
        dt = self.like.dtype if dtype is None else getattr(torch, dtype)
        return torch.empty(tuple(shape), dtype=dt, device=self.like.device)

    def current_stream(self):
        import torch
        return torch.cuda.current_stream(self.like.device).cuda_stream

    def kernel_input(self, x):
        name = str(x.dtype).replace("torch.", "")
        if name in _FP8_NAMES:  # fp8 travels as bytes: DLPack export of fp8 varies by version
            import torch
            return x.view(torch.uint8), name
        return x, None


class CupyFramework(Framework):
    name = "cupy"

    def empty(self, shape, dtype, arg):
        import cupy
        with cupy.cuda.Device(self.device):
            return cupy.empty(tuple(shape), dtype=self.like.dtype if dtype is None else dtype)

    def current_stream(self):
        import cupy
        with cupy.cuda.Device(self.device):
            return cupy.cuda.get_current_stream().ptr


class JaxFramework(Framework):
    """JAX arrays are immutable and JAX exposes no stream outside jit: inputs are made ready first,
    fresh buffers are written once by the kernel, and the call waits for the kernel."""

    name = "jax"
    synchronize = True

    def empty(self, shape, dtype, arg):
        import jax.numpy as jnp
        out = jnp.empty(tuple(shape), dtype=self.like.dtype if dtype is None else dtype,
                        device=next(iter(self.like.devices())))
        return out.block_until_ready()

    def kernel_input(self, x):
        x.block_until_ready()
        name = str(x.dtype)
        if name in _FP8_NAMES:
            import jax
            import jax.numpy as jnp
            return jax.lax.bitcast_convert_type(x, jnp.uint8).block_until_ready(), name
        return x, None


def framework_of(x: Any, name: str) -> Framework:
    """The adapter for x's framework; TypeError unless x is a CUDA DLPack array."""
    device = cuda_device_of(x, name)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return TorchFramework(x, device)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return CupyFramework(x, device)
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return JaxFramework(x, device)
    return Framework(x, device)


def kernel_input(x: Any, name: str) -> Tuple[Any, Optional[str]]:
    """Checks that x is a CUDA array and returns what to hand to the kernels (see Framework)."""
    return framework_of(x, name).kernel_input(x)


def plain_input(x: Any, name: str, expected: str) -> Any:
    """kernel_input for an array that has no fp8 form: fp8 is rejected by name (it would reach the
    kernels as bytes and be reported as uint8). `expected` lists the dtypes for the message."""
    arr, fp8 = kernel_input(x, name)
    if fp8:
        raise TypeError(f"{name}: expected dtype {expected}, got {fp8}")
    return arr


def stream_handle(stream: Any, framework: Framework) -> int:
    """cudaStream_t as an integer: the `stream=` override, else the framework's current stream."""
    if stream is None:
        return framework.current_stream()
    for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    if isinstance(stream, int) and stream >= 0:
        return stream
    raise TypeError("stream: expected a torch.cuda.Stream, cupy.cuda.Stream or a cudaStream_t "
                    f"handle (int), got {type(stream).__qualname__}")


def host_int32(x: Any, name: str):
    """x (a CPU or CUDA array of any framework, or a sequence) as a C-contiguous numpy int32 array on
    the host. A CUDA array is copied to the host, which waits for the work that produces it."""
    import numpy as np
    if x is None:
        raise TypeError(f"{name}: expected an integer array, got None")
    torch = sys.modules.get("torch")
    cupy = sys.modules.get("cupy")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif cupy is not None and isinstance(x, cupy.ndarray):
        x = cupy.asnumpy(x)
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array (int32), got dtype {arr.dtype}")
    if arr.dtype != np.int32:
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{name}: expected values that fit in int32, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.int32)
    return np.ascontiguousarray(arr)


def dtype_name(dtype: Any, name: str) -> str:
    """The name of a framework dtype (torch.bfloat16, numpy/jax dtypes, or a string)."""
    if isinstance(dtype, str):
        text = dtype
    else:
        text = str(getattr(dtype, "name", None) or dtype)
    text = text.replace("torch.", "")
    aliases = {"half": "float16", "fp16": "float16", "bf16": "bfloat16", "float": "float32",
               "e4m3": "float8_e4m3fn", "float8_e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2"}
    text = aliases.get(text, text)
    known = ("float16", "bfloat16", "float32", "float8_e4m3fn", "float8_e5m2")
    if text not in known:
        raise TypeError(f"{name}: expected one of {', '.join(known)}, got {dtype!r}")
    return text


# attention_inputs' v when k holds both keys and values (a paged cache [pages, 2, ...]).
KV_IN_K = object()


def attention_inputs(q: Any, k: Any, v: Any, k_name: str = "k", v_name: str = "v"):
    """(framework of q, q, k, v, fp8 name of the KV or None) for an attention call: q must not be
    fp8; k and v share one dtype (fp8 travels as bytes, named by the last value). v is KV_IN_K
    when k holds both."""
    framework = framework_of(q, "q")
    q_in, q_fp8 = framework.kernel_input(q)
    if q_fp8:
        raise TypeError(f"q: expected dtype float16 or bfloat16, got {q_fp8}")
    k_in, k_fp8 = kernel_input(k, k_name)
    v_in, v_fp8 = (None, k_fp8) if v is KV_IN_K else kernel_input(v, v_name)
    if k_fp8 != v_fp8:
        raise TypeError(f"{v_name}: expected the dtype of {k_name} ({k_fp8 or 'not fp8'}), "
                        f"got {v_fp8 or 'not fp8'}")
    return framework, q_in, k_in, v_in, k_fp8


def attention_outputs(framework: Framework, q: Any, out: Any, lse: Any, return_lse: bool):
    """(out, lse, return_lse): out like q, and lse float32 of q's leading shape (all but head_dim)
    when asked for; given arrays are checked to be CUDA arrays and used as they are."""
    from ._options import optional_flag
    return_lse = optional_flag(return_lse, "return_lse") or lse is not None
    if out is None:
        out = framework.empty(q.shape, None, "out")
    else:
        framework_of(out, "out")
    if return_lse and lse is None:
        lse = framework.empty(tuple(q.shape[:-1]), "float32", "lse")
    elif lse is not None:
        framework_of(lse, "lse")
    return out, lse, return_lse

"""Every bad argument of the norms, gated activations and RoPE functions raises TypeError/ValueError
naming the argument, what was expected and what was given, before anything is launched; valid odd
shapes and strided views pass validation. Runs without a GPU: the arrays are fake CUDA arrays
(fake_arrays.py) whose memory is never touched. Also compiles a C++ translation unit that uses the
new headers and host API."""

import numpy as np
import pytest

import fi_core
from conftest import compile_cpp_example, nvcc_path
from fake_arrays import FakeCudaArray as Fake

NO_GPU = fi_core._C.cuda_device_count() == 0
FLOATS = "float16, bfloat16 or float32"


def expect(exc, fn, *fragments, **kwargs):
    with pytest.raises(exc) as info:
        fn(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def reaches_launch(fn, **kwargs):
    """Validation accepted the call: without a GPU it fails only at the CUDA launch."""
    if NO_GPU:
        with pytest.raises(RuntimeError, match="CUDA error"):
            fn(**kwargs)


# ---------------------------------------------------------------------------------------------
# Norms

NORMS = [fi_core.rmsnorm, fi_core.gemma_rmsnorm]
FUSED = [fi_core.fused_add_rmsnorm, fi_core.gemma_fused_add_rmsnorm]


def norm_call(fn, input=None, weight=None, out=None, **kwargs):
    input = Fake((4, 4096), "bfloat16") if input is None else input
    weight = Fake((input.shape[-1],), input.dtype) if weight is None else weight
    out = Fake(input.shape, input.dtype) if out is None else out
    return lambda **extra: fn(input, weight, out=out, **kwargs, **extra)


def fused_call(fn, input=None, residual=None, weight=None, **kwargs):
    input = Fake((4, 4096), "bfloat16") if input is None else input
    residual = Fake(input.shape, input.dtype) if residual is None else residual
    weight = Fake((input.shape[-1],), input.dtype) if weight is None else weight
    return lambda **extra: fn(input, residual, weight, **kwargs, **extra)


@pytest.mark.parametrize("fn", NORMS, ids=lambda f: f.__name__)
def test_norm_array_checks(fn):
    expect(TypeError, norm_call(fn, input=np.zeros((4, 64), np.float16)), "input: expected a CUDA array", "CPU")
    expect(TypeError, norm_call(fn, input=Fake((4, 64), "int32"), weight=Fake((64,), "int32"),
                                out=Fake((4, 64), "int32")),
           f"input: expected dtype {FLOATS}, got int32")
    expect(TypeError, norm_call(fn, input=Fake((4, 64), "float8_e4m3fn")),
           f"input: expected dtype {FLOATS}, got float8_e4m3fn")
    expect(TypeError, norm_call(fn, weight=Fake((4096,), "float16")), "weight: expected dtype bfloat16, got float16")
    expect(TypeError, norm_call(fn, out=Fake((4, 4096), "float32")), "out: expected dtype bfloat16, got float32")
    expect(ValueError, norm_call(fn, weight=Fake((4095,), "bfloat16")),
           "weight: expected shape [hidden_size] = (4096,), got (4095,)")
    expect(ValueError, norm_call(fn, out=Fake((4, 4095), "bfloat16")), "out: expected shape", "= (4, 4096), got (4, 4095)")
    expect(ValueError, norm_call(fn, input=Fake((4096,), "bfloat16"), out=Fake((4096,), "bfloat16")),
           "input: expected 2 dimensions [batch_size, hidden_size] or 3", "got 1 with shape (4096,)")
    expect(ValueError, norm_call(fn, input=Fake((2, 4, 64), strides=(512, 128, 2))),
           "input: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, norm_call(fn, weight=Fake((4096,), "bfloat16", strides=(2,))),
           "weight: expected a contiguous last dimension")
    expect(ValueError, norm_call(fn, weight=Fake((4096,), "bfloat16", device=1)),
           "weight: expected the device of input (cuda:0), got cuda:1")
    expect(ValueError, norm_call(fn, out=Fake((4, 4096), "bfloat16", device=2)), "out: expected the device of input")


@pytest.mark.parametrize("fn", NORMS, ids=lambda f: f.__name__)
def test_norm_option_checks(fn):
    expect(ValueError, norm_call(fn, eps=float("nan")), "eps: expected a finite number >= 0, got nan")
    expect(ValueError, norm_call(fn, eps=-1e-6), "eps: expected a finite number >= 0, got -1e-06")
    expect(TypeError, norm_call(fn, eps="1e-6"), "eps: expected a number or None, got str")
    expect(TypeError, norm_call(fn, enable_pdl=1), "enable_pdl: expected a bool, got int")
    expect(TypeError, lambda: fn(Fake((4, 64)), Fake((64,))), "out: fi_core cannot allocate arrays of type FakeCudaArray")


@pytest.mark.parametrize("fn", FUSED, ids=lambda f: f.__name__)
def test_fused_add_rmsnorm_checks(fn):
    expect(TypeError, fused_call(fn, residual=np.zeros((4, 4096), np.float32)), "residual: expected a CUDA array")
    expect(TypeError, fused_call(fn, residual=Fake((4, 4096), "float16")), "residual: expected dtype bfloat16, got float16")
    expect(ValueError, fused_call(fn, residual=Fake((5, 4096), "bfloat16")),
           "residual: expected shape", "= (4, 4096), got (5, 4096)")
    expect(ValueError, fused_call(fn, weight=Fake((2048,), "bfloat16")), "weight: expected shape [hidden_size] = (4096,)")
    expect(ValueError, fused_call(fn, residual=Fake((4, 4096), "bfloat16", device=1)),
           "residual: expected the device of input (cuda:0), got cuda:1")
    expect(ValueError, fused_call(fn, eps=float("inf")), "eps: expected a finite number >= 0, got inf")


@pytest.mark.parametrize("fn", NORMS, ids=lambda f: f.__name__)
def test_norm_accepts_odd_sizes_strided_rows_and_head_views(fn):
    # Odd hidden sizes, rows that break 16-byte alignment, [batch, heads, dim] views into a packed
    # QKV buffer, in place, float32: all valid.
    reaches_launch(norm_call(fn, input=Fake((3, 4095), "float16")))
    reaches_launch(norm_call(fn, input=Fake((3, 100), "bfloat16", strides=(4097, 1), misalign_bytes=2)))
    qkv_heads = Fake((5, 32, 128), "bfloat16", strides=(48 * 128, 128, 1))
    reaches_launch(norm_call(fn, input=qkv_heads, out=qkv_heads))
    reaches_launch(norm_call(fn, input=Fake((2, 7), "float32")))
    # No rows: nothing to launch, nothing to fail.
    empty = Fake((0, 64), "float16")
    assert norm_call(fn, input=empty, out=empty)() is empty


@pytest.mark.parametrize("fn", FUSED, ids=lambda f: f.__name__)
def test_fused_add_rmsnorm_accepts_strided_rows(fn):
    reaches_launch(fused_call(fn, input=Fake((3, 5120), "bfloat16", strides=(6000, 1)),
                              residual=Fake((3, 5120), "bfloat16", strides=(8192, 1))))


# ---------------------------------------------------------------------------------------------
# Gated activations

ACTIVATIONS = [fi_core.silu_and_mul, fi_core.gelu_and_mul, fi_core.gelu_tanh_and_mul]


def act_call(fn, input=None, out=None, **kwargs):
    input = Fake((4, 2 * 1024), "float16") if input is None else input
    out = Fake(input.shape[:-1] + (input.shape[-1] // 2,), input.dtype) if out is None else out
    return lambda **extra: fn(input, out=out, **kwargs, **extra)


@pytest.mark.parametrize("fn", ACTIVATIONS, ids=lambda f: f.__name__)
def test_activation_checks(fn):
    expect(TypeError, act_call(fn, input=np.zeros((4, 64), np.float16)), "input: expected a CUDA array")
    expect(TypeError, act_call(fn, input=Fake((4, 64), "int8")), f"input: expected dtype {FLOATS}, got int8")
    expect(ValueError, act_call(fn, input=Fake((4, 4095)), out=Fake((4, 2047))),
           "input: expected an even last dimension [..., 2 * d], got 4095")
    expect(ValueError, act_call(fn, out=Fake((4, 2048))), "out: expected shape [..., d] = (4, 1024), got (4, 2048)")
    expect(ValueError, act_call(fn, out=Fake((1024,))), "out: expected shape [..., d] = (4, 1024), got (1024,)")
    expect(TypeError, act_call(fn, out=Fake((4, 1024), "bfloat16")), "out: expected dtype float16, got bfloat16")
    expect(ValueError, act_call(fn, out=Fake((4, 1024), device=1)), "out: expected the device of input (cuda:0), got cuda:1")
    expect(ValueError, act_call(fn, input=Fake((4, 64), strides=(128, 2)), out=Fake((4, 32))),
           "input: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, act_call(fn, input=Fake(()), out=Fake(())), "input: expected at least 1 dimension")
    expect(TypeError, act_call(fn, enable_pdl="yes"), "enable_pdl: expected a bool, got str")
    expect(TypeError, lambda: fn(Fake((4, 64))), "out: fi_core cannot allocate arrays of type FakeCudaArray")


@pytest.mark.parametrize("fn", ACTIVATIONS, ids=lambda f: f.__name__)
def test_activation_leading_strides(fn):
    # Leading dimensions merge into at most two strided levels; three are rejected by name.
    three_levels = Fake((2, 3, 4, 64), strides=(10000, 1000, 100, 1))
    expect(ValueError, act_call(fn, input=three_levels),
           "input, out: expected leading dimensions that merge into at most two strided levels")
    reaches_launch(act_call(fn, input=Fake((2, 3, 4, 64), strides=(3000, 1000, 100, 1))))
    reaches_launch(act_call(fn, input=Fake((5, 2 * 4095), "bfloat16", strides=(9000, 1))))
    reaches_launch(act_call(fn, input=Fake((2 * 7,), "float32")))
    reaches_launch(act_call(fn, input=Fake((3, 2 * 13), "float16"), out=Fake((3, 13), "float16", strides=(16, 1))))


# ---------------------------------------------------------------------------------------------
# RoPE

NNZ, HQ, HK, D = 16, 8, 2, 128


def qk(dtype="float16", nnz=NNZ, d=D, hq=HQ, hk=HK):
    return Fake((nnz, hq, d), dtype), Fake((nnz, hk, d), dtype)


def rope_call(fn, q=None, k=None, positions=None, indptr=None, offsets=None, **kwargs):
    dq, dk = qk()
    q = dq if q is None else q
    k = dk if k is None else k
    if "pos_ids" in fn.__name__:
        pos = Fake((q.shape[0],), "int32") if positions is None else positions
        return lambda **extra: fn(q, k, pos, **kwargs, **extra)
    indptr = Fake((4,), "int32") if indptr is None else indptr
    offsets = Fake((3,), indptr.dtype) if offsets is None else offsets
    return lambda **extra: fn(q, k, indptr, offsets, **kwargs, **extra)


INPLACE_ROPES = [fi_core.apply_rope_inplace, fi_core.apply_rope_pos_ids_inplace,
                 fi_core.apply_llama31_rope_inplace, fi_core.apply_llama31_rope_pos_ids_inplace]
ALLOCATING_ROPES = [fi_core.apply_rope, fi_core.apply_rope_pos_ids, fi_core.apply_llama31_rope,
                    fi_core.apply_llama31_rope_pos_ids]


@pytest.mark.parametrize("fn", INPLACE_ROPES, ids=lambda f: f.__name__)
def test_rope_array_checks(fn):
    expect(TypeError, rope_call(fn, q=np.zeros((NNZ, HQ, D), np.float16)), "q: expected a CUDA array")
    expect(TypeError, rope_call(fn, q=Fake((NNZ, HQ, D), "int32")), f"q: expected dtype {FLOATS}, got int32")
    expect(TypeError, rope_call(fn, k=Fake((NNZ, HK, D), "bfloat16")), "k: expected dtype float16, got bfloat16")
    expect(ValueError, rope_call(fn, q=Fake((NNZ, HQ * D))), "q: expected 3 dimensions [nnz, num_heads, head_dim], got 2")
    expect(ValueError, rope_call(fn, k=Fake((NNZ - 1, HK, D))), f"k: expected shape[0] equal to nnz of q ({NNZ}), got {NNZ - 1}")
    expect(ValueError, rope_call(fn, k=Fake((NNZ, HK, 64))), "k: expected head_dim 128 (that of q), got 64")
    expect(ValueError, rope_call(fn, q=Fake((NNZ, HQ, D), strides=(HQ * D * 2, D * 2, 2))),
           "q: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, rope_call(fn, k=Fake((NNZ, HK, D), device=1)), "k: expected the device of q (cuda:0), got cuda:1")
    expect(ValueError, rope_call(fn, q=Fake((NNZ, HQ, 1024)), k=Fake((NNZ, HK, 1024))),
           "head_dim: expected at most 512, got 1024")


@pytest.mark.parametrize("fn", INPLACE_ROPES, ids=lambda f: f.__name__)
def test_rope_option_checks(fn):
    expect(ValueError, rope_call(fn, rotary_dim=129), "rotary_dim: expected an even number in [2, head_dim = 128], got 129")
    expect(ValueError, rope_call(fn, rotary_dim=130), "rotary_dim: expected an even number in [2, head_dim = 128], got 130")
    expect(ValueError, rope_call(fn, rotary_dim=0), "rotary_dim: expected a positive even number")
    expect(TypeError, rope_call(fn, rotary_dim=64.0), "rotary_dim: expected an int, got float")
    expect(ValueError, rope_call(fn, rope_theta=0.0), "rope_theta: expected a positive number, got 0")
    expect(ValueError, rope_call(fn, rope_scale=float("nan")), "rope_scale: expected a positive number, got nan")
    expect(TypeError, rope_call(fn, interleave="no"), "interleave: expected a bool, got str")
    if "llama31" in fn.__name__:
        expect(ValueError, rope_call(fn, low_freq_factor=4.0, high_freq_factor=4.0),
               "high_freq_factor: expected a number above low_freq_factor, got 4")
        expect(ValueError, rope_call(fn, old_context_len=0), "old_context_len: expected a positive number, got 0")
        expect(ValueError, rope_call(fn, low_freq_factor=-1.0), "low_freq_factor: expected a positive number, got -1")


@pytest.mark.parametrize("fn", [fi_core.apply_rope_pos_ids_inplace, fi_core.apply_llama31_rope_pos_ids_inplace],
                         ids=lambda f: f.__name__)
def test_rope_pos_ids_checks(fn):
    expect(TypeError, rope_call(fn, positions=Fake((NNZ,), "float32")), "pos_ids: expected dtype int32 or int64, got float32")
    expect(ValueError, rope_call(fn, positions=Fake((NNZ + 1,), "int64")), f"pos_ids: expected shape [nnz] = ({NNZ},), got ({NNZ + 1},)")
    expect(ValueError, rope_call(fn, positions=Fake((NNZ,), "int32", strides=(2,))), "pos_ids: expected a contiguous last dimension")
    expect(TypeError, rope_call(fn, positions=np.zeros(NNZ, np.int32)), "pos_ids: expected a CUDA array")


@pytest.mark.parametrize("fn", [fi_core.apply_rope_inplace, fi_core.apply_llama31_rope_inplace], ids=lambda f: f.__name__)
def test_rope_indptr_checks(fn):
    expect(TypeError, rope_call(fn, indptr=Fake((4,), "float16"), offsets=Fake((3,), "int32")),
           "indptr: expected dtype int32 or int64, got float16")
    expect(TypeError, rope_call(fn, offsets=Fake((3,), "int64")), "offsets: expected dtype int32, got int64")
    expect(ValueError, rope_call(fn, offsets=Fake((4,), "int32")), "offsets: expected shape [batch_size] = (3,), got (4,)")
    expect(ValueError, rope_call(fn, indptr=Fake((2, 2), "int32")), "indptr: expected shape [batch_size + 1], got (2, 2)")
    expect(ValueError, rope_call(fn, indptr=Fake((4,), "int32", device=1)), "indptr: expected the device of q (cuda:0), got cuda:1")


def test_rope_valid_calls_pass_validation():
    # Packed QKV views (token stride > heads * head_dim), partial rotary with odd halves, int64
    # positions, float32, head dims that are not multiples of 8.
    qkv = dict(q=Fake((NNZ, HQ, D), strides=((HQ + 2 * HK) * D, D, 1)),
               k=Fake((NNZ, HK, D), strides=((HQ + 2 * HK) * D, D, 1)))
    reaches_launch(rope_call(fi_core.apply_rope_pos_ids_inplace, **qkv, rotary_dim=24))
    reaches_launch(rope_call(fi_core.apply_rope_pos_ids_inplace, positions=Fake((NNZ,), "int64"), interleave=True))
    reaches_launch(rope_call(fi_core.apply_llama31_rope_inplace, q=Fake((NNZ, 4, 80), "float32"),
                             k=Fake((NNZ, 1, 80), "float32"), rotary_dim=32))
    reaches_launch(rope_call(fi_core.apply_rope_inplace, q=Fake((NNZ, 2, 6)), k=Fake((NNZ, 2, 6)), rotary_dim=2))


@pytest.mark.parametrize("fn", ALLOCATING_ROPES, ids=lambda f: f.__name__)
def test_rope_outputs_need_an_allocating_framework(fn):
    expect(TypeError, rope_call(fn), "q_rope: fi_core cannot allocate arrays of type FakeCudaArray")


def cache_call(fn, positions=None, query=None, key=None, head_size=D, cache=None, **kwargs):
    positions = Fake((NNZ,), "int64") if positions is None else positions
    query = Fake((NNZ, HQ * D), "bfloat16") if query is None else query
    key = Fake((NNZ, HK * D), "bfloat16") if key is None else key
    cache = Fake((4096, D), "float32") if cache is None else cache
    return lambda **extra: fn(positions, query, key, head_size, cache, **kwargs, **extra)


def test_rope_with_cos_sin_cache_checks():
    fn = fi_core.apply_rope_with_cos_sin_cache_inplace
    expect(TypeError, cache_call(fn, cache=Fake((4096, D), "float16")), "cos_sin_cache: expected dtype float32, got float16")
    expect(ValueError, cache_call(fn, cache=Fake((4096, D + 2), "float32")),
           "cos_sin_cache: expected shape [max_position, rotary_dim] with an even rotary_dim in [2, head_dim = 128], got (4096, 130)")
    expect(ValueError, cache_call(fn, cache=Fake((4096, 63), "float32")), "even rotary_dim", "got (4096, 63)")
    expect(ValueError, cache_call(fn, cache=Fake((4096,), "float32")), "cos_sin_cache: expected 2 dimensions [max_position, rotary_dim]")
    expect(ValueError, cache_call(fn, query=Fake((NNZ, 1000), "bfloat16")),
           "query: expected a last dimension that is a multiple of head_size (128), got 1000")
    expect(ValueError, cache_call(fn, query=Fake((NNZ, HQ, 64), "bfloat16")),
           "query: expected a last dimension equal to head_size (128), got 64")
    expect(TypeError, cache_call(fn, key=Fake((NNZ, HK * D), "float16")), "key: expected dtype bfloat16, got float16")
    expect(ValueError, cache_call(fn, key=Fake((NNZ + 1, HK * D), "bfloat16")), "key: expected shape[0] equal to nnz of q")
    expect(TypeError, cache_call(fn, positions=Fake((NNZ,), "float32")), "positions: expected dtype int32 or int64, got float32")
    expect(ValueError, cache_call(fn, positions=Fake((NNZ - 1,), "int64")), "positions: expected shape [nnz]")
    expect(ValueError, cache_call(fn, head_size=0), "head_size: expected a positive number, got 0")
    expect(TypeError, cache_call(fn, head_size=128.0), "head_size: expected an int, got float")
    expect(TypeError, cache_call(fi_core.apply_rope_with_cos_sin_cache),
           "query_out: fi_core cannot allocate arrays of type FakeCudaArray")
    # Partial rotary (cache narrower than the head), 3-D query/key, int32 positions: valid.
    reaches_launch(cache_call(fn, cache=Fake((4096, 64), "float32")))
    reaches_launch(cache_call(fn, query=Fake((NNZ, HQ, D), "bfloat16"), key=Fake((NNZ, HK, D), "bfloat16"),
                              positions=Fake((NNZ,), "int32"), is_neox=False))


# ---------------------------------------------------------------------------------------------
# C++: the header templates and the host API from a translation unit of an engine.

@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found: C++ header test skipped")
def test_cpp_translation_unit_uses_the_llm_op_headers(tmp_path):
    compile_cpp_example("llm_ops_example.cu", tmp_path)

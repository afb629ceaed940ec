"""Every bad single_decode_with_kv_cache argument raises TypeError/ValueError naming the argument,
what was expected and what was given, before anything is launched. Runs without a GPU: the arrays
are fake CUDA arrays (fake_arrays.py) whose memory is never touched."""

import numpy as np
import pytest

import fi_core
from fake_arrays import FakeCudaArray

HEAD_DIM = fi_core.build_info()["head_dims"][0]


def decode_args(num_qo_heads=8, num_kv_heads=2, kv_len=16, head_dim=HEAD_DIM, q_dtype="float16",
                kv_dtype="float16", layout="NHD"):
    kv_shape = (kv_len, num_kv_heads, head_dim) if layout == "NHD" else (num_kv_heads, kv_len, head_dim)
    return dict(
        q=FakeCudaArray((num_qo_heads, head_dim), q_dtype),
        k=FakeCudaArray(kv_shape, kv_dtype),
        v=FakeCudaArray(kv_shape, kv_dtype),
        out=FakeCudaArray((num_qo_heads, head_dim), q_dtype),
        kv_layout=layout,
    )


def call(**overrides):
    args = decode_args()
    args.update(overrides)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    return fi_core.single_decode_with_kv_cache(q, k, v, **args)


def expect(exc, *fragments, **overrides):
    with pytest.raises(exc) as info:
        call(**overrides)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def test_cpu_arrays_rejected():
    cpu = np.zeros((8, HEAD_DIM), np.float16)
    expect(TypeError, "q: expected a CUDA array", "CPU", q=cpu)
    kv_cpu = np.zeros((16, 2, HEAD_DIM), np.float16)
    expect(TypeError, "k: expected a CUDA array", k=kv_cpu)
    expect(TypeError, "out: expected a CUDA array", out=cpu)


def test_non_arrays_rejected():
    expect(TypeError, "q: expected a CUDA array supporting DLPack", "list", q=[[1.0]])
    expect(TypeError, "v: expected a CUDA array supporting DLPack", "NoneType", v=None)


def test_wrong_q_dtype():
    expect(TypeError, "q: expected dtype float16 or bfloat16, got float32",
           q=FakeCudaArray((8, HEAD_DIM), "float32"))


def test_wrong_kv_dtype():
    kv = FakeCudaArray((16, 2, HEAD_DIM), "int32")
    expect(TypeError, "k: expected dtype float16, bfloat16, float8_e4m3fn or float8_e5m2, got int32", k=kv)


def test_k_and_v_dtype_must_match():
    expect(TypeError, "v: expected dtype float16, got bfloat16",
           v=FakeCudaArray((16, 2, HEAD_DIM), "bfloat16"))


def test_out_dtype_must_match_q():
    expect(TypeError, "out: expected dtype float16, got bfloat16",
           out=FakeCudaArray((8, HEAD_DIM), "bfloat16"))


def test_wrong_rank():
    expect(ValueError, "q: expected 2 dimensions [num_qo_heads, head_dim], got 3",
           q=FakeCudaArray((1, 8, HEAD_DIM)))
    expect(ValueError, "k: expected 3 dimensions [kv_len, num_kv_heads, head_dim], got 2",
           k=FakeCudaArray((16, HEAD_DIM)))


def test_wrong_shapes():
    expect(ValueError, "k: expected shape [kv_len, num_kv_heads, head_dim]",
           k=FakeCudaArray((16, 2, HEAD_DIM // 2)), v=FakeCudaArray((16, 2, HEAD_DIM // 2)))
    expect(ValueError, "v: expected shape", f"(16, 2, {HEAD_DIM})", f"got (17, 2, {HEAD_DIM})",
           v=FakeCudaArray((17, 2, HEAD_DIM)))
    expect(ValueError, "out: expected shape [num_qo_heads, head_dim]", out=FakeCudaArray((4, HEAD_DIM)))


def test_group_size_must_divide():
    expect(ValueError, "num_qo_heads (q.shape[0] = 6)", "multiple of num_kv_heads (4)",
           q=FakeCudaArray((6, HEAD_DIM)), out=FakeCudaArray((6, HEAD_DIM)),
           k=FakeCudaArray((16, 4, HEAD_DIM)), v=FakeCudaArray((16, 4, HEAD_DIM)))


def test_head_dim_not_in_build_lists_the_build():
    built = fi_core.build_info()["head_dims"]
    missing = next(d for d in (32, 96, 160, 512) if d not in built)
    with pytest.raises(ValueError) as info:
        fi_core.single_decode_with_kv_cache(
            FakeCudaArray((8, missing)), FakeCudaArray((16, 2, missing)), FakeCudaArray((16, 2, missing)),
            out=FakeCudaArray((8, missing)))
    message = str(info.value)
    assert f"head_dim: {missing}" in message and "not in this build" in message
    assert ", ".join(str(d) for d in built) in message


def test_non_contiguous_last_dim():
    expect(ValueError, "q: expected a contiguous last dimension (stride 1), got stride 2",
           q=FakeCudaArray((8, HEAD_DIM), strides=(2 * HEAD_DIM, 2)))
    expect(ValueError, "v: expected a contiguous last dimension",
           v=FakeCudaArray((16, 2, HEAD_DIM), strides=(2 * HEAD_DIM * 3, HEAD_DIM * 3, 3)))


def test_strided_rows_are_accepted_by_validation_but_must_be_aligned():
    # A q that is every other row of a larger buffer passes validation (then fails only because
    # there is no GPU to run on, or runs); a misaligned one is rejected.
    expect(ValueError, "q: expected the data pointer and row strides aligned to 16 bytes",
           q=FakeCudaArray((8, HEAD_DIM), misalign_bytes=2))
    expect(ValueError, "k: expected the data pointer and row strides aligned to 16 bytes",
           k=FakeCudaArray((16, 2, HEAD_DIM), strides=(2 * HEAD_DIM + 1, HEAD_DIM, 1)))


def test_arrays_on_different_devices():
    expect(ValueError, "k: expected the device of q (cuda:0), got cuda:1",
           k=FakeCudaArray((16, 2, HEAD_DIM), device=1))
    expect(ValueError, "out: expected the device of q (cuda:0), got cuda:3",
           out=FakeCudaArray((8, HEAD_DIM), device=3))


def test_lse_checked():
    expect(TypeError, "lse: expected dtype float32, got float16", lse=FakeCudaArray((8,), "float16"))
    expect(ValueError, "lse: expected shape [num_qo_heads] = (8,), got (9,)", lse=FakeCudaArray((9,), "float32"))


def test_unknown_layout_and_pos_encoding():
    expect(ValueError, "kv_layout: expected one of 'NHD', 'HND', got 'NDH'", kv_layout="NDH")
    expect(ValueError, "pos_encoding_mode: expected one of 'NONE', 'ROPE_LLAMA', 'ALIBI', got 'ROPE'",
           pos_encoding_mode="ROPE")


def test_bad_scalar_options():
    expect(ValueError, "window_left: expected -1 (no window) or >= 0, got -2", window_left=-2)
    expect(ValueError, "logits_soft_cap: expected >= 0", logits_soft_cap=-1.0)
    expect(ValueError, "rope_theta: expected a positive number", rope_theta=0.0)
    expect(TypeError, "sm_scale: expected a number or None, got str", sm_scale="0.1")
    expect(TypeError, "window_left: expected an int, got float", window_left=1.5)


def test_fp8_q_rejected_by_name():
    expect(TypeError, "q: expected dtype float16 or bfloat16, got float8_e4m3fn",
           q=FakeCudaArray((8, HEAD_DIM), "float8_e4m3fn"))


def test_outputs_cannot_be_allocated_for_unknown_frameworks():
    args = decode_args()
    with pytest.raises(TypeError, match="out: fi_core cannot allocate arrays of type FakeCudaArray"):
        fi_core.single_decode_with_kv_cache(args["q"], args["k"], args["v"])


def test_hnd_layout_reads_heads_from_dim0():
    # HND with mismatched head counts is caught with the HND dimension names.
    with pytest.raises(ValueError, match=r"num_kv_heads \(3\)"):
        fi_core.single_decode_with_kv_cache(
            FakeCudaArray((8, HEAD_DIM)), FakeCudaArray((3, 16, HEAD_DIM)), FakeCudaArray((3, 16, HEAD_DIM)),
            kv_layout="HND", out=FakeCudaArray((8, HEAD_DIM)))


@pytest.mark.skipif(fi_core._C.cuda_device_count() > 0, reason="checks the no-GPU error path")
def test_valid_arguments_without_a_gpu_raise_cuda_runtime_error():
    with pytest.raises(RuntimeError, match="CUDA error"):
        call()

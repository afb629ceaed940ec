"""Every bad single_prefill_with_kv_cache argument raises TypeError/ValueError naming the argument,
what was expected and what was given, before anything is launched. Runs without a GPU: the arrays
are fake CUDA arrays (fake_arrays.py) whose memory is never touched."""

import numpy as np
import pytest

import fi_core
from fake_arrays import FakeCudaArray

HEAD_DIM = fi_core.build_info()["head_dims"][0]
QO_LEN, KV_LEN, HEADS, KV_HEADS = 5, 16, 8, 2


def prefill_args(qo_len=QO_LEN, kv_len=KV_LEN, num_qo_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                 q_dtype="float16", kv_dtype="float16", layout="NHD"):
    kv_shape = (kv_len, num_kv_heads, head_dim) if layout == "NHD" else (num_kv_heads, kv_len, head_dim)
    return dict(
        q=FakeCudaArray((qo_len, num_qo_heads, head_dim), q_dtype),
        k=FakeCudaArray(kv_shape, kv_dtype),
        v=FakeCudaArray(kv_shape, kv_dtype),
        out=FakeCudaArray((qo_len, num_qo_heads, head_dim), q_dtype),
        kv_layout=layout,
    )


def call(**overrides):
    args = prefill_args()
    args.update(overrides)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    return fi_core.single_prefill_with_kv_cache(q, k, v, **args)


def expect(exc, *fragments, **overrides):
    with pytest.raises(exc) as info:
        call(**overrides)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def test_exported_like_flashinfer():
    assert "single_prefill_with_kv_cache" in fi_core.__all__
    assert fi_core.single_prefill_with_kv_cache_return_lse.keywords == {"return_lse": True}


def test_cpu_and_non_arrays_rejected():
    expect(TypeError, "q: expected a CUDA array", "CPU", q=np.zeros((QO_LEN, HEADS, HEAD_DIM), np.float16))
    expect(TypeError, "k: expected a CUDA array", k=np.zeros((KV_LEN, KV_HEADS, HEAD_DIM), np.float16))
    expect(TypeError, "v: expected a CUDA array supporting DLPack", "NoneType", v=None)


def test_wrong_dtypes():
    expect(TypeError, "q: expected dtype float16 or bfloat16, got float32",
           q=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), "float32"))
    expect(TypeError, "k: expected dtype float16, bfloat16, float8_e4m3fn or float8_e5m2, got int32",
           k=FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), "int32"))
    expect(TypeError, "v: expected dtype float16, got bfloat16",
           v=FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), "bfloat16"))
    expect(TypeError, "out: expected dtype float16, got bfloat16",
           out=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), "bfloat16"))


def test_kv_dtype_must_be_q_dtype_or_fp8():
    kv = FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), "bfloat16")
    expect(ValueError, "k: expected the dtype of q (float16) or an fp8 dtype (float8_e4m3fn, float8_e5m2), "
           "got bfloat16", k=kv, v=kv)
    kv = FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), "float16")
    expect(ValueError, "k: expected the dtype of q (bfloat16) or an fp8 dtype", "got float16",
           q=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), "bfloat16"), out=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM),
                                                                                     "bfloat16"), k=kv, v=kv)
    # k and v share one dtype (fp8 or not), and q is never fp8.
    fp8 = FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), "float8_e4m3fn")
    expect(TypeError, "v: expected", "float8_e4m3fn", "got", "float16", k=fp8)
    expect(TypeError, "v: expected", "float8_e4m3fn", "got float8_e5m2", k=fp8,
           v=FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), "float8_e5m2"))
    expect(TypeError, "q: expected dtype float16 or bfloat16, got float8_e4m3fn",
           q=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), "float8_e4m3fn"))
    # The output is in q's dtype, not the KV's.
    expect(TypeError, "out: expected dtype float16, got uint8", k=fp8, v=fp8,
           out=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), "uint8"))


def test_wrong_rank_and_shapes():
    expect(ValueError, "q: expected 3 dimensions [qo_len, num_qo_heads, head_dim], got 2",
           q=FakeCudaArray((HEADS, HEAD_DIM)))
    expect(ValueError, "k: expected 3 dimensions [kv_len, num_kv_heads, head_dim], got 4",
           k=FakeCudaArray((1, KV_LEN, KV_HEADS, HEAD_DIM)))
    expect(ValueError, "k: expected shape [kv_len, num_kv_heads, head_dim]",
           k=FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM // 2)), v=FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM // 2)))
    expect(ValueError, "v: expected shape", f"got (17, 2, {HEAD_DIM})", v=FakeCudaArray((17, KV_HEADS, HEAD_DIM)))
    expect(ValueError, "out: expected shape [qo_len, num_qo_heads, head_dim]",
           out=FakeCudaArray((QO_LEN + 1, HEADS, HEAD_DIM)))


def test_qo_len_above_kv_len():
    expect(ValueError, "q: expected qo_len (q.shape[0]) <= kv_len (16), got 17",
           q=FakeCudaArray((17, HEADS, HEAD_DIM)), out=FakeCudaArray((17, HEADS, HEAD_DIM)))


def test_group_size_must_divide():
    expect(ValueError, "num_qo_heads: expected a positive multiple of num_kv_heads (4), got 6",
           q=FakeCudaArray((QO_LEN, 6, HEAD_DIM)), out=FakeCudaArray((QO_LEN, 6, HEAD_DIM)),
           k=FakeCudaArray((KV_LEN, 4, HEAD_DIM)), v=FakeCudaArray((KV_LEN, 4, HEAD_DIM)))


def test_hnd_layout_reads_heads_from_dim0():
    kv = FakeCudaArray((3, KV_LEN, HEAD_DIM))
    expect(ValueError, "multiple of num_kv_heads (3)", kv_layout="HND", k=kv, v=kv)
    expect(ValueError, "k: expected shape [num_kv_heads, kv_len, head_dim]", kv_layout="HND",
           k=FakeCudaArray((KV_HEADS, KV_LEN, HEAD_DIM // 2)), v=FakeCudaArray((KV_HEADS, KV_LEN, HEAD_DIM // 2)))


def test_head_dim_not_in_build_lists_the_build():
    built = fi_core.build_info()["head_dims"]
    missing = next(d for d in (32, 96, 160, 512) if d not in built)
    kv = FakeCudaArray((KV_LEN, KV_HEADS, missing))
    expect(ValueError, f"head_dim: {missing} (q.shape[2]) is not in this build; it has",
           ", ".join(str(d) for d in built),
           q=FakeCudaArray((QO_LEN, HEADS, missing)), k=kv, v=kv, out=FakeCudaArray((QO_LEN, HEADS, missing)))


def test_layout_and_alignment():
    expect(ValueError, "q: expected a contiguous last dimension (stride 1), got stride 2",
           q=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), strides=(2 * HEADS * HEAD_DIM, 2 * HEAD_DIM, 2)))
    expect(ValueError, "q: expected the data pointer and row strides aligned to 16 bytes",
           q=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), misalign_bytes=2))
    expect(ValueError, "v: expected the data pointer and row strides aligned to 16 bytes",
           v=FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), strides=(KV_HEADS * HEAD_DIM + 1, HEAD_DIM, 1)))


def test_arrays_on_different_devices():
    expect(ValueError, "k: expected the device of q (cuda:0), got cuda:1",
           k=FakeCudaArray((KV_LEN, KV_HEADS, HEAD_DIM), device=1))
    expect(ValueError, "out: expected the device of q (cuda:0), got cuda:2",
           out=FakeCudaArray((QO_LEN, HEADS, HEAD_DIM), device=2))


def test_lse_checked():
    expect(TypeError, "lse: expected dtype float32, got float16", lse=FakeCudaArray((QO_LEN, HEADS), "float16"))
    expect(ValueError, f"lse: expected shape [qo_len, num_qo_heads] = ({QO_LEN}, {HEADS}), got ({HEADS},)",
           lse=FakeCudaArray((HEADS,), "float32"))


MASK_BYTES = (QO_LEN * KV_LEN + 7) // 8  # 10


def test_packed_custom_mask_checked():
    expect(TypeError, "packed_custom_mask: expected a CUDA array", "CPU",
           packed_custom_mask=np.ones(MASK_BYTES, np.uint8))
    expect(TypeError, "packed_custom_mask: expected dtype uint8, got int32",
           packed_custom_mask=FakeCudaArray((MASK_BYTES,), "int32"))
    expect(ValueError, "packed_custom_mask: expected 10 bytes (ceil(qo_len * kv_len / 8) = ceil(5 * 16 / 8)), got 9",
           packed_custom_mask=FakeCudaArray((MASK_BYTES - 1,), "uint8"))
    expect(ValueError, "packed_custom_mask: expected 10 bytes", "got 11",
           packed_custom_mask=FakeCudaArray((MASK_BYTES + 1,), "uint8"))
    expect(ValueError, "packed_custom_mask: expected 1 dimensions [num_bytes], got 2 with shape (2, 5)",
           packed_custom_mask=FakeCudaArray((2, 5), "uint8"))
    expect(ValueError, "packed_custom_mask: expected 1 dimensions [num_bytes], got 0 with shape ()",
           packed_custom_mask=FakeCudaArray((), "uint8"))
    expect(ValueError, "packed_custom_mask: expected a contiguous array",
           packed_custom_mask=FakeCudaArray((MASK_BYTES,), "uint8", strides=(2,)))
    expect(ValueError, "packed_custom_mask: expected the device of q (cuda:0), got cuda:1",
           packed_custom_mask=FakeCudaArray((MASK_BYTES,), "uint8", device=1))
    # HND: kv_len from k.shape[1].
    kv = FakeCudaArray((KV_HEADS, 24, HEAD_DIM))
    expect(ValueError, "packed_custom_mask: expected 15 bytes (ceil(qo_len * kv_len / 8) = ceil(5 * 24 / 8)), got 10",
           kv_layout="HND", k=kv, v=kv, packed_custom_mask=FakeCudaArray((MASK_BYTES,), "uint8"))


def test_custom_mask_checked_before_packing():
    expect(TypeError, "custom_mask: expected a CUDA array", "CPU", custom_mask=np.ones((QO_LEN, KV_LEN), bool))
    expect(TypeError, "custom_mask: expected dtype bool, got uint8",
           custom_mask=FakeCudaArray((QO_LEN, KV_LEN), "uint8"))
    expect(ValueError, "custom_mask: expected shape [qo_len, kv_len] = (5, 16) or its flattened (80,), got (16, 5)",
           custom_mask=FakeCudaArray((KV_LEN, QO_LEN), "bool"))
    expect(ValueError, "custom_mask: expected shape", "got (79,)", custom_mask=FakeCudaArray((79,), "bool"))
    kv = FakeCudaArray((KV_HEADS, 24, HEAD_DIM))
    expect(ValueError, "custom_mask: expected shape [qo_len, kv_len] = (5, 24)", kv_layout="HND", k=kv, v=kv,
           custom_mask=FakeCudaArray((QO_LEN, KV_LEN), "bool"))
    # Packing needs the mask's framework (torch, CuPy or JAX) to allocate the bits.
    expect(TypeError, "custom_mask: fi_core packs boolean masks through their framework", "pass packed_custom_mask",
           custom_mask=FakeCudaArray((QO_LEN, KV_LEN), "bool"))
    # q and k are checked first (the mask's shape depends on them).
    expect(ValueError, "q: expected 3 dimensions", q=FakeCudaArray((HEADS, HEAD_DIM)),
           custom_mask=FakeCudaArray((3, 3), "bool"))


def test_scales_and_rope_options():
    expect(ValueError, "k_scale: expected a finite number, got inf", k_scale=float("inf"))
    expect(ValueError, "v_scale: expected a finite number, got nan", v_scale=float("nan"))
    expect(TypeError, "k_scale: expected a number or None, got str", k_scale="2")
    expect(ValueError, "rope_scale: expected a positive number", pos_encoding_mode="ROPE_LLAMA", rope_scale=-1.0)
    expect(ValueError, "rope_theta: expected a positive number", pos_encoding_mode="ROPE_LLAMA",
           rope_theta=float("inf"))


def test_bad_options():
    expect(ValueError, "kv_layout: expected one of 'NHD', 'HND', got 'NDH'", kv_layout="NDH")
    expect(ValueError, "pos_encoding_mode: expected one of", pos_encoding_mode="ROPE")
    expect(ValueError, "window_left: expected -1 (no window) or >= 0, got -2", window_left=-2)
    expect(ValueError, "logits_soft_cap: expected >= 0", logits_soft_cap=-1.0)
    expect(ValueError, "sm_scale: expected a positive number", sm_scale=float("nan"))
    expect(ValueError, "rope_theta: expected a positive number", rope_theta=0.0)
    expect(TypeError, "window_left: expected an int, got float", window_left=1.5)
    expect(TypeError, "causal: expected a bool, got int", causal=1)
    expect(TypeError, "return_lse: expected a bool, got str", return_lse="yes")


def test_outputs_cannot_be_allocated_for_unknown_frameworks():
    args = prefill_args()
    with pytest.raises(TypeError, match="out: fi_core cannot allocate arrays of type FakeCudaArray"):
        fi_core.single_prefill_with_kv_cache(args["q"], args["k"], args["v"])
    with pytest.raises(TypeError, match="lse: fi_core cannot allocate"):
        fi_core.single_prefill_with_kv_cache_return_lse(args["q"], args["k"], args["v"], out=args["out"])


@pytest.mark.skipif(fi_core._C.cuda_device_count() > 0, reason="checks the no-GPU error path")
def test_valid_arguments_without_a_gpu_raise_cuda_runtime_error():
    with pytest.raises(RuntimeError, match="CUDA error"):
        call(causal=True, window_left=3, logits_soft_cap=2.0, pos_encoding_mode="ALIBI")
    # RoPE on the fly and fp8 KV (with scales, on either 16-bit q) pass every check.
    with pytest.raises(RuntimeError, match="CUDA error"):
        call(causal=True, pos_encoding_mode="ROPE_LLAMA", rope_scale=2.0, rope_theta=5e5)
    for q_dtype in ("float16", "bfloat16"):
        for kv_dtype in ("float8_e4m3fn", "float8_e5m2"):
            args = prefill_args(q_dtype=q_dtype, kv_dtype=kv_dtype)
            with pytest.raises(RuntimeError, match="CUDA error"):
                call(q=args["q"], out=args["out"], k=args["k"], v=args["v"], k_scale=0.5, v_scale=2.0,
                     pos_encoding_mode="ROPE_LLAMA")
    # k_scale / v_scale are accepted with 16-bit KV too (FlashInfer applies them to any KV).
    with pytest.raises(RuntimeError, match="CUDA error"):
        call(k_scale=0.5, v_scale=2.0)
    # A packed mask passes every check; it wins over custom_mask, which is then not looked at.
    with pytest.raises(RuntimeError, match="CUDA error"):
        call(causal=True, window_left=3, packed_custom_mask=FakeCudaArray((MASK_BYTES,), "uint8"),
             custom_mask=np.zeros(3, np.int64))


def test_backend_argument():
    # FlashInfer's backend="fa3" picks a kernel fi_core does not have: an error, not a silent FA2.
    expect(ValueError, "backend: expected 'auto' or 'fa2'", "got 'fa3'", backend="fa3")
    expect(ValueError, "backend: expected 'auto' or 'fa2'", "got None", backend=None)

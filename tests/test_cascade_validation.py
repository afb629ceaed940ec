"""Every bad argument of merge_state, merge_state_in_place and merge_states raises
TypeError/ValueError naming the argument (as the caller's API names it), what was expected and what
was given, before anything is launched; odd head dims, strided and in-place calls pass validation.
Runs without a GPU: the arrays are fake CUDA arrays (fake_arrays.py) whose memory is never
touched."""

import numpy as np
import pytest

import fi_core
from fake_arrays import FakeCudaArray as Fake, expect, reaches_launch

V_DTYPES = "float16, bfloat16 or float32"
SEQ, STATES, HEADS, DIM = 7, 3, 4, 128
V_DIMS = "[seq_len, num_heads, head_dim]"
S_DIMS = "[seq_len, num_heads]"


def v_arr(dtype="float16", shape=(SEQ, HEADS, DIM), **kw):
    return Fake(shape, dtype, **kw)


def s_arr(shape=(SEQ, HEADS), dtype="float32", **kw):
    return Fake(shape, dtype, **kw)


# The two-state merges; each builder takes its function's own argument names, which the messages
# must use.
def merge_call(v_a=None, s_a=None, v_b=None, s_b=None, out=None, lse=None):
    v_a = v_arr() if v_a is None else v_a
    args = [v_a, s_arr() if s_a is None else s_a, v_arr(v_a.dtype) if v_b is None else v_b,
            s_arr() if s_b is None else s_b]
    out = v_arr(v_a.dtype) if out is None else out
    lse = s_arr() if lse is None else lse
    return lambda: fi_core.merge_state(*args, out=out, lse=lse)


def in_place_call(v=None, s=None, v_other=None, s_other=None, mask=None):
    v = v_arr() if v is None else v
    args = [v, s_arr() if s is None else s, v_arr(v.dtype) if v_other is None else v_other,
            s_arr() if s_other is None else s_other]
    return lambda: fi_core.merge_state_in_place(*args, mask=mask)


TWO_STATE = [
    ("merge_state", merge_call, ("v_a", "s_a", "v_b", "s_b")),
    ("merge_state_in_place", in_place_call, ("v", "s", "v_other", "s_other")),
]


@pytest.mark.parametrize("call,names", [t[1:] for t in TWO_STATE], ids=[t[0] for t in TWO_STATE])
def test_two_state_checks(call, names):
    v, s, v2, s2 = names
    kw = lambda name, value: {name: value}  # noqa: E731
    expect(TypeError, call(**kw(v, np.zeros((SEQ, HEADS, DIM), np.float16))), f"{v}: expected a CUDA array", "CPU")
    expect(TypeError, call(**kw(v, v_arr("int32"))), f"{v}: expected dtype {V_DTYPES}, got int32")
    expect(TypeError, call(**kw(v, v_arr("float8_e4m3fn"))), f"{v}: expected dtype {V_DTYPES}, got float8_e4m3fn")
    expect(ValueError, call(**kw(v, v_arr(shape=(SEQ, HEADS * DIM)))),
           f"{v}: expected 3 dimensions {V_DIMS}, got 2 with shape ({SEQ}, {HEADS * DIM})")
    expect(ValueError, call(**kw(v, v_arr(shape=(SEQ, HEADS, 0)))), f"{v}: expected a head_dim in [1, 2^31), got shape ({SEQ}, {HEADS}, 0)")
    expect(ValueError, call(**kw(v, v_arr(strides=(HEADS * DIM * 2, DIM * 2, 2)))),
           f"{v}: expected a contiguous last dimension (stride 1), got stride 2")
    expect(TypeError, call(**kw(s, s_arr(dtype="float16"))), f"{s}: expected dtype float32, got float16")
    expect(ValueError, call(**kw(s, s_arr((SEQ, HEADS, 1)))), f"{s}: expected shape {S_DIMS} = ({SEQ}, {HEADS}), got ({SEQ}, {HEADS}, 1)")
    expect(ValueError, call(**kw(s, s_arr(device=1))), f"{s}: expected the device of {v} (cuda:0), got cuda:1")
    expect(TypeError, call(**kw(v2, v_arr("bfloat16"))), f"{v2}: expected dtype float16, got bfloat16")
    expect(ValueError, call(**kw(v2, v_arr(shape=(SEQ + 1, HEADS, DIM)))),
           f"{v2}: expected shape {V_DIMS} = ({SEQ}, {HEADS}, {DIM}), got ({SEQ + 1}, {HEADS}, {DIM})")
    expect(ValueError, call(**kw(v2, v_arr(device=2))), f"{v2}: expected the device of {v} (cuda:0), got cuda:2")
    expect(ValueError, call(**kw(s2, s_arr((HEADS, SEQ)))), f"{s2}: expected shape {S_DIMS} = ({SEQ}, {HEADS}), got ({HEADS}, {SEQ})")
    expect(TypeError, call(**kw(s2, [0.0])), f"{s2}: expected a CUDA array supporting DLPack")


def test_merge_state_output_checks():
    expect(TypeError, merge_call(out=v_arr("float32")), "out: expected dtype float16, got float32")
    expect(ValueError, merge_call(out=v_arr(shape=(SEQ, HEADS, DIM // 2))), f"out: expected shape {V_DIMS} = ({SEQ}, {HEADS}, {DIM})")
    expect(ValueError, merge_call(out=v_arr(strides=(HEADS * DIM * 2, DIM * 2, 2))), "out: expected a contiguous last dimension")
    expect(TypeError, merge_call(lse=s_arr(dtype="float64")), "lse: expected dtype float32, got float64")
    expect(ValueError, merge_call(lse=s_arr(device=1)), "lse: expected the device of v_a (cuda:0), got cuda:1")
    expect(TypeError, lambda: fi_core.merge_state(v_arr(), s_arr(), v_arr(), s_arr()),
           "out: fi_core cannot allocate arrays of type FakeCudaArray")


def test_merge_state_in_place_mask_checks():
    expect(TypeError, in_place_call(mask=Fake((SEQ,), "int32")), "mask: expected dtype bool or uint8, got int32")
    expect(ValueError, in_place_call(mask=Fake((SEQ + 1,), "uint8")), f"mask: expected shape [seq_len] = ({SEQ},), got ({SEQ + 1},)")
    expect(TypeError, in_place_call(mask=np.ones(SEQ, np.bool_)), "mask: expected a CUDA array")
    expect(ValueError, in_place_call(mask=Fake((SEQ,), "uint8", device=1)), "mask: expected the device of v (cuda:0), got cuda:1")


def test_two_state_valid_calls_pass_validation():
    # Odd head dims, float32, strided rows and heads (views into wider buffers, misaligned), s
    # with any strides, a strided uint8 mask, in place into v_a.
    reaches_launch(merge_call(v_a=v_arr("float32", shape=(SEQ, HEADS, 7)), v_b=v_arr("float32", shape=(SEQ, HEADS, 7)),
                              out=v_arr("float32", shape=(SEQ, HEADS, 7))))
    wide = dict(shape=(SEQ, HEADS, 100), strides=(HEADS * 300, 300, 1), misalign_bytes=2)
    reaches_launch(merge_call(v_a=v_arr("bfloat16", **wide), v_b=v_arr("bfloat16", **wide),
                              out=v_arr("bfloat16", shape=(SEQ, HEADS, 100)), s_a=s_arr(strides=(1, SEQ))))
    v, s = v_arr(), s_arr()
    reaches_launch(lambda: fi_core.merge_state(v, s, v_arr(), s_arr(), out=v, lse=s))
    reaches_launch(in_place_call(mask=Fake((SEQ,), "uint8", strides=(4,))))
    # No rows: nothing to launch, nothing to fail.
    empty_v, empty_s = v_arr(shape=(0, HEADS, DIM)), s_arr((0, HEADS))
    assert fi_core.merge_state_in_place(empty_v, empty_s, empty_v, empty_s) is None


def states_call(v=None, s=None, out=None, lse=None):
    v = Fake((SEQ, STATES, HEADS, DIM), "bfloat16") if v is None else v
    s = s_arr((SEQ, STATES, HEADS)) if s is None else s
    out = Fake((SEQ, HEADS, v.shape[-1]), v.dtype) if out is None else out
    lse = s_arr() if lse is None else lse
    return lambda: fi_core.merge_states(v, s, out=out, lse=lse)


def test_merge_states_checks():
    four_dims = "[seq_len, num_states, num_heads, head_dim]"
    expect(TypeError, states_call(v=np.zeros((SEQ, STATES, HEADS, DIM), np.float32)), "v: expected a CUDA array")
    expect(TypeError, states_call(v=Fake((SEQ, STATES, HEADS, DIM), "int8")), f"v: expected dtype {V_DTYPES}, got int8")
    expect(ValueError, states_call(v=Fake((SEQ, HEADS, DIM))), f"v: expected 4 dimensions {four_dims}, got 3")
    for head_dim in (4, 100, 24, 2048):
        expect(ValueError, states_call(v=Fake((SEQ, STATES, HEADS, head_dim))),
               f"v: expected head_dim 8 x a power of two up to 1024 (8, 16, 32, 64, 128, 256, 512 or 1024), got {head_dim}")
    expect(ValueError, states_call(v=Fake((SEQ, STATES, HEADS, DIM), strides=(STATES * HEADS * 136, HEADS * 136, 132, 1))),
           "v: expected the data pointer and row strides aligned to 16 bytes, got a misaligned view")
    expect(ValueError, states_call(v=Fake((SEQ, STATES, HEADS, DIM), misalign_bytes=8)), "v: expected the data pointer and row strides aligned to 16 bytes")
    expect(TypeError, states_call(s=s_arr((SEQ, STATES, HEADS), "bfloat16")), "s: expected dtype float32, got bfloat16")
    expect(ValueError, states_call(s=s_arr((SEQ, HEADS))),
           f"s: expected shape [seq_len, num_states, num_heads] = ({SEQ}, {STATES}, {HEADS}), got ({SEQ}, {HEADS})")
    expect(TypeError, states_call(out=Fake((SEQ, HEADS, DIM), "float16")), "out: expected dtype bfloat16, got float16")
    expect(ValueError, states_call(out=Fake((SEQ, STATES, HEADS, DIM), "bfloat16")), f"out: expected shape {V_DIMS} = ({SEQ}, {HEADS}, {DIM})")
    expect(ValueError, states_call(out=Fake((SEQ, HEADS, DIM), "bfloat16", misalign_bytes=2)), "out: expected the data pointer and row strides aligned to 16 bytes")
    expect(ValueError, states_call(lse=s_arr((SEQ, HEADS + 1))), f"lse: expected shape {S_DIMS} = ({SEQ}, {HEADS}), got ({SEQ}, {HEADS + 1})")
    expect(ValueError, states_call(lse=s_arr(device=1)), "lse: expected the device of v (cuda:0), got cuda:1")
    expect(TypeError, lambda: fi_core.merge_states(Fake((SEQ, STATES, HEADS, DIM)), s_arr((SEQ, STATES, HEADS))),
           "out: fi_core cannot allocate arrays of type FakeCudaArray")


def test_merge_states_valid_calls_pass_validation():
    # Every supported head dim and dtype; the split-KV layout [states, seq, ...] seen through a
    # permuted view; s with any strides.
    for head_dim in (8, 16, 64, 256, 1024):
        for dtype in ("float16", "bfloat16", "float32"):
            reaches_launch(states_call(v=Fake((SEQ, STATES, HEADS, head_dim), dtype)))
    permuted = Fake((SEQ, STATES, HEADS, DIM), strides=(HEADS * DIM, SEQ * HEADS * DIM, DIM, 1))
    reaches_launch(states_call(v=permuted, s=s_arr((SEQ, STATES, HEADS), strides=(1, SEQ, SEQ * STATES)),
                               out=Fake((SEQ, HEADS, DIM))))
    reaches_launch(states_call(v=Fake((SEQ, 1, HEADS, DIM)), s=s_arr((SEQ, 1, HEADS)), out=Fake((SEQ, HEADS, DIM))))

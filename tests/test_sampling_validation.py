"""Every bad argument of the sampling and renormalization functions raises TypeError/ValueError
naming the argument, what was expected and what was given, before anything is launched; valid
calls (odd vocab sizes, strided rows, per-row arrays, indices) pass validation. Runs without a
GPU on fake CUDA arrays (fake_arrays.py) whose memory is never touched."""

import numpy as np
import pytest

import fi_core
from conftest import compile_cpp_example, nvcc_path
from fake_arrays import FakeCudaArray as Fake, expect, reaches_launch

BATCH, VOCAB = 4, 32001


def probs(shape=(BATCH, VOCAB), dtype="float32", **kw):
    return Fake(shape, dtype, **kw)


def samples(n=BATCH, dtype="int32", **kw):
    return Fake((n,), dtype, **kw)


# (function, its filter arguments) for every sampling entry point.
SAMPLERS = [
    (fi_core.sampling_from_probs, {}),
    (fi_core.top_p_sampling_from_probs, {"top_p": 0.9}),
    (fi_core.top_k_sampling_from_probs, {"top_k": 50}),
    (fi_core.min_p_sampling_from_probs, {"min_p": 0.1}),
    (fi_core.top_k_top_p_sampling_from_probs, {"top_k": 50, "top_p": 0.9}),
]
SAMPLER_IDS = [f.__name__ for f, _ in SAMPLERS]


def call(fn, filters, p=None, out=None, **kwargs):
    p = probs() if p is None else p
    out = samples(p.shape[0] if len(p.shape) else 0) if out is None else out
    args = {**filters, **kwargs}
    return lambda: fn(p, **args, out=out, seed=1, offset=0)


@pytest.mark.parametrize("fn,filters", SAMPLERS, ids=SAMPLER_IDS)
def test_probs_checks(fn, filters):
    expect(TypeError, call(fn, filters, p=np.zeros((BATCH, VOCAB), np.float32)),
           "probs: expected a CUDA array", "CPU")
    expect(TypeError, call(fn, filters, p=probs(dtype="float16")), "probs: expected dtype float32, got float16")
    expect(TypeError, call(fn, filters, p=probs(dtype="bfloat16")), "probs: expected dtype float32, got bfloat16")
    expect(ValueError, call(fn, filters, p=probs((VOCAB,)), out=samples(1)),
           "probs: expected 2 dimensions [batch_size, vocab_size], got 1 with shape (32001,)")
    expect(ValueError, call(fn, filters, p=probs((2, BATCH, VOCAB)), out=samples(2)),
           "probs: expected 2 dimensions", "got 3")
    expect(ValueError, call(fn, filters, p=probs((BATCH, 0))), "probs: expected a vocab_size in [1, 2^31), got 0")
    expect(ValueError, call(fn, filters, p=probs(strides=(2 * VOCAB, 2))),
           "probs: expected a contiguous last dimension (stride 1), got stride 2")


@pytest.mark.parametrize("fn,filters", SAMPLERS, ids=SAMPLER_IDS)
def test_output_and_indices_checks(fn, filters):
    expect(TypeError, call(fn, filters, out=samples(dtype="int64")), "samples: expected dtype int32, got int64")
    expect(ValueError, call(fn, filters, out=samples(BATCH + 1)),
           "samples: expected shape [batch_size] = (4,), got (5,)")
    expect(ValueError, call(fn, filters, out=samples(device=1)), "samples: expected the device of probs (cuda:0), got cuda:1")
    expect(TypeError, call(fn, filters, out=np.zeros(BATCH, np.int32)), "out: expected a CUDA array")
    expect(TypeError, call(fn, filters, indices=Fake((BATCH,), "float32")),
           "indices: expected dtype int32 or int64, got float32")
    expect(ValueError, call(fn, filters, indices=Fake((BATCH, 1), "int32")), "indices: expected 1 dimensions [batch_size]")
    expect(ValueError, call(fn, filters, indices=Fake((BATCH,), "int32", device=3)),
           "indices: expected the device of probs (cuda:0), got cuda:3")
    # With indices the batch is len(indices), not the rows of probs.
    expect(ValueError, call(fn, filters, indices=Fake((7,), "int64")), "samples: expected shape [batch_size] = (7,), got (4,)")
    reaches_launch(call(fn, filters, indices=Fake((7,), "int64"), out=samples(7)))


@pytest.mark.parametrize("fn,filters", SAMPLERS, ids=SAMPLER_IDS)
def test_option_checks(fn, filters):
    expect(TypeError, call(fn, filters, deterministic=1), "deterministic: expected a bool, got int")
    expect(TypeError, call(fn, filters, check_nan="yes"), "check_nan: expected a bool, got str")
    expect(TypeError, lambda: fn(probs(), **filters, seed=1.5), "seed: expected an int, got float")
    expect(ValueError, lambda: fn(probs(), **filters, seed=-1), "seed, offset: expected integers >= 0")
    expect(TypeError, lambda: fn(probs(), **filters, seed=1), "out: fi_core cannot allocate arrays of type FakeCudaArray")


def test_top_p_checks():
    fn = fi_core.top_p_sampling_from_probs
    for bad in (0.0, -0.1, 1.5, float("nan"), float("inf")):
        expect(ValueError, call(fn, {"top_p": bad}), "top_p: expected a number in (0, 1], got")
    expect(TypeError, call(fn, {"top_p": "0.9"}), "top_p: expected a number or a CUDA array, got str")
    expect(TypeError, call(fn, {"top_p": Fake((BATCH,), "float16")}), "top_p: expected dtype float32, got float16")
    expect(ValueError, call(fn, {"top_p": Fake((BATCH + 1,), "float32")}),
           "top_p: expected shape [batch_size] = (4,), got (5,)")
    expect(TypeError, call(fn, {"top_p": np.full(BATCH, 0.9, np.float32)}), "top_p: expected a CUDA array", "CPU")
    expect(ValueError, call(fn, {"top_p": Fake((BATCH,), "float32", device=1)}),
           "top_p: expected the device of probs (cuda:0), got cuda:1")
    reaches_launch(call(fn, {"top_p": 1.0}))
    reaches_launch(call(fn, {"top_p": 1e-7}))
    reaches_launch(call(fn, {"top_p": Fake((BATCH,), "float32")}))


def test_top_k_checks():
    fn = fi_core.top_k_sampling_from_probs
    expect(ValueError, call(fn, {"top_k": 0}), "top_k: expected an integer >= 1, got 0")
    expect(ValueError, call(fn, {"top_k": -5}), "top_k: expected an integer >= 1, got -5")
    expect(TypeError, call(fn, {"top_k": 5.0}), "top_k: expected an int, got float")
    expect(TypeError, call(fn, {"top_k": Fake((BATCH,), "int64")}), "top_k: expected dtype int32, got int64")
    expect(TypeError, call(fn, {"top_k": Fake((BATCH,), "float32")}), "top_k: expected dtype int32, got float32")
    expect(ValueError, call(fn, {"top_k": Fake((BATCH - 1,), "int32")}),
           "top_k: expected shape [batch_size] = (4,), got (3,)")
    expect(ValueError, call(fn, {"top_k": Fake((BATCH, 1), "int32")}), "top_k: expected shape [batch_size]")
    expect(ValueError, call(fn, {"top_k": Fake((BATCH,), "int32", device=2)}), "top_k: expected the device of probs")
    reaches_launch(call(fn, {"top_k": 1}))
    reaches_launch(call(fn, {"top_k": 10 * VOCAB}))  # >= vocab: keeps everything
    reaches_launch(call(fn, {"top_k": Fake((BATCH,), "int32")}))


def test_min_p_checks():
    fn = fi_core.min_p_sampling_from_probs
    for bad in (-0.1, 1.1, float("nan")):
        expect(ValueError, call(fn, {"min_p": bad}), "min_p: expected a number in [0, 1], got")
    expect(TypeError, call(fn, {"min_p": Fake((BATCH,), "int32")}), "min_p: expected dtype float32, got int32")
    expect(ValueError, call(fn, {"min_p": Fake((2,), "float32")}), "min_p: expected shape [batch_size] = (4,), got (2,)")
    reaches_launch(call(fn, {"min_p": 0.0}))
    reaches_launch(call(fn, {"min_p": Fake((BATCH,), "float32")}))


def test_top_k_top_p_checks():
    fn = fi_core.top_k_top_p_sampling_from_probs
    expect(ValueError, call(fn, {"top_k": 5, "top_p": 0.9, "filter_apply_order": "top_p_first"}),
           "filter_apply_order: expected 'top_k_first' or 'joint', got 'top_p_first'")
    expect(ValueError, call(fn, {"top_k": 0, "top_p": 0.9}), "top_k: expected an integer >= 1, got 0")
    expect(ValueError, call(fn, {"top_k": 5, "top_p": 2.0}), "top_p: expected a number in (0, 1], got 2")
    for order in ("top_k_first", "joint"):
        reaches_launch(call(fn, {"top_k": Fake((BATCH,), "int32"), "top_p": Fake((BATCH,), "float32"),
                                 "filter_apply_order": order}))


@pytest.mark.parametrize("fn,filters", SAMPLERS, ids=SAMPLER_IDS)
def test_valid_shapes_reach_launch(fn, filters):
    for vocab in (1, 7, 32000, 32001, 128256, 151936):
        reaches_launch(call(fn, filters, p=probs((3, vocab)), out=samples(3)))
    # Rows with a stride that breaks 16-byte alignment (scalar loads) are valid.
    reaches_launch(call(fn, filters, p=probs((3, 1000), strides=(1001, 1)), out=samples(3)))
    # No rows: nothing to launch, nothing to fail.
    out = samples(0)
    assert call(fn, filters, p=probs((0, VOCAB)), out=out)() is out


RENORMS = [(fi_core.top_p_renorm_probs, {"top_p": 0.9}), (fi_core.top_k_renorm_probs, {"top_k": 20})]


@pytest.mark.parametrize("fn,filters", RENORMS, ids=[f.__name__ for f, _ in RENORMS])
def test_renorm_checks(fn, filters):
    def renorm(p=None, out=None, **kw):
        p = probs() if p is None else p
        out = Fake(p.shape, "float32") if out is None else out
        return lambda: fn(p, **{**filters, **kw}, out=out)

    expect(TypeError, renorm(p=np.zeros((BATCH, VOCAB), np.float32)), "probs: expected a CUDA array")
    expect(TypeError, renorm(p=probs(dtype="float16"), out=Fake((BATCH, VOCAB), "float16")),
           "probs: expected dtype float32, got float16")
    expect(ValueError, renorm(p=probs((VOCAB,)), out=Fake((VOCAB,), "float32")), "probs: expected 2 dimensions")
    expect(TypeError, renorm(out=Fake((BATCH, VOCAB), "float16")), "out: expected dtype float32, got float16")
    expect(ValueError, renorm(out=Fake((BATCH, VOCAB - 1), "float32")),
           "out: expected shape [batch_size, vocab_size] = (4, 32001), got (4, 32000)")
    expect(ValueError, renorm(out=Fake((BATCH, VOCAB), "float32", device=1)), "out: expected the device of probs")
    expect(TypeError, lambda: fn(probs(), **filters), "out: fi_core cannot allocate arrays of type FakeCudaArray")
    if "top_p" in filters:
        expect(ValueError, renorm(top_p=0.0), "top_p: expected a number in (0, 1], got 0")
        expect(ValueError, renorm(top_p=Fake((3,), "float32")), "top_p: expected shape [batch_size] = (4,), got (3,)")
    else:
        expect(ValueError, renorm(top_k=0), "top_k: expected an integer >= 1, got 0")
        expect(TypeError, renorm(top_k=Fake((BATCH,), "int64")), "top_k: expected dtype int32, got int64")
    reaches_launch(renorm())
    p = probs((2, 151936))
    reaches_launch(renorm(p=p, out=p))  # in place


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found: C++ header test skipped")
def test_cpp_translation_unit_uses_the_sampling_header(tmp_path):
    compile_cpp_example("sampling_example.cu", tmp_path)


# ---- logits: sampling_from_logits, top_k_top_p_sampling_from_logits, top_k_mask_logits ----

LOGIT_SAMPLERS = [
    (fi_core.sampling_from_logits, {}),
    (fi_core.top_k_top_p_sampling_from_logits, {"top_k": 50, "top_p": 0.9}),
    (fi_core.top_k_top_p_sampling_from_logits, {"top_k": 50, "top_p": 0.9, "filter_apply_order": "joint"}),
]
LOGIT_SAMPLER_IDS = ["sampling_from_logits", "top_k_top_p_from_logits", "top_k_top_p_from_logits_joint"]


@pytest.mark.parametrize("fn,filters", LOGIT_SAMPLERS, ids=LOGIT_SAMPLER_IDS)
def test_logit_sampler_checks(fn, filters):
    expect(TypeError, call(fn, filters, p=np.zeros((BATCH, VOCAB), np.float32)), "logits: expected a CUDA array")
    expect(TypeError, call(fn, filters, p=probs(dtype="float64")),
           "logits: expected dtype float32, float16 or bfloat16, got float64")
    expect(TypeError, call(fn, filters, p=probs(dtype="float8_e4m3fn")),
           "logits: expected dtype float32, float16 or bfloat16, got float8_e4m3fn")
    expect(ValueError, call(fn, filters, p=probs((VOCAB,)), out=samples(1)),
           "logits: expected 2 dimensions [batch_size, vocab_size], got 1")
    expect(ValueError, call(fn, filters, p=probs((BATCH, 0))), "logits: expected a vocab_size in [1, 2^31), got 0")
    expect(ValueError, call(fn, filters, p=probs(strides=(2 * VOCAB, 2))),
           "logits: expected a contiguous last dimension (stride 1), got stride 2")
    expect(TypeError, call(fn, filters, out=samples(dtype="int64")), "samples: expected dtype int32, got int64")
    expect(ValueError, call(fn, filters, out=samples(BATCH + 1)), "samples: expected shape [batch_size] = (4,), got (5,)")
    expect(ValueError, call(fn, filters, indices=Fake((BATCH,), "int32", device=2)),
           "indices: expected the device of logits (cuda:0), got cuda:2")
    expect(TypeError, call(fn, filters, deterministic="no"), "deterministic: expected a bool, got str")
    for dtype in ("float32", "float16", "bfloat16"):
        for vocab in (1, 7, 32000, 32001, 128256, 151936):
            reaches_launch(call(fn, filters, p=probs((3, vocab), dtype=dtype), out=samples(3)))
    reaches_launch(call(fn, filters, indices=Fake((9,), "int64"), out=samples(9)))
    reaches_launch(call(fn, filters, p=probs((3, 1000), dtype="bfloat16", strides=(1001, 1)), out=samples(3)))


def test_top_k_top_p_from_logits_filter_checks():
    fn = fi_core.top_k_top_p_sampling_from_logits
    expect(ValueError, call(fn, {"top_k": 5, "top_p": 0.9, "filter_apply_order": "top_p_first"}),
           "filter_apply_order: expected 'top_k_first' or 'joint', got 'top_p_first'")
    expect(ValueError, call(fn, {"top_k": 0, "top_p": 0.9}), "top_k: expected an integer >= 1, got 0")
    expect(ValueError, call(fn, {"top_k": 5, "top_p": 0.0}), "top_p: expected a number in (0, 1], got 0")
    expect(TypeError, call(fn, {"top_k": Fake((BATCH,), "int64"), "top_p": 0.9}), "top_k: expected dtype int32, got int64")
    expect(ValueError, call(fn, {"top_k": 5, "top_p": Fake((BATCH + 2,), "float32")}),
           "top_p: expected shape [batch_size] = (4,), got (6,)")
    expect(ValueError, call(fn, {"top_k": Fake((BATCH,), "int32", device=1), "top_p": 0.9}),
           "top_k: expected the device of logits (cuda:0), got cuda:1")


def test_top_k_mask_logits_checks():
    fn = fi_core.top_k_mask_logits

    def mask(p=None, out=None, top_k=10):
        p = probs() if p is None else p
        out = Fake(p.shape, p.dtype) if out is None else out
        return lambda: fn(p, top_k, out=out)

    expect(TypeError, mask(p=np.zeros((BATCH, VOCAB), np.float32)), "logits: expected a CUDA array", "CPU")
    expect(TypeError, mask(p=probs(dtype="float64")), "logits: expected dtype float32, float16 or bfloat16, got float64")
    expect(TypeError, mask(p=probs(dtype="int32")), "logits: expected dtype float32, float16 or bfloat16, got int32")
    expect(ValueError, mask(p=probs((VOCAB,))), "logits: expected 2 dimensions [batch_size, vocab_size], got 1")
    expect(ValueError, mask(p=probs((BATCH, 0))), "logits: expected a vocab_size in [1, 2^31), got 0")
    expect(ValueError, mask(p=probs(strides=(2 * VOCAB, 3))), "logits: expected a contiguous last dimension")
    expect(TypeError, mask(out=Fake((BATCH, VOCAB), "float16")), "out: expected dtype float32, got float16")
    expect(ValueError, mask(out=Fake((BATCH, VOCAB + 1), "float32")),
           "out: expected shape [batch_size, vocab_size] = (4, 32001), got (4, 32002)")
    expect(ValueError, mask(out=Fake((BATCH, VOCAB), "float32", device=1)), "out: expected the device of logits")
    expect(ValueError, mask(top_k=0), "top_k: expected an integer >= 1, got 0")
    expect(TypeError, mask(top_k=3.0), "top_k: expected an int, got float")
    expect(TypeError, mask(top_k=Fake((BATCH,), "int64")), "top_k: expected dtype int32, got int64")
    expect(ValueError, mask(top_k=Fake((BATCH + 1,), "int32")), "top_k: expected shape [batch_size] = (4,), got (5,)")
    expect(TypeError, lambda: fn(probs(), 5), "out: fi_core cannot allocate arrays of type FakeCudaArray")
    for dtype in ("float32", "float16", "bfloat16"):
        for vocab in (1, 7, 32001, 151936):
            reaches_launch(mask(p=probs((2, vocab), dtype=dtype), top_k=5))
    reaches_launch(mask(top_k=10 * VOCAB))
    reaches_launch(mask(top_k=Fake((BATCH,), "int32")))
    p = probs((2, 1000), dtype="bfloat16")
    reaches_launch(mask(p=p, out=p))  # in place


# ---- chain_speculative_sampling ----

SPEC_BATCH, SPEC_STEPS, SPEC_VOCAB = 3, 4, 32001


def spec_call(draft=None, ids=None, target=None, out=None, accepted=None, emitted=None, **kwargs):
    b, n, v = SPEC_BATCH, SPEC_STEPS, SPEC_VOCAB
    draft = Fake((b, n, v), "float32") if draft is None else draft
    ids = Fake((b, n), "int32") if ids is None else ids
    target = Fake((b, n + 1, v), "float32") if target is None else target
    out = Fake((b, n + 1), "int32") if out is None else out
    accepted = Fake((b,), "int32") if accepted is None else accepted
    emitted = Fake((b,), "int32") if emitted is None else emitted
    return lambda: fi_core.chain_speculative_sampling(draft, ids, target, accepted, emitted, out=out,
                                                      seed=3, offset=0, **kwargs)


def test_chain_speculative_sampling_checks():
    b, n, v = SPEC_BATCH, SPEC_STEPS, SPEC_VOCAB
    expect(TypeError, spec_call(draft=np.zeros((b, n, v), np.float32)), "draft_probs: expected a CUDA array")
    expect(TypeError, spec_call(draft=Fake((b, n, v), "float16")), "draft_probs: expected dtype float32, got float16")
    expect(ValueError, spec_call(draft=Fake((b, v), "float32")),
           "draft_probs: expected 3 dimensions [batch_size, num_speculative_tokens, vocab_size], got 2")
    expect(ValueError, spec_call(draft=Fake((b, n, v), "float32", strides=(n * v * 2, v * 2, 2))),
           "draft_probs: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, spec_call(draft=Fake((b, n, 0), "float32"), target=Fake((b, n + 1, 0), "float32")),
           "draft_probs: expected a vocab_size in [1, 2^31), got 0")
    expect(TypeError, spec_call(ids=Fake((b, n), "int64")), "draft_token_ids: expected dtype int32, got int64")
    expect(ValueError, spec_call(ids=Fake((b, n + 1), "int32")),
           "draft_token_ids: expected shape [batch_size, num_speculative_tokens] = (3, 4), got (3, 5)")
    expect(ValueError, spec_call(ids=Fake((b, n), "int32", device=1)),
           "draft_token_ids: expected the device of draft_probs (cuda:0), got cuda:1")
    expect(TypeError, spec_call(target=Fake((b, n + 1, v), "bfloat16")), "target_probs: expected dtype float32, got bfloat16")
    expect(ValueError, spec_call(target=Fake((b, n, v), "float32")),
           "target_probs: expected shape [batch_size, num_speculative_tokens + 1, vocab_size] = (3, 5, 32001), "
           "got (3, 4, 32001)")
    expect(ValueError, spec_call(target=Fake((b, n + 1, v - 1), "float32")), "target_probs: expected shape", "got (3, 5, 32000)")
    expect(ValueError, spec_call(target=Fake((b + 1, n + 1, v), "float32")), "target_probs: expected shape", "got (4, 5, 32001)")
    expect(ValueError, spec_call(target=Fake((b, n + 1, v), "float32", strides=((n + 1) * v * 3, v * 3, 3))),
           "target_probs: expected a contiguous last dimension (stride 1), got stride 3")
    expect(TypeError, spec_call(out=Fake((b, n + 1), "int64")), "output_token_ids: expected dtype int32, got int64")
    expect(ValueError, spec_call(out=Fake((b, n), "int32")),
           "output_token_ids: expected shape [batch_size, num_speculative_tokens + 1] = (3, 5), got (3, 4)")
    expect(TypeError, spec_call(accepted=Fake((b,), "float32")),
           "maybe_output_accepted_token_num: expected dtype int32, got float32")
    expect(ValueError, spec_call(emitted=Fake((b + 1,), "int32")),
           "maybe_output_emitted_draft_token_num: expected shape [batch_size] = (3,), got (4,)")
    expect(ValueError, spec_call(emitted=Fake((b,), "int32", strides=(2,))),
           "maybe_output_emitted_draft_token_num: expected a contiguous last dimension (stride 1), got stride 2")
    expect(ValueError, spec_call(accepted=Fake((b,), "int32", device=1)),
           "maybe_output_accepted_token_num: expected the device of draft_probs (cuda:0), got cuda:1")
    expect(TypeError, spec_call(deterministic=0), "deterministic: expected a bool, got int")
    expect(TypeError, lambda: fi_core.chain_speculative_sampling(Fake((b, n, v), "float32"), Fake((b, n), "int32"),
                                                                Fake((b, n + 1, v), "float32")),
           "out: fi_core cannot allocate arrays of type FakeCudaArray")
    reaches_launch(spec_call())
    for vocab in (1, 7, 32000, 128256, 151936):
        reaches_launch(spec_call(draft=Fake((b, n, vocab), "float32"), target=Fake((b, n + 1, vocab), "float32")))
    # No draft tokens: only the bonus token. Strided id and output rows are fine.
    reaches_launch(spec_call(draft=Fake((b, 0, v), "float32"), ids=Fake((b, 0), "int32"),
                             target=Fake((b, 1, v), "float32"), out=Fake((b, 1), "int32")))
    reaches_launch(spec_call(ids=Fake((b, n), "int32", strides=(2 * n, 2)), out=Fake((b, n + 1), "int32", strides=(8, 1))))
    # No requests: nothing to launch.
    empty = spec_call(draft=Fake((0, n, v), "float32"), ids=Fake((0, n), "int32"), target=Fake((0, n + 1, v), "float32"),
                      out=Fake((0, n + 1), "int32"), accepted=Fake((0,), "int32"), emitted=Fake((0,), "int32"))
    assert empty()[0].shape == (0, n + 1)

"""Sorting-free sampling from probabilities or logits, top-k / top-p renormalization, top-k
masking of logits and chain speculative sampling (FlashInfer's `flashinfer.sampling` API).

Conventions shared by every function here:

- probs: float32 [batch_size, vocab_size] on a CUDA device, contiguous last dimension; rows need
  not be normalized. logits: float32, float16 or bfloat16, same layout; sampling from logits draws
  from their softmax without writing a probability array. Any vocab size works.
- top_k / top_p / min_p: a Python number for every row, or a CUDA array with one value per output
  row (int32 for top_k, float32 for top_p and min_p).
- indices: optional int32/int64 [batch_size] array; output row i samples from row indices[i],
  and batch_size is len(indices).
- Randomness: Philox with an explicit `seed` and `offset`, else drawn from `generator` (a
  torch.Generator), else from torch's default CUDA generator for torch inputs, else from Python's
  `random`. Same inputs, seed and offset give the same samples; every reduction has a fixed order,
  so `deterministic` is accepted for compatibility and always holds.
- Odd input, defined and never out of range: NaN, inf and negative probabilities count as 0, NaN
  and +-inf logits as -inf; a row with nothing left to sample returns token 0 (renormalized: a
  row of zeros); values tied at a top-k threshold are all kept (from logits, ties are judged on
  the float32 softmax weights exp(logit - max)); per-row top_k <= 0 or >= vocab_size, top_p >= 1
  and min_p <= 0 keep every token; per-row top_p <= 0 keeps only the largest probabilities; an
  `indices` entry outside the rows of the input returns token 0.
- Samples come back as int32 [batch_size] in the caller's framework (or in `out=`).
"""

from __future__ import annotations

import random
from typing import Any, Optional, Tuple

from . import _C
from ._frameworks import framework_of, plain_input, stream_handle
from ._options import integer, optional_flag

PROBS_DTYPE = "float32"
LOGITS_DTYPES = "float32, float16 or bfloat16"
# Philox values a call consumes per row, rounded up to a whole counter (4 values): the generator
# moves on by this much so that the next call draws fresh numbers.
_PHILOX_OFFSET_STEP = 4
FILTER_APPLY_ORDERS = ("top_k_first", "joint")


def _is_array(x) -> bool:
    return hasattr(x, "__dlpack__")


def _seed_and_offset(framework, generator, seed, offset):
    """(seed, offset) for Philox: explicit, else advanced from a generator."""
    if seed is not None or offset is not None:
        seed = 0 if seed is None else integer(seed, "seed")
        offset = 0 if offset is None else integer(offset, "offset")
        if seed < 0 or offset < 0:
            raise ValueError(f"seed, offset: expected integers >= 0, got {seed}, {offset}")
        return seed % 2**64, offset % 2**64
    if generator is None and framework.name == "torch":
        import torch
        generator = torch.cuda.default_generators[framework.device]
    if generator is None:
        return random.getrandbits(64), 0
    if generator.device.type == "cuda":
        # The CUDA generator's Philox state: a 64-bit seed and a 64-bit offset, which it advances.
        import torch
        state = generator.get_state()
        seed, gen_offset = (int(v) for v in state.view(torch.int64)[:2])
        state.view(torch.int64)[1] = gen_offset + _PHILOX_OFFSET_STEP
        generator.set_state(state)
        return seed % 2**64, gen_offset
    import torch
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item()), 0


def _per_row(value, name, is_int):
    """(array or None, scalar) of a filter value given as a number or an array."""
    if _is_array(value):
        return plain_input(value, name, "int32" if is_int else "float32"), (1 if is_int else 1.0)
    if is_int:
        return None, integer(value, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number or a CUDA array, got {type(value).__qualname__}")
    return None, float(value)


def _check_nan(x, name):
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor) and bool(torch.isnan(x).any()):
        raise ValueError(f"{name}: expected no NaN (check_nan=True), got NaN")


def _sample(x, indices, deterministic, generator, check_nan, seed, offset, out, stream,
            top_k=None, top_p=None, min_p=None, top_k_first=True, from_logits=False):
    """Samples from rows of probabilities, or of logits through their softmax (from_logits)."""
    name = "logits" if from_logits else "probs"
    optional_flag(deterministic, "deterministic")
    framework = framework_of(x, name)
    x_in = plain_input(x, name, LOGITS_DTYPES if from_logits else PROBS_DTYPE)
    indices_in = None if indices is None else plain_input(indices, "indices", "int32 or int64")
    if optional_flag(check_nan, "check_nan"):
        _check_nan(x, name)
    top_k_arr, top_k_val = _per_row(top_k, "top_k", True) if top_k is not None else (None, 0)
    top_p_arr, top_p_val = _per_row(top_p, "top_p", False) if top_p is not None else (None, 1.0)
    min_p_arr, min_p_val = _per_row(min_p, "min_p", False) if min_p is not None else (None, 0.0)
    seed, offset = _seed_and_offset(framework, generator, seed, offset)
    if out is None:
        shape = x.shape if indices is None else indices.shape
        batch = shape[0] if len(shape) > 0 else 0
        out = framework.empty((batch,), "int32", "out")
    _C.sampling_from_probs(
        x_in, from_logits, plain_input(out, "out", "int32"), indices_in,
        use_top_k=top_k is not None, top_k=top_k_arr, top_k_val=top_k_val,
        use_top_p=top_p is not None, top_p=top_p_arr, top_p_val=top_p_val,
        use_min_p=min_p is not None, min_p=min_p_arr, min_p_val=min_p_val,
        top_k_first=top_k_first, seed=seed, offset=offset,
        stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out


def _filter_order(filter_apply_order):
    """True for "top_k_first", False for "joint"."""
    if filter_apply_order not in FILTER_APPLY_ORDERS:
        raise ValueError("filter_apply_order: expected 'top_k_first' or 'joint', got "
                         f"{filter_apply_order!r}")
    return filter_apply_order == "top_k_first"


def sampling_from_probs(probs: Any, indices: Any = None, deterministic: bool = True,
                        generator: Any = None, check_nan: bool = False, seed: Optional[int] = None,
                        offset: Optional[int] = None, *, out: Any = None, stream: Any = None) -> Any:
    """Samples one token per row from the categorical distribution probs / probs.sum(-1)."""
    return _sample(probs, indices, deterministic, generator, check_nan, seed, offset, out, stream)


def top_p_sampling_from_probs(probs: Any, top_p: Any, indices: Any = None,
                              deterministic: bool = True, generator: Any = None,
                              check_nan: bool = False, seed: Optional[int] = None,
                              offset: Optional[int] = None, *, out: Any = None,
                              stream: Any = None) -> Any:
    """Nucleus sampling: from the smallest set of largest probabilities whose mass reaches
    top_p * (row mass), renormalized. top_p in (0, 1]; 1 keeps every token."""
    return _sample(probs, indices, deterministic, generator, check_nan, seed, offset, out, stream,
                   top_p=top_p)


def top_k_sampling_from_probs(probs: Any, top_k: Any, indices: Any = None,
                              deterministic: bool = True, generator: Any = None,
                              check_nan: bool = False, seed: Optional[int] = None,
                              offset: Optional[int] = None, *, out: Any = None,
                              stream: Any = None) -> Any:
    """Samples from the top_k largest probabilities, renormalized (ties at the k-th value kept).
    top_k >= 1; top_k >= vocab_size keeps every token."""
    return _sample(probs, indices, deterministic, generator, check_nan, seed, offset, out, stream,
                   top_k=top_k)


def min_p_sampling_from_probs(probs: Any, min_p: Any, indices: Any = None,
                              deterministic: bool = True, generator: Any = None,
                              check_nan: bool = False, seed: Optional[int] = None,
                              offset: Optional[int] = None, *, out: Any = None,
                              stream: Any = None) -> Any:
    """Samples from the tokens with probability >= min_p * (largest probability), renormalized.
    min_p in [0, 1]; 0 keeps every token."""
    return _sample(probs, indices, deterministic, generator, check_nan, seed, offset, out, stream,
                   min_p=min_p)


def top_k_top_p_sampling_from_probs(probs: Any, top_k: Any, top_p: Any, indices: Any = None,
                                    filter_apply_order: str = "top_k_first",
                                    deterministic: bool = True, generator: Any = None,
                                    check_nan: bool = False, seed: Optional[int] = None,
                                    offset: Optional[int] = None, *, out: Any = None,
                                    stream: Any = None) -> Any:
    """Top-k and top-p together. "top_k_first": top-p over the renormalized top-k set; "joint":
    the tokens that pass both filters applied to the original row."""
    top_k_first = _filter_order(filter_apply_order)
    return _sample(probs, indices, deterministic, generator, check_nan, seed, offset, out, stream,
                   top_k=top_k, top_p=top_p, top_k_first=top_k_first)


def sampling_from_logits(logits: Any, indices: Any = None, deterministic: bool = True,
                         generator: Any = None, check_nan: bool = False, seed: Optional[int] = None,
                         offset: Optional[int] = None, *, out: Any = None, stream: Any = None) -> Any:
    """Samples one token per row from softmax(logits), by inverse transform over the weights
    exp(logit - max) recomputed on the fly (no probability array is written)."""
    return _sample(logits, indices, deterministic, generator, check_nan, seed, offset, out, stream,
                   from_logits=True)


def top_k_top_p_sampling_from_logits(logits: Any, top_k: Any, top_p: Any, indices: Any = None,
                                     filter_apply_order: str = "top_k_first",
                                     deterministic: bool = True, generator: Any = None,
                                     check_nan: bool = False, seed: Optional[int] = None,
                                     offset: Optional[int] = None, *, out: Any = None,
                                     stream: Any = None) -> Any:
    """Top-k and top-p sampling from softmax(logits). "top_k_first": the logits masked to their
    top-k set, softmax, then top-p sampling (FlashInfer's order); "joint": softmax, then the
    tokens that pass both filters. Fused: no masked logits or probabilities are written."""
    top_k_first = _filter_order(filter_apply_order)
    return _sample(logits, indices, deterministic, generator, check_nan, seed, offset, out, stream,
                   top_k=top_k, top_p=top_p, top_k_first=top_k_first, from_logits=True)


def _renorm(probs, top_k, top_p, out, stream):
    framework = framework_of(probs, "probs")
    probs_in = plain_input(probs, "probs", PROBS_DTYPE)
    top_k_arr, top_k_val = _per_row(top_k, "top_k", True) if top_k is not None else (None, 0)
    top_p_arr, top_p_val = _per_row(top_p, "top_p", False) if top_p is not None else (None, 1.0)
    if out is None:
        out = framework.empty(probs.shape, "float32", "out")
    _C.renorm_probs(probs_in, plain_input(out, "out", PROBS_DTYPE),
                    use_top_k=top_k is not None, top_k=top_k_arr, top_k_val=top_k_val,
                    use_top_p=top_p is not None, top_p=top_p_arr, top_p_val=top_p_val,
                    stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out


def top_p_renorm_probs(probs: Any, top_p: Any, *, out: Any = None, stream: Any = None) -> Any:
    """probs restricted to each row's top-p set and divided by its mass (zeros elsewhere)."""
    return _renorm(probs, None, top_p, out, stream)


def top_k_renorm_probs(probs: Any, top_k: Any, *, out: Any = None, stream: Any = None) -> Any:
    """probs restricted to each row's top_k largest values and divided by their mass."""
    return _renorm(probs, top_k, None, out, stream)


def top_k_mask_logits(logits: Any, top_k: Any, *, out: Any = None, stream: Any = None) -> Any:
    """logits on each row's top_k largest values (ties at the k-th value kept), -inf elsewhere;
    same dtype as logits (float32, float16 or bfloat16). NaN and +-inf logits count as -inf and
    come back as -inf; top_k >= vocab_size keeps every (finite) logit."""
    framework = framework_of(logits, "logits")
    logits_in = plain_input(logits, "logits", LOGITS_DTYPES)
    top_k_arr, top_k_val = _per_row(top_k, "top_k", True)
    if out is None:
        out = framework.empty(logits.shape, None, "out")
    _C.top_k_mask_logits(logits_in, plain_input(out, "out", LOGITS_DTYPES), top_k=top_k_arr,
                         top_k_val=top_k_val, stream=stream_handle(stream, framework),
                         synchronize=framework.synchronize)
    return out


def chain_speculative_sampling(draft_probs: Any, draft_token_ids: Any, target_probs: Any,
                               maybe_output_accepted_token_num: Any = None,
                               maybe_output_emitted_draft_token_num: Any = None,
                               deterministic: bool = True, generator: Any = None,
                               seed: Optional[int] = None, offset: Optional[int] = None, *,
                               out: Any = None, stream: Any = None) -> Tuple[Any, Any, Any]:
    """Speculative sampling of a chain of draft tokens (Chen et al. 2023, "Accelerating Large
    Language Model Decoding with Speculative Sampling").

    draft_probs float32 [batch, n, vocab], draft_token_ids int32 [batch, n], target_probs float32
    [batch, n + 1, vocab]. Draft token j is accepted when u_j * draft[j][t_j] < target[j][t_j]
    (probability min(1, target / draft)); at the first rejection a token is drawn from
    normalize(max(target[j] - draft[j], 0)) (from target[j] if that is all zero) and the rest is
    -1; if all n are accepted a bonus token is drawn from target[n]. A draft token id outside
    [0, vocab) is rejected.

    Returns (output_token_ids int32 [batch, n + 1], output_accepted_token_num,
    output_emitted_draft_token_num), both int32 [batch]: the number of draft tokens whose own
    acceptance test passes, each judged independently (the same uniforms as the chain), and the
    number of draft tokens emitted (the accepted prefix, without the bonus or resampled token).
    As in FlashInfer, the counts are added to the given maybe_output_* arrays, else returned in
    new arrays."""
    optional_flag(deterministic, "deterministic")
    framework = framework_of(draft_probs, "draft_probs")
    shape = tuple(draft_probs.shape)
    batch = shape[0] if len(shape) > 0 else 0
    steps = shape[1] if len(shape) > 1 else 0
    seed, offset = _seed_and_offset(framework, generator, seed, offset)
    if out is None:
        out = framework.empty((batch, steps + 1), "int32", "out")
    accepted, emitted = maybe_output_accepted_token_num, maybe_output_emitted_draft_token_num
    if accepted is None:
        accepted = framework.empty((batch,), "int32", "maybe_output_accepted_token_num")
    if emitted is None:
        emitted = framework.empty((batch,), "int32", "maybe_output_emitted_draft_token_num")
    _C.chain_speculative_sampling(
        plain_input(draft_probs, "draft_probs", PROBS_DTYPE),
        plain_input(draft_token_ids, "draft_token_ids", "int32"),
        plain_input(target_probs, "target_probs", PROBS_DTYPE),
        plain_input(out, "out", "int32"),
        plain_input(accepted, "maybe_output_accepted_token_num", "int32"),
        plain_input(emitted, "maybe_output_emitted_draft_token_num", "int32"),
        add_to_accepted=maybe_output_accepted_token_num is not None,
        add_to_emitted=maybe_output_emitted_draft_token_num is not None, seed=seed, offset=offset,
        stream=stream_handle(stream, framework), synchronize=framework.synchronize)
    return out, accepted, emitted

"""The RoPE family against the float64 reference, on fresh random inputs: dtypes x head dims x
partial rotary dims x NeoX / interleaved x position sources (pos_ids, indptr/offsets) x plain /
Llama 3.1 frequencies x in place / out of place; cos/sin cache variants; packed QKV views; head
shapes that are not multiples of 8; positions outside the cos/sin cache or outside indptr (NaN)."""

import math

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core
    from reference import positions_from_indptr, rope_frequencies, rope_reference

DTYPES = ["float16", "bfloat16", "float32"]
HEAD_DIMS = [64, 128, 256]
VARIANTS = ["pos_ids", "indptr", "llama31_pos_ids", "llama31_indptr"]
RTOL = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-5}
L2_TOL = {"float16": 5e-4, "bfloat16": 4e-3, "float32": 2e-6}
NNZ, HQ, HK = 50, 8, 2
MAX_POSITION = 65536


def randn(shape, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(shape, device="cuda", generator=gen).to(getattr(torch, dtype))


def randint(high, shape, seed, dtype=None):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=gen).to(dtype or torch.int32)


def assert_close(out, ref, dtype, name):
    out = out.double()
    assert torch.isfinite(out).all(), f"{name}: non-finite elements (unwritten or NaN)"
    # Absolute floor, L2 and element-wise: a cos - b sin cancels in float32, an absolute error.
    atol = 1e-5 * max(1.0, ref.abs().max().item())
    err = (out - ref).norm().item()
    bound = L2_TOL[dtype] * ref.norm().item() + atol * ref.numel() ** 0.5
    assert err <= bound, f"{name}: L2 error {err:.3e} > {bound:.3e}"
    torch.testing.assert_close(out, ref, rtol=RTOL[dtype], atol=atol, msg=name)


def poison_allocator(*like):
    """Fill and free blocks the size of the outputs an op is about to allocate: torch's caching
    allocator hands such blocks out again, so elements the kernel fails to write stay NaN."""
    blocks = [torch.full_like(t, float("nan")) for t in like]
    del blocks


def ragged_batch(nnz, seed, dtype=None):
    """indptr / offsets of 4 requests (one empty) covering nnz tokens, and the tokens' positions."""
    cut = sorted(randint(nnz + 1, (2,), seed, torch.int64).tolist())
    dtype = dtype or torch.int32
    indptr = torch.tensor([0, cut[0], cut[0], cut[1], nnz], dtype=dtype)
    offsets = randint(MAX_POSITION - nnz, (4,), seed + 1, dtype)
    return indptr.cuda(), offsets.cuda(), positions_from_indptr(indptr, offsets, nnz).cuda()


def call_rope(variant, inplace, q, k, positions_or_batch, **options):
    """Runs one of the eight on-the-fly functions; returns the rotated (q, k)."""
    llama31 = variant.startswith("llama31")
    by_request = variant.endswith("indptr")
    name = "apply_" + ("llama31_rope" if llama31 else "rope") + ("" if by_request else "_pos_ids")
    fn = getattr(fi_core, name + ("_inplace" if inplace else ""))
    args = positions_or_batch if by_request else (positions_or_batch,)
    if inplace:
        assert fn(q, k, *args, **options) is None
        return q, k
    poison_allocator(q, k)
    q_rope, k_rope = fn(q, k, *args, **options)
    assert q_rope.shape == q.shape and k_rope.shape == k.shape and q_rope.dtype == q.dtype
    return q_rope, k_rope


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("interleave", [False, True], ids=["neox", "interleave"])
@pytest.mark.parametrize("rotary", ["full", "half", "24"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_matches_reference(dtype, head_dim, rotary, interleave, variant, inplace):
    seed = case_seed("rope", dtype, head_dim, rotary, interleave, variant, inplace)
    rotary_dim = {"full": head_dim, "half": head_dim // 2, "24": 24}[rotary]
    q, k = randn((NNZ, HQ, head_dim), dtype, seed), randn((NNZ, HK, head_dim), dtype, seed + 1)
    q_in, k_in = q.clone(), k.clone()
    if variant.endswith("indptr"):
        indptr, offsets, positions = ragged_batch(NNZ, seed + 2)
        where = (indptr, offsets)
    else:
        positions = randint(MAX_POSITION, (NNZ,), seed + 2).cuda()
        where = positions
    llama31 = variant.startswith("llama31")
    options = dict(interleave=interleave, rope_scale=8.0 if llama31 else 2.0,
                   rope_theta=5e5 if llama31 else 1e4)
    if llama31:
        options.update(low_freq_factor=1.0, high_freq_factor=4.0, old_context_len=8192)
    if rotary_dim != head_dim:
        options["rotary_dim"] = rotary_dim
    q_out, k_out = call_rope(variant, inplace, q, k, where, **options)

    freq = rope_frequencies(rotary_dim, options["rope_scale"], options["rope_theta"],
                            (1.0, 4.0, 8192) if llama31 else None)
    assert_close(q_out, rope_reference(q_in, positions, rotary_dim, interleave, freq), dtype, "q")
    assert_close(k_out, rope_reference(k_in, positions, rotary_dim, interleave, freq), dtype, "k")
    assert torch.equal(q_out[..., rotary_dim:], q_in[..., rotary_dim:]), "pass-through dims of q changed"
    assert torch.equal(k_out[..., rotary_dim:], k_in[..., rotary_dim:]), "pass-through dims of k changed"
    if not inplace:
        assert torch.equal(q, q_in) and torch.equal(k, k_in), "out of place changed its inputs"


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_packed_qkv_views(dtype, inplace):
    # q and k are [nnz, heads, head_dim] views of one packed [nnz, (32 + 2 * 8) * 128] QKV buffer;
    # in place, v and the other views' elements stay untouched.
    nnz, hq, hk, d = 129, 32, 8, 128
    qkv = randn((nnz, (hq + 2 * hk) * d), dtype, 20)
    before = qkv.clone()
    q = qkv[:, :hq * d].view(nnz, hq, d)
    k = qkv[:, hq * d:(hq + hk) * d].view(nnz, hk, d)
    positions = randint(MAX_POSITION, (nnz,), 21).cuda()
    q_ref = rope_reference(q, positions, d, False, rope_frequencies(d))
    k_ref = rope_reference(k, positions, d, False, rope_frequencies(d))
    q_out, k_out = call_rope("pos_ids", inplace, q, k, positions)
    assert_close(q_out, q_ref, dtype, "q")
    assert_close(k_out, k_ref, dtype, "k")
    untouched = slice((hq + hk) * d, None) if inplace else slice(None)
    assert torch.equal(qkv[:, untouched], before[:, untouched]), "wrote outside the rotated views"


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_index_dtypes(index_dtype):
    dtype = getattr(torch, index_dtype)
    q, k = randn((NNZ, HQ, 128), "bfloat16", 30), randn((NNZ, HK, 128), "bfloat16", 31)
    freq = rope_frequencies(128)
    positions = randint(MAX_POSITION, (NNZ,), 32, dtype).cuda()
    q_rope, k_rope = fi_core.apply_rope_pos_ids(q, k, positions)
    assert_close(q_rope, rope_reference(q, positions, 128, False, freq), "bfloat16", "q (pos_ids)")
    assert_close(k_rope, rope_reference(k, positions, 128, False, freq), "bfloat16", "k (pos_ids)")
    indptr, offsets, positions = ragged_batch(NNZ, 33, dtype)
    q_rope, k_rope = fi_core.apply_rope(q, k, indptr, offsets)
    assert_close(q_rope, rope_reference(q, positions, 128, False, freq), "bfloat16", "q (indptr)")
    assert_close(k_rope, rope_reference(k, positions, 128, False, freq), "bfloat16", "k (indptr)")


@pytest.mark.parametrize("interleave", [False, True], ids=["neox", "interleave"])
@pytest.mark.parametrize("head_dim,rotary_dim", [(80, 32), (96, 24), (72, 72), (40, 40), (6, 2), (2, 2)])
def test_head_shapes_not_multiple_of_8(head_dim, rotary_dim, interleave):
    # Phi-2 (80 / 32), GPT-NeoX-20B (96 / 24), odd halves and tiny heads: element accesses at the
    # span ends, both in place and out of place.
    q, k = randn((NNZ, 3, head_dim), "float16", 40), randn((NNZ, 1, head_dim), "float16", 41)
    positions = randint(MAX_POSITION, (NNZ,), 42).cuda()
    freq = rope_frequencies(rotary_dim)
    q_ref = rope_reference(q, positions, rotary_dim, interleave, freq)
    k_ref = rope_reference(k, positions, rotary_dim, interleave, freq)
    q_rope, k_rope = fi_core.apply_rope_pos_ids(q, k, positions, rotary_dim=rotary_dim, interleave=interleave)
    assert_close(q_rope, q_ref, "float16", "q")
    assert_close(k_rope, k_ref, "float16", "k")
    fi_core.apply_rope_pos_ids_inplace(q, k, positions, rotary_dim=rotary_dim, interleave=interleave)
    assert torch.equal(q, q_rope) and torch.equal(k, k_rope), "in place and out of place differ"


@pytest.mark.parametrize("nnz", [1, 3, 64, 4096])
def test_batch_sizes(nnz):
    # From single-token decode (heads split across CTAs) to long prefills (one thread walks all
    # of a token's heads); LLaMA-3-8B's 32 / 8 heads of 128.
    q, k = randn((nnz, 32, 128), "bfloat16", 50), randn((nnz, 8, 128), "bfloat16", 51)
    positions = randint(MAX_POSITION, (nnz,), 52).cuda()
    freq = rope_frequencies(128, 8.0, 5e5, (1.0, 4.0, 8192))
    q_ref = rope_reference(q, positions, 128, False, freq)
    k_ref = rope_reference(k, positions, 128, False, freq)
    fi_core.apply_llama31_rope_pos_ids_inplace(q, k, positions)  # FlashInfer's Llama 3.1 defaults
    assert_close(q, q_ref, "bfloat16", "q")
    assert_close(k, k_ref, "bfloat16", "k")


def test_large_positions_float32():
    # Angles up to ~1e6 rad take sincosf's slow argument reduction; the angle itself is the same
    # float32 product in kernel and reference.
    q, k = randn((NNZ, 4, 64), "float32", 60), randn((NNZ, 2, 64), "float32", 61)
    positions = randint(1 << 20, (NNZ,), 62, torch.int64).cuda()
    freq = rope_frequencies(64)
    q_rope, k_rope = fi_core.apply_rope_pos_ids(q, k, positions)
    assert_close(q_rope, rope_reference(q, positions, 64, False, freq), "float32", "q")
    assert_close(k_rope, rope_reference(k, positions, 64, False, freq), "float32", "k")


def cos_sin_cache(max_position, rotary_dim, base=1e4):
    """vLLM's cache: [max_position, rotary_dim] float32, cos of the pairs then their sin."""
    inv_freq = 1.0 / base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    angles = torch.outer(torch.arange(max_position, dtype=torch.float64), inv_freq)
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float().cuda()


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
@pytest.mark.parametrize("head_size", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_with_cos_sin_cache(dtype, head_size, partial, is_neox, inplace):
    seed = case_seed("cos_sin_cache", dtype, head_size, partial, is_neox, inplace)
    rotary_dim = head_size // 2 if partial else head_size
    cache = cos_sin_cache(4096, rotary_dim)
    query = randn((NNZ, HQ * head_size), dtype, seed)  # vLLM layout: heads packed in the last dim
    key = randn((NNZ, HK * head_size), dtype, seed + 1)
    positions = randint(4096, (NNZ,), seed + 2, torch.int64).cuda()
    q_ref = rope_reference(query.view(NNZ, HQ, head_size), positions, rotary_dim, not is_neox,
                           cos_sin_cache=cache).view(NNZ, -1)
    k_ref = rope_reference(key.view(NNZ, HK, head_size), positions, rotary_dim, not is_neox,
                           cos_sin_cache=cache).view(NNZ, -1)
    if inplace:
        assert fi_core.apply_rope_with_cos_sin_cache_inplace(positions, query, key, head_size, cache, is_neox) is None
        q_out, k_out = query, key
    else:
        poison_allocator(query, key)
        q_out, k_out = fi_core.apply_rope_with_cos_sin_cache(positions, query, key, head_size, cache, is_neox)
        assert q_out.shape == query.shape and k_out.shape == key.shape
    assert_close(q_out, q_ref, dtype, "query")
    assert_close(k_out, k_ref, dtype, "key")


def test_cos_sin_cache_with_3d_heads_and_int32_positions():
    cache = cos_sin_cache(1000, 128)
    q, k = randn((NNZ, HQ, 128), "bfloat16", 70), randn((NNZ, HK, 128), "bfloat16", 71)
    positions = randint(1000, (NNZ,), 72).cuda()
    q_rope, k_rope = fi_core.apply_rope_with_cos_sin_cache(positions, q, k, 128, cache)
    assert_close(q_rope, rope_reference(q, positions, 128, False, cos_sin_cache=cache), "bfloat16", "q")
    assert_close(k_rope, rope_reference(k, positions, 128, False, cos_sin_cache=cache), "bfloat16", "k")


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_positions_outside_the_cache_give_nan(is_neox):
    # Positions are read on the GPU: those outside [0, max_position) cannot be rejected before the
    # launch, so their tokens' rotated dims come out NaN (never an out-of-bounds read or a silent
    # wrong value); pass-through dims and all other tokens are exact.
    max_position, head_size, rotary_dim = 100, 128, 64
    cache = cos_sin_cache(max_position, rotary_dim)
    query = randn((8, HQ * head_size), "bfloat16", 80)
    key = randn((8, HK * head_size), "bfloat16", 81)
    positions = torch.tensor([0, 99, 100, 5, 1 << 40, -1, 50, 250], dtype=torch.int64, device="cuda")
    bad = torch.tensor([False, False, True, False, True, True, False, True], device="cuda")
    q_out, k_out = fi_core.apply_rope_with_cos_sin_cache(positions, query, key, head_size, cache, is_neox)
    for out, x, heads, name in ((q_out, query, HQ, "query"), (k_out, key, HK, "key")):
        out3, x3 = out.view(8, heads, head_size), x.view(8, heads, head_size)
        assert torch.isnan(out3[bad][..., :rotary_dim]).all(), f"{name}: bad positions not NaN"
        assert torch.equal(out3[..., rotary_dim:], x3[..., rotary_dim:]), f"{name}: pass-through dims changed"
        good = ~bad
        ref = rope_reference(x3[good], positions[good], rotary_dim, not is_neox, cos_sin_cache=cache)
        assert_close(out3[good], ref, "bfloat16", name)


def test_tokens_outside_indptr_give_nan():
    # indptr covers the first 40 of 50 tokens: the last 10 have no position.
    q, k = randn((NNZ, HQ, 64), "float16", 90), randn((NNZ, HK, 64), "float16", 91)
    indptr = torch.tensor([0, 15, 40], dtype=torch.int32, device="cuda")
    offsets = torch.tensor([7, 1000], dtype=torch.int32, device="cuda")
    q_rope, k_rope = fi_core.apply_rope(q, k, indptr, offsets)
    positions = positions_from_indptr(indptr.cpu(), offsets.cpu(), 40).cuda()
    freq = rope_frequencies(64)
    assert_close(q_rope[:40], rope_reference(q[:40], positions, 64, False, freq), "float16", "q")
    assert_close(k_rope[:40], rope_reference(k[:40], positions, 64, False, freq), "float16", "k")
    assert torch.isnan(q_rope[40:]).all() and torch.isnan(k_rope[40:]).all()


def test_llama31_frequency_blend():
    # The reference's Llama 3.1 frequencies themselves: high frequencies kept, low ones scaled,
    # the band between blended (a check on the reference the kernels are compared with).
    freq = rope_frequencies(128, 8.0, 5e5, (1.0, 4.0, 8192), device="cpu").double()
    plain = rope_frequencies(128, 1.0, 5e5, device="cpu").double()
    wavelength = 2 * math.pi / plain
    high = wavelength < 8192 / 4.0
    low = wavelength > 8192 / 1.0
    assert high.any() and low.any() and (~high & ~low).any()
    torch.testing.assert_close(freq[high], plain[high], rtol=1e-6, atol=0)
    torch.testing.assert_close(freq[low], plain[low] / 8.0, rtol=1e-6, atol=0)
    mid = ~high & ~low
    assert ((freq[mid] <= plain[mid]) & (freq[mid] >= plain[mid] / 8.0)).all()

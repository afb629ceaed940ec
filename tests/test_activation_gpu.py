"""silu_and_mul / gelu_and_mul / gelu_tanh_and_mul against the float64 reference, on fresh random
inputs with NaN-poisoned outputs: dtypes x sizes (odd ones, ones that break 16-byte alignment of
the up half) x leading shapes, strided rows."""

import pytest

from conftest import HAS_GPU, case_seed, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

if HAS_GPU:
    import torch

    import fi_core
    from reference import act_and_mul_reference

    FUNCTIONS = {"silu": fi_core.silu_and_mul, "gelu": fi_core.gelu_and_mul,
                 "gelu_tanh": fi_core.gelu_tanh_and_mul}

ACTIVATIONS = ["silu", "gelu", "gelu_tanh"]
DTYPES = ["float16", "bfloat16", "float32"]
# d: the output width; the input is [..., 2 d]. 4095 and 13 misalign the up half.
SIZES = [1, 13, 64, 4095, 4096, 14336]
LEADING = [(1,), (7,), (3, 5)]
RTOL = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-5}
L2_TOL = {"float16": 5e-4, "bfloat16": 4e-3, "float32": 2e-6}


def randn(shape, dtype, seed, std=2.0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(shape, device="cuda", generator=gen) * std).to(getattr(torch, dtype))


def assert_close(out, ref, dtype, name):
    out = out.double()
    assert torch.isfinite(out).all(), f"{name}: non-finite elements (unwritten or NaN)"
    # Absolute floor, L2 and element-wise: 1 + erf and 1 + tanh cancel in float32 for large
    # negative gates (as in FlashInfer), an absolute error.
    atol = 1e-6 * max(1.0, ref.abs().max().item())
    err = (out - ref).norm().item()
    bound = L2_TOL[dtype] * ref.norm().item() + atol * ref.numel() ** 0.5
    assert err <= bound, f"{name}: L2 error {err:.3e} > {bound:.3e}"
    torch.testing.assert_close(out, ref, rtol=RTOL[dtype], atol=atol, msg=name)


@pytest.mark.parametrize("leading", LEADING, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("d", SIZES, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_act_and_mul_matches_reference(activation, dtype, d, leading):
    seed = case_seed("act_and_mul", activation, dtype, d, leading)
    x = randn(leading + (2 * d,), dtype, seed)
    out = torch.full(leading + (d,), float("nan"), device="cuda", dtype=x.dtype)
    assert FUNCTIONS[activation](x, out=out) is out
    assert_close(out, act_and_mul_reference(x, activation), dtype, "out")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_allocates_output(activation):
    x = randn((5, 3, 2 * 1000), "bfloat16", 11)
    out = FUNCTIONS[activation](x)
    assert isinstance(out, torch.Tensor) and out.shape == (5, 3, 1000) and out.dtype == x.dtype
    assert_close(out, act_and_mul_reference(x, activation), "bfloat16", "out")


@pytest.mark.parametrize("pad", [8, 3], ids=["aligned_rows", "misaligned_rows"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_strided_rows_and_views(activation, pad):
    # Input rows are views into a wider buffer; out rows into another; a 3-D view whose leading
    # dimensions need two strided levels.
    d, rows = 4096, 9
    buf = randn((rows, 2 * d + pad), "float16", 12)
    x = buf[:, pad:]
    out_buf = torch.full((rows, d + pad), float("nan"), device="cuda", dtype=torch.float16)
    out = out_buf[:, :d]
    FUNCTIONS[activation](x, out=out)
    assert_close(out, act_and_mul_reference(x, activation), "float16", "out")
    assert torch.isnan(out_buf[:, d:]).all(), "wrote outside out"

    big = randn((4, 6, 2 * 512), "bfloat16", 13)
    x3 = big[:, :3]  # [4, 3, 1024] with strides (6144, 1024, 1)
    out3 = torch.full((4, 3, 512), float("nan"), device="cuda", dtype=torch.bfloat16)
    FUNCTIONS[activation](x3, out=out3)
    assert_close(out3, act_and_mul_reference(x3, activation), "bfloat16", "3-D view")


def test_extreme_gates():
    # Large positive and negative gates: silu and the GELUs saturate without overflow or NaN.
    gate = torch.tensor([-100.0, -30.0, -5.0, -1.0, 0.0, 1.0, 5.0, 30.0, 100.0], device="cuda")
    x = torch.cat([gate, torch.ones_like(gate)])[None].float()
    for activation in ACTIVATIONS:
        out = FUNCTIONS[activation](x)
        assert_close(out, act_and_mul_reference(x, activation), "float32", activation)

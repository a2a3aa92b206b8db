"""Linear (GEMM + bias + ReLU epilogue): formulas, impls vs reference, gate, bad input."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from smoke_grid import SMOKE, mnk_id

from pydeepbench import ops, registry
from pydeepbench.check import compare

SPEC = registry.get_op("linear")
CPU_IMPLS = [n for n, i in registry.impls("linear").items() if i.why_not("cpu") is None]


def shape(M, N, K, bias=True, relu=True):
    return SPEC.validate_shape(dict(M=M, N=N, K=K, bias=bias, relu=relu))


def checked(impl, s, dtype, seed=0):
    inputs = SPEC.make_inputs(s, dtype, "cpu", seed)
    out = ops.linear(**inputs, impl=impl)
    assert out.dtype == dtype and out.shape == (s["M"], s["N"])
    return compare(out, SPEC.reference(**inputs), SPEC.tolerance(dtype))


def test_formulas():
    s = shape(3, 5, 7)
    assert SPEC.flops(s) == 2 * 3 * 5 * 7 + 3 * 5
    assert SPEC.flops(shape(3, 5, 7, bias=False)) == 2 * 3 * 5 * 7
    assert SPEC.bytes(s, torch.float32) == 4 * (3 * 7 + 5 * 7 + 3 * 5 + 5)
    assert SPEC.bytes(shape(3, 5, 7, bias=False), torch.bfloat16) == 2 * (21 + 35 + 15)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "none"])
@pytest.mark.parametrize("mnk", SMOKE, ids=mnk_id)
def test_smoke_grid(impl, dtype, bias, relu, mnk):
    r = checked(impl, shape(*mnk, bias=bias, relu=relu), dtype)
    assert r.ok, r.message


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_batched_and_non_contiguous_input(impl):
    x = torch.randn(3, 4, 40)[:, :, ::2]  # (3, 4, 20), non-contiguous
    w, b = torch.randn(6, 20), torch.randn(6)
    y = ops.linear(x, w, b, "relu", impl=impl)
    ref = torch.relu(x.double() @ w.double().t() + b.double())
    torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("lead", [(5,), (0,), (2, 3)])
def test_zero_in_features_gives_the_bias(impl, lead):
    x, w, b = torch.randn(*lead, 0), torch.randn(3, 0), torch.randn(3)
    out = ops.linear(x, w, b, activation="relu", impl=impl)
    torch.testing.assert_close(out, F.relu(F.linear(x, w, b)))


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_non_contiguous_weight(impl):
    # A transposed and a column-strided weight: native passes W.t() to the kernel as
    # swapped sizes and strides, without building the view.
    x = torch.randn(5, 20)
    for w in (torch.randn(20, 6).t(), torch.randn(6, 40)[:, ::2]):
        y = ops.linear(x, w, None, None, impl=impl)
        torch.testing.assert_close(y.double(), x.double() @ w.double().t(), atol=1e-4, rtol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    M=st.integers(1, 70),
    N=st.integers(1, 70),
    K=st.integers(1, 200),
    bias=st.booleans(),
    relu=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_native_on_random_shapes(M, N, K, bias, relu, seed):
    r = checked("native", shape(M, N, K, bias, relu), torch.float32, seed)
    assert r.ok, r.message


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(x=torch.randn(4, 5), weight=torch.randn(3, 6)), ValueError, "expects 6"),
        (dict(x=torch.tensor(1.0), weight=torch.randn(3, 1)), ValueError, "at least 1-D"),
        (
            dict(x=torch.randn(4, 5), weight=torch.randn(3, 5), bias=torch.randn(4)),
            ValueError,
            r"bias must have shape \(3,\)",
        ),
        (
            dict(x=torch.randn(4, 5), weight=torch.randn(3, 5), activation="gelu"),
            ValueError,
            "activation",
        ),
        (
            dict(x=torch.randn(4, 5).double(), weight=torch.randn(3, 5).double()),
            ValueError,
            "supports",
        ),
        (
            dict(x=torch.randn(4, 5), weight=torch.randn(3, 5).bfloat16()),
            ValueError,
            "dtypes differ",
        ),
        (dict(x=torch.randn(4, 5), weight=torch.randn(5)), ValueError, "2-D"),
    ],
)
def test_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        ops.linear(**kwargs, impl="native")


def _relu_before_bias(x, weight, bias, activation):
    return torch.relu(x @ weight.t()) + bias


def _forgets_bias(x, weight, bias, activation):
    return torch.relu(x @ weight.t())


@pytest.mark.parametrize("bad", [_relu_before_bias, _forgets_bias])
def test_gate_rejects_known_bad(bad):
    inputs = SPEC.make_inputs(shape(32, 16, 64), torch.float32, "cpu", 0)
    r = compare(bad(**inputs), SPEC.reference(**inputs), SPEC.tolerance(torch.float32))
    assert not r.ok


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_negative_views_keep_their_sign(impl):
    """z.conj().imag's memory holds -x (torch's neg bit): read by address alone, native
    had every term's sign wrong."""
    x, w, b = (torch.randn(*s, dtype=torch.cfloat).conj().imag for s in ((5, 7), (3, 7), (3,)))
    assert x.is_neg() and w.is_neg() and b.is_neg()
    ref = F.relu(F.linear(x.resolve_neg(), w.resolve_neg(), b.resolve_neg()))
    torch.testing.assert_close(ops.linear(x, w, b, "relu", impl=impl), ref)


def test_ootb_takes_a_sparse_x_as_f_linear_does():
    # The wrapper reshaped every x to 2-D, and a sparse tensor has no reshape.
    x, w, b = torch.randn(4, 8), torch.randn(5, 8), torch.randn(5)
    got = ops.linear(x.to_sparse(), w, b, "relu", impl="ootb")
    torch.testing.assert_close(got, F.relu(F.linear(x, w, b)))


@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i != "ootb"])
def test_impls_without_autograd_refuse_weights_that_require_grad(impl):
    x, w = torch.randn(3, 4), torch.nn.Parameter(torch.randn(5, 4))
    with pytest.raises(ValueError, match="computes no gradients and weight requires grad"):
        ops.linear(x, w, impl=impl)
    with torch.no_grad():
        assert ops.linear(x, w, impl=impl).shape == (3, 5)

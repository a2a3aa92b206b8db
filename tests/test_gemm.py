"""GEMM: formulas, every implementation against the reference, the gate, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from smoke_grid import SMOKE, mnk_id

from pydeepbench import ops, registry
from pydeepbench.check import compare

SPEC = registry.get_op("gemm")
CPU_IMPLS = [n for n, i in registry.impls("gemm").items() if i.why_not("cpu") is None]


def shape(M, N, K, a_t=False, b_t=False):
    return SPEC.validate_shape(dict(M=M, N=N, K=K, a_t=a_t, b_t=b_t))


def run_checked(impl, s, dtype, seed=0):
    inputs = SPEC.make_inputs(s, dtype, "cpu", seed)
    out = ops.gemm(inputs["a"], inputs["b"], impl=impl)
    assert out.dtype == dtype and out.shape == (s["M"], s["N"])
    return compare(out, SPEC.reference(**inputs), SPEC.tolerance(dtype))


def test_flops_and_bytes_formulas():
    s = shape(3, 5, 7)
    assert SPEC.flops(s) == 2 * 3 * 5 * 7
    assert SPEC.bytes(s, torch.float32) == 4 * (3 * 7 + 7 * 5 + 3 * 5)
    assert SPEC.bytes(s, torch.bfloat16) == 2 * (3 * 7 + 7 * 5 + 3 * 5)
    big = shape(5124, 9124, 2560)
    assert SPEC.flops(big) == 239_367_045_120  # DeepBench: 2*M*N*K, exact in a double


def test_inputs_are_seeded_and_laid_out_as_asked():
    s = shape(4, 6, 8, a_t=True, b_t=True)
    x, y = (
        SPEC.make_inputs(s, torch.float32, "cpu", 3),
        SPEC.make_inputs(s, torch.float32, "cpu", 3),
    )
    assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"])
    assert x["a"].shape == (4, 8) and x["a"].stride() == (1, 4)  # transposed view of (K, M)
    assert x["b"].shape == (8, 6) and x["b"].stride() == (1, 8)  # transposed view of (N, K)
    z = SPEC.make_inputs(s, torch.float32, "cpu", 4)
    assert not torch.equal(x["a"], z["a"])


@pytest.mark.parametrize("a_t, b_t", [(False, False), (True, False), (False, True)])
def test_col_major_cases_have_deepbench_s_memory_layouts(a_t, b_t):
    """DeepBench's (M, N, K, a_t, b_t) is cuBLAS's column-major C = op(A) op(B): A (M x K
    unless a_t) is stored column-major, so contiguous along M (along K when a_t); B along
    K (N when b_t); C along M. Read on row-major operands (version 1 of its sets), every
    operand was stored the other way."""
    M, N, K = 3, 5, 7
    s = SPEC.validate_shape(dict(M=M, N=N, K=K, a_t=a_t, b_t=b_t, col_major=True))
    assert SPEC.describe(s).endswith(",col")
    x = SPEC.make_inputs(s, torch.float32, "cpu", 0)
    # The row-major problem over the same bytes: C^T (N x M) = op(B)^T (N x K) @ op(A)^T.
    b_t_op, a_t_op = x["a"], x["b"]
    assert b_t_op.shape == (N, K) and a_t_op.shape == (K, M)
    assert b_t_op.stride() == ((1, N) if b_t else (K, 1))  # B along N if b_t, else along K
    assert a_t_op.stride() == ((1, K) if a_t else (M, 1))  # A along K if a_t, else along M
    out = ops.gemm(x["a"], x["b"], impl="native")
    assert out.shape == (N, M) and out.stride() == (M, 1)  # C contiguous along M
    assert SPEC.flops(s) == 2 * M * N * K
    torch.testing.assert_close(out.double(), SPEC.reference(**x))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("mnk", SMOKE, ids=mnk_id)
def test_smoke_grid(impl, dtype, layout, mnk):
    r = run_checked(impl, shape(*mnk, a_t=layout[0] == "T", b_t=layout[1] == "T"), dtype)
    assert r.ok, r.message


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_non_contiguous_views(impl):
    base_a = torch.randn(40, 90)
    base_b = torch.randn(70, 50)
    a = base_a[::2, 3:80:3]  # (20, 26), strides (180, 3)
    b = base_b[5:31, ::2]  # (26, 25), strides (50, 2)
    out = ops.gemm(a, b, impl=impl)
    torch.testing.assert_close(out.double(), a.double() @ b.double(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_large_k_keeps_fp32_accuracy(impl):
    r = run_checked(impl, shape(3, 5, 100_000), torch.float32)
    assert r.ok, r.message


@settings(max_examples=40, deadline=None)
@given(
    M=st.integers(1, 80),
    N=st.integers(1, 80),
    K=st.integers(1, 300),
    a_t=st.booleans(),
    b_t=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_native_matches_reference_on_random_shapes(M, N, K, a_t, b_t, seed):
    r = run_checked("native", shape(M, N, K, a_t, b_t), torch.float32, seed)
    assert r.ok, r.message


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, err, match",
    [
        (torch.randn(3), torch.randn(3, 4), ValueError, "2-D"),
        (torch.randn(3, 4), torch.randn(5, 6), ValueError, "do not multiply"),
        (torch.randn(3, 4), torch.randn(4, 2, dtype=torch.float64), ValueError, "float64"),
        (torch.randn(3, 4).double(), torch.randn(4, 2).double(), ValueError, "supports"),
        (torch.randn(3, 4), "b", TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_raises_clear_errors(a, b, err, match):
    with pytest.raises(err, match=match):
        ops.gemm(a, b, impl="native")


def test_unknown_impl_is_named():
    with pytest.raises(ValueError, match="unknown implementation 'fastest'"):
        ops.gemm(torch.randn(2, 2), torch.randn(2, 2), impl="fastest")


def test_unavailable_impl_says_why():
    why = ops.available("gemm", "cuda")
    assert why["native"] is not None  # no CUDA native GEMM without a GPU build and device


def test_native_binding_rejects_mismatched_output():
    from pydeepbench import _native

    a, b, out = torch.randn(3, 4), torch.randn(4, 5), torch.empty(3, 6)
    with pytest.raises(ValueError, match="out must be 3x5"):
        _native.cpu().gemm(_native.arg(a), _native.arg(b), _native.arg(out), None, False)


# --- the gate must reject known-bad implementations --------------------------------------


def _bf16_cast_fp32(a, b):
    """Claims fp32 but multiplies bf16-rounded inputs."""
    return (a.bfloat16() @ b.bfloat16()).float()


def _drops_last_column(a, b):
    out = a @ b
    out[:, -1] = 0
    return out


def _drops_last_k(a, b):
    return a[:, :-1] @ b[:-1, :]


@pytest.mark.parametrize("bad", [_bf16_cast_fp32, _drops_last_column, _drops_last_k])
def test_gate_rejects_known_bad_impls(bad):
    s = shape(64, 48, 256)
    inputs = SPEC.make_inputs(s, torch.float32, "cpu", 0)
    r = compare(bad(**inputs), SPEC.reference(**inputs), SPEC.tolerance(torch.float32))
    assert not r.ok and r.mismatched > 0 and "elements outside" in r.message


def test_tolerance_table_covers_every_impl_dtype():
    for impl in registry.impls("gemm").values():
        for dt in {d for per_device in impl.dtypes.values() for d in per_device}:
            tol = SPEC.tolerance(dt)
            assert 0 < tol.atol < 0.1 and 0 < tol.rtol < 0.1
    assert math.isclose(SPEC.tolerance(torch.float32).atol, 1e-4)


def _neg(*shape):
    """A negative view: z.conj().imag's memory holds -x (torch's neg bit)."""
    x = torch.randn(*shape, dtype=torch.cfloat).conj().imag
    assert x.is_neg()
    return x


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_negative_views_keep_their_sign(impl):
    """Read by address alone, a negative view has the wrong sign (native and Triton did)."""
    a, b = _neg(5, 7), _neg(9, 7).t()
    torch.testing.assert_close(ops.gemm(a, b, impl=impl), a.resolve_neg() @ b.resolve_neg())


@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i != "ootb"])
def test_impls_without_autograd_refuse_inputs_that_require_grad(impl):
    """Their results carry no gradient: refused rather than silently cut off."""
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(4, 5)
    with pytest.raises(ValueError, match=f"impl '{impl}' computes no gradients and a requires"):
        ops.gemm(a, b, impl=impl)
    with torch.no_grad():
        assert ops.gemm(a, b, impl=impl).shape == (3, 5)
    assert ops.gemm(a, b, impl="ootb").requires_grad


# torch's forward AD scripts its decompositions on first use (its own deprecation warning)
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i != "ootb"])
def test_impls_without_autograd_refuse_forward_mode_tangents(impl):
    """A dual tensor's tangent was dropped silently (the result carried none)."""
    import torch.autograd.forward_ad as fwAD

    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with fwAD.dual_level():
        dual = fwAD.make_dual(a, torch.ones_like(a))
        with pytest.raises(ValueError, match=f"impl '{impl}' computes no forward-mode"):
            ops.gemm(dual, b, impl=impl)
        assert ops.gemm(a, b, impl=impl).shape == (3, 5)  # plain tensors inside a level: fine
        assert fwAD.unpack_dual(ops.gemm(dual, b, impl="ootb")).tangent is not None


def test_sparse_operands_are_refused_by_name():
    with pytest.raises(ValueError, match="gemm: b is a torch.sparse_coo tensor"):
        ops.gemm(torch.randn(3, 4), torch.randn(4, 5).to_sparse(), impl="native")


@pytest.fixture
def restore_matmul_precision():
    m = torch.backends.cuda.matmul
    saved = m.fp32_precision, torch.backends.fp32_precision
    yield m
    m.fp32_precision, torch.backends.fp32_precision = saved


@pytest.mark.parametrize(
    "setting, tf32",
    [
        (lambda m: None, False),
        (lambda m: setattr(m, "allow_tf32", True), True),
        (lambda m: torch.set_float32_matmul_precision("high"), True),
        (lambda m: torch.set_float32_matmul_precision("highest"), False),
        (lambda m: setattr(m, "fp32_precision", "tf32"), True),
        (lambda m: setattr(m, "fp32_precision", "ieee"), False),
        (lambda m: setattr(torch.backends, "fp32_precision", "tf32"), True),
    ],
    ids=["default", "allow_tf32", "high", "highest", "new-tf32", "new-ieee", "global-tf32"],
)
def test_tf32_switch_is_read_whichever_api_set_it(restore_matmul_precision, setting, tf32):
    """The CUDA and Triton impls follow torch's TF32 switch. After the newer
    fp32_precision API sets it, torch raises on a read of the legacy allow_tf32 (which
    the CUDA impl read on every call, bf16 included)."""
    from pydeepbench.ops._spec import tf32_matmul

    restore_matmul_precision.fp32_precision = "none"
    torch.backends.fp32_precision = "none"
    setting(restore_matmul_precision)
    assert tf32_matmul() is tf32


@pytest.mark.parametrize("op", ["gemm", "linear"])
@pytest.mark.parametrize(
    "wrap, kind",
    [
        (lambda f, x: torch.func.vmap(f)(x.expand(3, *x.shape)), "batched by torch.func.vmap"),
        (lambda f, x: torch.func.functionalize(f)(x), "functionalized"),
        (lambda f, x: f(torch._efficientzerotensor(x.shape)), "a zero tensor"),
    ],
    ids=["vmap", "functionalize", "zerotensor"],
)
def test_tensors_without_memory_are_named(op, wrap, kind):
    """Our kernels read tensors by address; these have none to read, and torch's own
    messages spoke of data pointers."""
    w = torch.randn(3, 4)
    call = {
        "gemm": lambda x: ops.gemm(x, w.t(), impl="native"),
        "linear": lambda x: ops.linear(x, w, impl="native"),
    }[op]
    first = "a" if op == "gemm" else "x"
    with pytest.raises(
        ValueError, match=f"impl 'native' reads tensors by address and {first} is {kind}"
    ):
        wrap(call, torch.randn(2, 4))
    ootb = {
        "gemm": lambda x: ops.gemm(x, w.t(), impl="ootb"),
        "linear": lambda x: ops.linear(x, w, impl="ootb"),
    }
    assert wrap(ootb[op], torch.randn(2, 4)).shape[-1] == 3  # torch's ops take them

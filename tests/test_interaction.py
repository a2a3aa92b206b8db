"""DLRM dot interaction: formulas, impls vs the float64 reference, layout, bad input."""

import os
import subprocess
import sys

import pytest
import torch
from guard_pages import guarded, guards_work
from hypothesis import given, settings
from hypothesis import strategies as st

from pydeepbench import _native, ops, registry
from pydeepbench.check import compare

SPEC = registry.get_op("dot_interaction")
CPU_IMPLS = [n for n, i in registry.impls("dot_interaction").items() if i.why_not("cpu") is None]
SMOKE = [(1, 2, 1), (3, 3, 7), (5, 5, 8), (64, 27, 16), (7, 27, 33), (31, 9, 128), (2, 40, 12)]


def shape(B, F, D):
    return SPEC.validate_shape(dict(B=B, F=F, D=D))


def checked(impl, s, seed=0):
    inputs = SPEC.make_inputs(s, torch.float32, "cpu", seed)
    out = ops.dot_interaction(**inputs, impl=impl)
    assert out.shape == (s["B"], s["D"] + s["F"] * (s["F"] - 1) // 2)
    return compare(out, SPEC.reference(**inputs), SPEC.tolerance(torch.float32))


def test_formulas():
    s = shape(3, 4, 5)  # 6 pairs
    assert SPEC.flops(s) == 2 * 3 * 5 * 6
    assert SPEC.bytes(s, torch.float32) == 4 * (3 * 4 * 5 + 3 * (5 + 6))


def test_reference_layout_is_dlrms():
    # pair (i, j), i > j, at column D + i(i-1)/2 + j: torch.tril_indices(F, F, -1) order
    x = torch.tensor([[1.0, 0.0]])
    emb = torch.tensor([[2.0, 0.0, 0.0, 3.0, 1.0, 1.0]])  # rows (2,0), (0,3), (1,1)
    out = SPEC.reference(x=x, emb=emb)
    # pairs: (1,0)=2, (2,0)=0, (2,1)=0, (3,0)=1, (3,1)=2, (3,2)=3
    assert out.tolist() == [[1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 2.0, 3.0]]


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("bfd", SMOKE, ids=lambda t: "x".join(map(str, t)))
def test_smoke_grid(impl, bfd):
    r = checked(impl, shape(*bfd))
    assert r.ok, r.message


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_strided_rows(impl):
    tol = SPEC.tolerance(torch.float32)
    base = torch.randn(6, 40)
    x, emb = base[:, :8], base[:, 8:32]  # row stride 40, F = 4
    r = compare(ops.dot_interaction(x, emb, impl=impl), SPEC.reference(x=x, emb=emb), tol)
    assert r.ok, r.message
    xt = torch.randn(8, 6).t()  # column-major: copied to rows
    r = compare(ops.dot_interaction(xt, emb, impl=impl), SPEC.reference(x=xt, emb=emb), tol)
    assert r.ok, r.message


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_one_feature_is_x_alone(impl):
    # F = 1: no pairs; emb is an empty (B, 0) tensor, whose data pointer torch leaves null.
    x = torch.randn(5, 8)
    assert torch.equal(ops.dot_interaction(x, torch.empty(5, 0), impl=impl), x)


def test_native_takes_an_empty_batch_of_strided_views():
    if "native" not in CPU_IMPLS:
        pytest.skip("native interaction kernel is not built")
    x, emb = torch.randn(0, 16)[:, ::2], torch.randn(0, 48)[:, ::2]  # D = 8, F = 4
    assert ops.dot_interaction(x, emb, impl="native").shape == (0, 8 + 6)


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 40),
    F=st.integers(2, 30),
    D=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_native_random_sizes(B, F, D, seed):
    if "native" not in CPU_IMPLS:
        pytest.skip("native interaction not built")
    r = checked("native", shape(B, F, D), seed)
    assert r.ok, r.message


def test_bad_input_is_a_clear_error():
    x, emb = torch.randn(4, 8), torch.randn(4, 24)
    with pytest.raises(ValueError, match="not a multiple"):
        ops.dot_interaction(x, torch.randn(4, 20))
    with pytest.raises(ValueError, match="x has width 0"):
        ops.dot_interaction(torch.randn(4, 0), torch.randn(4, 0))
    with pytest.raises(ValueError, match="rows"):
        ops.dot_interaction(x, torch.randn(5, 24))
    with pytest.raises(ValueError, match="dtype"):
        ops.dot_interaction(x, emb.double())
    with pytest.raises(ValueError, match="2-D"):
        ops.dot_interaction(x[0], emb)
    with pytest.raises(ValueError, match="cannot run here"):
        ops.dot_interaction(x.double(), emb.double())


def test_binding_checks_the_output_shape():
    if "native" not in CPU_IMPLS:
        pytest.skip("native interaction not built")
    x, emb = torch.randn(4, 8), torch.randn(4, 24)
    out = torch.empty(4, 8 + 5)  # F = 4 needs 6 pairs
    with pytest.raises(ValueError, match="out must be 4x14"):
        _native.cpu().dot_interaction(_native.arg(x), _native.arg(emb), _native.arg(out))


@pytest.mark.skipif(not guards_work(), reason="needs mmap and libc mprotect")
@pytest.mark.parametrize("bfd", SMOKE, ids=lambda t: "x".join(map(str, t)))
def test_native_stays_inside_its_buffers(bfd):
    """x, emb and out each end at an inaccessible page: a tail read or written whole
    would crash here."""
    if "native" not in CPU_IMPLS:
        pytest.skip("native interaction not built")
    B, F, D = bfd
    inputs = SPEC.make_inputs(shape(B, F, D), torch.float32, "cpu", 0)
    x, emb = guarded(inputs["x"].shape, torch.float32), guarded(inputs["emb"].shape, torch.float32)
    x.copy_(inputs["x"])
    emb.copy_(inputs["emb"])
    out = guarded((B, D + F * (F - 1) // 2), torch.float32)
    _native.cpu().dot_interaction(_native.arg(x), _native.arg(emb), _native.arg(out))
    r = compare(out, SPEC.reference(x=x, emb=emb), SPEC.tolerance(torch.float32))
    assert r.ok, r.message


def test_generic_path_in_subprocess(tmp_path):
    # The portable kernel, forced by capping the ISA (the AVX2 one runs everywhere else).
    if "native" not in CPU_IMPLS:
        pytest.skip("native interaction not built")
    code = (
        "import torch; from pydeepbench import _native, ops, registry; "
        "from pydeepbench.check import compare; "
        "assert _native.cpu().isa() == 'generic'; "
        "S = registry.get_op('dot_interaction'); "
        "bad = [(B, F, D) for B, F, D in [(1, 2, 1), (3, 5, 7), (9, 27, 16), (4, 6, 33)] "
        "if not compare(ops.dot_interaction(**(i := S.make_inputs(dict(B=B, F=F, D=D), "
        "torch.float32, 'cpu', 0))), S.reference(**i), S.tolerance(torch.float32)).ok]; "
        "assert not bad, bad"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYDEEPBENCH_ISA="generic"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the source tree: it would shadow the installed package
    )
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_negative_views_keep_their_sign(impl):
    x, emb = (torch.randn(6, w, dtype=torch.cfloat).conj().imag for w in (4, 12))
    assert x.is_neg() and emb.is_neg()
    want = ops.dot_interaction(x.resolve_neg(), emb.resolve_neg(), impl="ootb")
    torch.testing.assert_close(ops.dot_interaction(x, emb, impl=impl), want)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_an_empty_batch_gives_an_empty_result(impl):
    out = ops.dot_interaction(torch.randn(0, 4), torch.randn(0, 8), impl=impl)
    assert out.shape == (0, 4 + 3)


def test_vmapped_tensors_are_named():
    """The kernel reads tensors by address: a vmap-batched one has none (torch's message
    spoke of a data pointer); the ootb impl takes it."""
    x, emb = torch.randn(3, 2, 4), torch.randn(3, 2, 8)
    with pytest.raises(ValueError, match="x is batched by torch.func.vmap"):
        torch.func.vmap(lambda a, e: ops.dot_interaction(a, e, impl="native"))(x, emb)
    out = torch.func.vmap(lambda a, e: ops.dot_interaction(a, e, impl="ootb"))(x, emb)
    torch.testing.assert_close(out[1], ops.dot_interaction(x[1], emb[1], impl="ootb"))

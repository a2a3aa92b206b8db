"""The EmbeddingBag training step: every impl's updated rows vs the float64 reference."""

import pytest
import torch

from pydeepbench import ops, registry
from pydeepbench.check import compare

SPEC = registry.get_op("embedding_bags_train")
CPU_IMPLS = [
    n for n, i in registry.impls("embedding_bags_train").items() if i.why_not("cpu") is None
]


def shape(**kw):
    base = dict(tables=3, rows=[40, 5, 200], dim=8, batch=16, pooling=[3, 2, 6])
    base.update(kw)
    return SPEC.validate_shape(base)


def step(impl_name, s, dtype=torch.float32, seed=0):
    inputs = SPEC.make_inputs(s, dtype, "cpu", seed)
    variants = SPEC.variants(inputs)
    impl = registry.get_impl("embedding_bags_train", impl_name)
    own = impl.prepare(variants) if impl.prepare else variants
    out = impl.fn(**own[0])
    ref = SPEC.reference(**variants[0], observe_rows=inputs["observe_rows"])
    return inputs, out, ref


def test_formulas_extend_forward():
    s = shape()
    fwd = registry.get_op("embedding_bags")
    n = SPEC.lookups(s)
    assert SPEC.flops(s) == fwd.flops(s) + 2 * n * 8
    assert (
        SPEC.bytes(s, torch.float32) == fwd.bytes(s, torch.float32) + 16 * 3 * 8 * 4 + 2 * n * 8 * 4
    )


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("mode, weighted", [("sum", False), ("sum", True), ("mean", False)])
def test_step_matches_reference(impl, mode, weighted):
    inputs, out, ref = step(impl, shape(mode=mode, weighted=weighted))
    r = compare(SPEC.observe(out, inputs), ref, SPEC.tolerance(torch.float32))
    assert r.ok, r.message
    # The step really moved the touched rows.
    assert not torch.allclose(ref, inputs["weight"][inputs["observe_rows"]].double())


def test_duplicate_rows_accumulate():
    # One table of 2 rows and 16 bags of 3 lookups: every row repeats many times.
    for impl in CPU_IMPLS:
        inputs, out, ref = step(impl, shape(tables=1, rows=[2], pooling=[3]))
        assert compare(SPEC.observe(out, inputs), ref, SPEC.tolerance(torch.float32)).ok


def test_gate_rejects_wrong_updates():
    inputs, out, ref = step("ootb", shape())
    rows = inputs["observe_rows"]
    twice = out.clone()
    twice[rows] = 2 * out[rows] - inputs["weight"][rows]  # applied the update twice
    assert not compare(SPEC.observe(twice, inputs), ref, SPEC.tolerance(torch.float32)).ok
    decayed = out * 0.999  # touches rows the step must leave alone
    assert not compare(SPEC.observe(decayed, inputs), ref, SPEC.tolerance(torch.float32)).ok


def test_max_mode_is_refused():
    with pytest.raises(ValueError, match="modes sum and mean"):
        shape(mode="max")


# ---- the public sparse steps refuse inputs that share memory with what they update --------

NATIVE = "native" in CPU_IMPLS
TO, IDX, OFF = torch.tensor([0, 6]), torch.tensor([5, 4, 3, 2, 1, 0, 0, 1]), torch.arange(7)
OFF[-1] = 8  # B=6 bags, the last of three lookups: rows updated before others are read


def _dense_grad(grad_out, psw=None):
    g = grad_out.double().repeat_interleave(torch.diff(OFF), 0)
    if psw is not None:
        g = g * psw.double().unsqueeze(1)
    return torch.zeros(6, grad_out.shape[1], dtype=torch.float64).index_add_(0, IDX, g)


def _sgd(w, go, psw=None):
    ops.embedding_bags_sgd_step(w, TO, IDX, OFF, go, 0.5, per_sample_weights=psw)


def _adagrad(w, go, psw=None, mom=None):
    mom = torch.zeros(6) if mom is None else mom
    ops.embedding_bags_adagrad_step(w, mom, TO, IDX, OFF, go, 0.5, per_sample_weights=psw)


@pytest.mark.skipif(not NATIVE, reason="native embedding kernels are not built")
@pytest.mark.parametrize("step", [_sgd, _adagrad])
def test_steps_refuse_grad_out_sharing_the_weight(step):
    """grad_out as the weight itself used to give rows off by up to 0.70 from "compute the
    gradient, then update": the kernel read grad_out rows it had already overwritten."""
    w = torch.randn(6, 4)
    with pytest.raises(ValueError, match="grad_out shares memory with weight"):
        step(w, w)
    base = torch.randn(6 * 4 + 6 * 4 - 4)  # grad_out overlaps the weight's last row
    with pytest.raises(ValueError, match="grad_out shares memory with weight"):
        step(base[:24].view(6, 4), base[20:].view(6, 4))
    # Two storages over the same memory (not views of one): caught alike.
    buf = bytearray(torch.randn(6, 4).numpy().tobytes())
    a = torch.frombuffer(buf, dtype=torch.float32).view(6, 4)
    b = torch.frombuffer(buf, dtype=torch.float32).view(6, 4)
    with pytest.raises(ValueError, match="grad_out shares memory with weight"):
        step(a, b)
    w_before = w.clone()
    step(w, w.clone())  # a copy is fine
    assert not torch.equal(w, w_before)


@pytest.mark.skipif(not NATIVE, reason="native embedding kernels are not built")
@pytest.mark.parametrize("step", [_sgd, _adagrad])
def test_steps_refuse_per_sample_weights_sharing_the_weight(step):
    w = torch.randn(6, 4)
    with pytest.raises(ValueError, match="per_sample_weights shares memory with weight"):
        step(w, torch.ones(6, 4), psw=w.view(-1)[:8])  # error 0.09 before


@pytest.mark.skipif(not NATIVE, reason="native embedding kernels are not built")
def test_adagrad_refuses_momentum_sharing_its_other_tensors():
    w, go = torch.randn(6, 4), torch.randn(6, 4)
    with pytest.raises(ValueError, match="grad_out shares memory with momentum"):
        _adagrad(w, go, mom=go.view(-1)[3:9])  # momentum is contiguous: flat views
    with pytest.raises(ValueError, match="momentum shares memory with weight"):
        _adagrad(w, go, mom=w.view(-1)[10:16])
    psw = torch.rand(14)
    with pytest.raises(ValueError, match="per_sample_weights shares memory with momentum"):
        _adagrad(w, go, psw=psw[:8], mom=psw[2:8])
    _adagrad(w, go, psw=psw[:8], mom=psw[8:])  # adjacent, not overlapping: fine


@pytest.mark.skipif(not NATIVE, reason="native embedding kernels are not built")
@pytest.mark.parametrize("step", [_sgd, _adagrad])
def test_steps_refuse_a_negative_view_to_update(step):
    """z.conj().imag's memory holds -x: updated through its address, a row moved by +lr * g
    instead of -lr * g (the step read and wrote the stored values, not the view's)."""
    w = torch.randn(6, 4, dtype=torch.cfloat).conj().imag
    with pytest.raises(ValueError, match="weight is a negative view"):
        step(w, torch.randn(6, 4))
    if step is _adagrad:
        mom = torch.rand(6, dtype=torch.cfloat).conj().imag
        with pytest.raises(ValueError, match="momentum is a negative view"):
            _adagrad(torch.randn(6, 4), torch.randn(6, 4), mom=mom)
    # grad_out and per_sample_weights are only read: resolved, and the step is exact.
    w, go = torch.randn(6, 4), torch.randn(6, 4, dtype=torch.cfloat).conj().imag
    psw = torch.rand(8, dtype=torch.cfloat).conj().imag
    want = w.double() - 0.5 * _dense_grad(go, psw)
    _sgd(w, go, psw)
    torch.testing.assert_close(w.double(), want)


@pytest.mark.skipif(not NATIVE, reason="native embedding kernels are not built")
def test_a_step_is_an_in_place_update_to_autograd():
    """The per_sample_weights gradient saves the weight: after a step updated it through its
    address, backward used the new rows silently. The step
    bumps the version counter, as torch's in-place ops do, so backward refuses."""
    W, go = torch.randn(6, 4), torch.ones(6, 4)
    psw = torch.ones(8, requires_grad=True)
    out = ops.embedding_bags(W, TO, IDX, OFF, per_sample_weights=psw, impl="native")
    v = W._version
    ops.embedding_bags_sgd_step(W, TO, IDX, OFF, go, 1.0)
    assert W._version > v
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(out.sum(), psw)
    mom = torch.zeros(6)
    ops.embedding_bags_adagrad_step(W, mom, TO, IDX, OFF, go, 0.5)
    assert mom._version > 0
    # A leaf that requires grad is refused under grad mode, as W.sub_(1) is; no_grad is fine.
    W.requires_grad_()
    with pytest.raises(ValueError, match="weight requires grad.*torch.no_grad"):
        ops.embedding_bags_sgd_step(W, TO, IDX, OFF, go, 1.0)
    with torch.no_grad():
        ops.embedding_bags_sgd_step(W, TO, IDX, OFF, go, torch.tensor(1.0))


@pytest.mark.skipif(not NATIVE, reason="native embedding kernels are not built")
@pytest.mark.parametrize(
    "kw, err, match",
    [
        (
            {"w": torch.randn(6, 4, dtype=torch.float64)},
            ValueError,
            "weight must be torch.float32 or torch.bfloat16, got torch.float64",
        ),
        (
            {"mom": torch.zeros(6, dtype=torch.float64)},
            ValueError,
            "momentum must be torch.float32, got torch.float64",
        ),
        (
            {"go": torch.ones(6, 4, dtype=torch.int64)},
            ValueError,
            "grad_out must be a floating-point tensor",
        ),
        (
            {"go": torch.ones(6, 4, dtype=torch.cfloat)},
            ValueError,
            "grad_out must be a floating-point tensor",
        ),
        ({"lr": "0.1"}, TypeError, "lr must be a real number, got str"),
        ({"eps": True}, TypeError, "eps must be a real number, got bool"),
    ],
)
def test_steps_name_a_bad_argument(kw, err, match):
    w, mom = kw.get("w", torch.randn(6, 4)), kw.get("mom", torch.zeros(6))
    go = kw.get("go", torch.ones(6, 4))
    with pytest.raises(err, match=match):
        ops.embedding_bags_adagrad_step(
            w, mom, TO, IDX, OFF, go, kw.get("lr", 0.1), kw.get("eps", 1e-8)
        )


@pytest.mark.skipif(not NATIVE, reason="native embedding kernels are not built")
def test_steps_take_disjoint_views_and_converted_copies():
    # Adjacent slices of one buffer do not overlap: the step runs and is exact.
    base = torch.randn(6 * 4 + 6 * 4)
    w, go = base[:24].view(6, 4), base[24:].view(6, 4)
    want = w.double() - 0.5 * _dense_grad(go)
    _sgd(w, go)
    torch.testing.assert_close(w.double(), want)
    # A bf16 grad_out that is the bf16 weight: the step reads an fp32 copy made first, so
    # this is "compute the gradient, then update", and allowed.
    wb = torch.randn(6, 4).bfloat16()
    want = wb.double() - 0.5 * _dense_grad(wb.float())
    _sgd(wb, wb)
    torch.testing.assert_close(wb.double(), want, atol=2e-2, rtol=1.6e-2)


@pytest.mark.parametrize("impl", ["ootb", "sparse"])
def test_torch_steps_own_leaf_parameters_for_tables_that_require_grad(impl):
    # Their private copy is detached: torch.optim.SGD gets leaf Parameters either way.
    s = shape()
    inputs = SPEC.make_inputs(s, torch.float32, "cpu", 0)
    variants = SPEC.variants(inputs)
    grad_in = [{**v, "weight": v["weight"].requires_grad_(True)} for v in variants]
    own = registry.get_impl("embedding_bags_train", impl).prepare(grad_in)
    assert all(isinstance(m.weight, torch.nn.Parameter) for m in own[0]["modules"])
    with torch.no_grad():
        ref = SPEC.reference(**variants[0], observe_rows=inputs["observe_rows"])
    out = registry.get_impl("embedding_bags_train", impl).fn(**own[0])
    assert compare(SPEC.observe(out.detach(), inputs), ref, SPEC.tolerance(torch.float32)).ok

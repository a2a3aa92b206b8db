"""The EmbeddingBag training step: every impl's updated rows vs the float64 reference."""

import pytest
import torch

from pydeepbench import registry
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

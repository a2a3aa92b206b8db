"""EmbeddingBag: formulas, data generation, every impl vs torch, the gate, bad input."""

import importlib
import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nan_bags import nan_bags
from overcommit import overcommits

from pydeepbench import ops, registry
from pydeepbench.check import compare
from pydeepbench.ops.embedding_bag import ROTATIONS

SPEC = registry.get_op("embedding_bags")
SPEC_IMPLS = registry.impls("embedding_bags")
CPU_IMPLS = [n for n, i in SPEC_IMPLS.items() if i.why_not("cpu") is None]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def shape(**kw):
    base = dict(tables=3, rows=[50, 7, 300], dim=16, batch=8, pooling=[2, 1, 5])
    base.update(kw)
    return SPEC.validate_shape(base)


def test_formulas():
    s = shape(weighted=True)
    n = 8 * (2 + 1 + 5)
    assert SPEC.lookups(s) == n
    assert SPEC.flops(s) == 2 * n * 16
    assert SPEC.flops(shape(mode="mean")) == n * 16 + 8 * 3 * 16
    assert (
        SPEC.bytes(s, torch.float32)
        == n * 16 * 4 + n * 8 + (3 * 8 + 1) * 8 + n * 4 + 8 * 3 * 16 * 4
    )
    # per_sample_weights in the weight's dtype
    assert SPEC.bytes(s, torch.bfloat16) == n * 16 * 2 + n * 8 + 25 * 8 + n * 2 + 8 * 48 * 4
    s32 = shape(index_dtype="int32")
    assert SPEC.bytes(s32, torch.bfloat16) == n * 16 * 2 + n * 4 + 25 * 4 + 8 * 48 * 4


def test_inputs_rotate_and_respect_caps():
    s = shape(rows=[10**6, 7, 300], row_cap=100)
    inputs = SPEC.make_inputs(s, torch.float32, "cpu", 0)
    assert inputs["weight"].shape == (100 + 7 + 100, 16)
    assert inputs["table_offsets"].tolist() == [0, 100, 107, 207]
    vs = SPEC.variants(inputs)
    assert len(vs) == ROTATIONS
    assert not torch.equal(vs[0]["indices"], vs[1]["indices"])  # fresh indices per call
    for v in vs:
        assert v["offsets"][-1] == v["indices"].numel() == SPEC.lookups(s)


def test_zipf_is_skewed_and_scattered():
    s = shape(tables=1, rows=[100_000], pooling=[1], batch=20_000, distribution="zipf")
    idx = SPEC.make_inputs(s, torch.float32, "cpu", 0)["batches"][0]["indices"]
    counts = torch.bincount(idx, minlength=100_000)
    assert counts.max() > 20 * counts.float().mean()  # hot rows exist
    assert int(counts.argmax()) != 0  # and are not simply row 0
    uni = SPEC.make_inputs(
        shape(tables=1, rows=[100_000], pooling=[1], batch=20_000), torch.float32, "cpu", 0
    )["batches"][0]["indices"]
    assert torch.bincount(uni).max() < 10


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("itype", ["int32", "int64"])
def test_batched_impls_match_reference(impl, dtype, mode, itype):
    s = shape(mode=mode, index_dtype=itype)
    inputs = SPEC.make_inputs(s, dtype, "cpu", 1)
    for v in SPEC.variants(inputs)[:2]:
        out = ops.embedding_bags(
            v["weight"], v["table_offsets"], v["indices"], v["offsets"], mode=mode, impl=impl
        )
        r = compare(out, SPEC.reference(**v), SPEC.tolerance(dtype))
        assert r.ok, r.message


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_weighted_sum(impl, dtype):
    # per_sample_weights in the weight's dtype, as torch takes them
    v = SPEC.variants(SPEC.make_inputs(shape(weighted=True), dtype, "cpu", 2))[0]
    assert v["per_sample_weights"].dtype == dtype
    out = ops.embedding_bags(
        v["weight"],
        v["table_offsets"],
        v["indices"],
        v["offsets"],
        per_sample_weights=v["per_sample_weights"],
        impl=impl,
    )
    r = compare(out, SPEC.reference(**v), SPEC.tolerance(dtype))
    assert r.ok, r.message


def test_per_sample_weights_of_another_dtype_are_refused():
    w, idx, off = torch.randn(10, 4).bfloat16(), torch.tensor([1, 2]), torch.tensor([0, 1, 2])
    psw = torch.rand(2, dtype=torch.float16)
    with pytest.raises(
        ValueError, match=r"per_sample_weights must be in the weight's dtype \(torch.bfloat16"
    ):
        ops.embedding_bags(w, torch.tensor([0, 10]), idx, off, per_sample_weights=psw)


# ---- 8-bit rowwise-quantized rows (uint8) ----------------------------------------------


def test_q8_formulas():
    s = shape(weighted=True)
    n = 8 * (2 + 1 + 5)
    # each lookup reads its 16 codes and the row's fp32 scale and bias; weights are fp32
    assert SPEC.bytes(s, torch.uint8) == n * (16 + 8) + n * 8 + 25 * 8 + n * 4 + 8 * 48 * 4
    # uint8: the packed rows beside the fp32 table make_inputs quantizes them from; fp32:
    # the table and the native impls' own copy of it (left out before: native's peak was
    # twice the estimate)
    rows = 50 + 7 + 300
    extra = SPEC.footprint_bytes(s, torch.uint8) - SPEC.footprint_bytes(s, torch.float32)
    assert extra == rows * (16 + 8 + 16 * 4) - rows * 2 * (16 * 4)


def test_quantize_rows_round_trip():
    w = torch.randn(100, 33)
    q = ops.quantize_rows(w)
    assert q.dtype == torch.uint8 and q.shape == (100, 33 + 8)
    step = (w.max(1).values - w.min(1).values) / 255  # one code
    err = (ops.dequantize_rows(q) - w).abs().max(1).values
    assert bool((err <= step * 0.5 + 1e-6).all())
    # Views whose scale and bias do not start 4-byte aligned in their storage (41-byte
    # rows): one row (which .contiguous() leaves a view) and a strided slice.
    full = ops.dequantize_rows(q)
    torch.testing.assert_close(ops.dequantize_rows(q[5:6]), full[5:6])
    torch.testing.assert_close(ops.dequantize_rows(q[3:40:3]), full[3:40:3])


# (impl, mode, weighted): per_sample_weights need mode "sum".
Q8_CASES = [
    (i, m, w)
    for i in CPU_IMPLS
    if SPEC_IMPLS[i].why_not("cpu", torch.uint8) is None
    for m in ("sum", "mean", "max")
    for w in ((False, True) if m == "sum" else (False,))
]


@pytest.mark.parametrize(("impl", "mode", "weighted"), Q8_CASES)
def test_q8_impls_match_reference(impl, mode, weighted):
    s = shape(mode=mode, weighted=weighted, index_dtype="int32")
    inputs = SPEC.make_inputs(s, torch.uint8, "cpu", 3)
    if SPEC_IMPLS[impl].supports(s, torch.uint8, "cpu"):  # FBGEMM's op: sums only
        v = SPEC.variants(inputs)[0]
        with pytest.raises(ValueError, match="pools sums only"):
            ops.embedding_bags(
                v["weight"], v["table_offsets"], v["indices"], v["offsets"], mode=mode, impl=impl
            )
        return
    inputs = SPEC.make_inputs(s, torch.uint8, "cpu", 3)
    for v in SPEC.variants(inputs)[:2]:
        assert v["weight"].dtype == torch.uint8 and v["weight"].shape[1] == 16 + 8
        out = ops.embedding_bags(
            v["weight"],
            v["table_offsets"],
            v["indices"],
            v["offsets"],
            mode=mode,
            per_sample_weights=v["per_sample_weights"],
            impl=impl,
        )
        assert out.dtype == torch.float32 and out.shape == (8, 3 * 16)
        r = compare(out, SPEC.reference(**v), SPEC.tolerance(torch.uint8))
        assert r.ok, r.message


def test_q8_single_table_pools_to_fp32_like_fbgemm():
    g = torch.Generator().manual_seed(0)
    q = ops.quantize_rows(torch.randn(30, 12, generator=g))
    idx, off = torch.randint(0, 30, (20,), generator=g), torch.tensor([0, 4, 4, 11])
    psw = torch.rand(20, generator=g)
    want = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
        q, idx, off, False, 0, False, psw, None, False
    )
    got = ops.embedding_bag(q, idx, off, per_sample_weights=psw)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i != "functional"])
def test_q8_rows_as_a_column_view(impl):
    # ootb hands each table to FBGEMM's op, which refused a non-contiguous one.
    q = ops.quantize_rows(torch.randn(10, 8))
    big = torch.zeros(10, 40, dtype=torch.uint8)
    big[:, 3:19] = q
    to, idx, off = (
        torch.tensor([0, 4, 10]),
        torch.tensor([1, 2, 3, 5]),
        torch.tensor([0, 2, 3, 3, 4]),
    )
    want = ops.embedding_bags(q, to, idx, off, impl="ootb")
    torch.testing.assert_close(ops.embedding_bags(big[:, 3:19], to, idx, off, impl=impl), want)


def test_q8_bad_input():
    q = ops.quantize_rows(torch.randn(10, 4))
    idx, off, to = torch.tensor([1, 2]), torch.tensor([0, 1, 2]), torch.tensor([0, 10])
    with pytest.raises(ValueError, match="per_sample_weights for uint8 rows must be float32"):
        ops.embedding_bags(q, to, idx, off, per_sample_weights=torch.rand(2).half())
    with pytest.raises(ValueError, match="needs D \\+ 8 columns"):
        ops.embedding_bags(q[:, :8], to, idx, off)
    with pytest.raises(ValueError, match="out of range"):
        ops.embedding_bags(q, to, idx + 9, off)
    with pytest.raises(ValueError, match="not uint8"):
        ops.embedding_bags(q, to, idx, off, impl="functional")
    # the parameters are copied on the rows' device (meta: no data, only the placement)
    assert ops.dequantize_rows(q.to("meta")).device.type == "meta"


def test_cpu_kernels_refuse_device_tensors():
    w, to = torch.randn(10, 4), torch.tensor([0, 10])
    idx, off = torch.tensor([1, 2]), torch.tensor([0, 1, 2])
    g = torch.empty(2, 4, device="meta")  # any non-CPU tensor
    with pytest.raises(ValueError, match="runs on the CPU only"):
        ops.embedding_bags_sgd_step(w, to, idx, off, g, 0.1)
    with pytest.raises(ValueError, match="runs on the CPU only"):
        ops.embedding_bags_adagrad_step(w, torch.zeros(10), to, idx, off, g, 0.1)
    with pytest.raises(ValueError, match="runs on the CPU only"):
        ops.embedding_bags_backward(g, (10, 4), to, idx, off)


@pytest.mark.parametrize(
    "arg", ["weight", "table_offsets", "indices", "offsets", "per_sample_weights", "grad_out"]
)
def test_sparse_tensors_are_refused_by_name(arg):
    """Every impl failed on them inside torch or the binding, with messages such as
    "unsupported memory format option Contiguous"."""
    t = dict(
        weight=torch.randn(10, 4),
        table_offsets=torch.tensor([0, 10]),
        indices=torch.tensor([1, 2]),
        offsets=torch.tensor([0, 1, 2]),
        per_sample_weights=torch.ones(2),
        grad_out=torch.randn(2, 4),
    )
    t[arg] = t[arg].to_sparse()
    match = f"{arg} is a torch.sparse_coo tensor; dense"
    lookup = dict(mode="sum", per_sample_weights=t["per_sample_weights"])
    tables = (t["weight"], t["table_offsets"], t["indices"], t["offsets"])
    if arg != "grad_out":
        for impl in CPU_IMPLS:
            with pytest.raises(ValueError, match=match):
                ops.embedding_bags(*tables, impl=impl, **lookup)
    if arg not in ("table_offsets", "grad_out"):
        starts = torch.tensor([0, 1])  # one table: bag starts only
        starts = starts.to_sparse() if arg == "offsets" else starts
        with pytest.raises(ValueError, match=match):
            ops.embedding_bag(t["weight"], t["indices"], starts, **lookup)
    with pytest.raises(ValueError, match=match):
        ops.embedding_bags_sgd_step(*tables, t["grad_out"], 0.1, **lookup)
    if arg != "weight":
        grad_args = (t["grad_out"], (10, 4), *tables[1:])
        with pytest.raises(ValueError, match=match):
            ops.embedding_bags_backward(*grad_args, **lookup)


def test_tensors_without_memory_are_named():
    """The native kernels read tensors by address; vmap's and zero tensors have none."""
    to, idx, off = torch.tensor([0, 10]), torch.tensor([1, 2]), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="weight is batched by torch.func.vmap"):
        torch.func.vmap(lambda w: ops.embedding_bags(w, to, idx, off))(torch.randn(3, 10, 4))
    with pytest.raises(ValueError, match="weight is a zero tensor"):
        ops.embedding_bags(torch._efficientzerotensor((10, 4)), to, idx, off)
    # The backward and the steps too (they had torch's "doesn't have storage").
    w = torch.randn(10, 4)
    with pytest.raises(ValueError, match="embedding_bags_sgd_step .* grad_out is batched"):
        torch.func.vmap(lambda g: ops.embedding_bags_sgd_step(w, to, idx, off, g, 0.1))(
            torch.randn(3, 2, 4)
        )
    with pytest.raises(ValueError, match="embedding_bags_backward .* grad_out is batched"):
        torch.func.vmap(lambda g: ops.embedding_bags_backward(g, (10, 4), to, idx, off))(
            torch.randn(3, 2, 4)
        )


@pytest.mark.parametrize("dtype", [torch.int16, torch.float64, torch.bool])
def test_gradient_index_dtypes_are_named(dtype):
    # The backward and the steps said only "dtype ... cannot be passed to native kernels".
    w, m, g = torch.randn(10, 4), torch.zeros(10), torch.ones(1, 4)
    to, idx, off = torch.tensor([0, 10]), torch.tensor([1], dtype=dtype), torch.tensor([0, 1])
    off = off.to(dtype)
    match = f"indices must be int32 or int64, got {dtype}"
    with pytest.raises(ValueError, match=f"embedding_bags_sgd_step: {match}"):
        ops.embedding_bags_sgd_step(w, to, idx, off, g, 0.1)
    with pytest.raises(ValueError, match=f"embedding_bags_adagrad_step: {match}"):
        ops.embedding_bags_adagrad_step(w, m, to, idx, off, g, 0.1)
    with pytest.raises(ValueError, match=f"embedding_bags_backward: {match}"):
        ops.embedding_bags_backward(g, (10, 4), to, idx, off)
    with pytest.raises(ValueError, match=f"table_offsets must be int64, got {dtype}"):
        ops.embedding_bags_backward(g, (10, 4), to.to(dtype), idx.long(), off.long())
    assert torch.equal(m, torch.zeros(10))  # nothing was updated


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_single_table_matches_torch_functional(impl, mode, include_last_offset):
    w = torch.randn(20, 5)
    idx = torch.tensor([3, 3, 0, 19, 7, 3])  # duplicates, empty bags, single-element bags
    starts = torch.tensor([0, 0, 2, 3, 3, 6])  # bags: [], [3,3], [0], [], [19,7,3], []
    off = torch.cat([starts, torch.tensor([6])]) if include_last_offset else starts
    want = F.embedding_bag(idx, w, off, mode=mode, include_last_offset=include_last_offset)
    got = ops.embedding_bag(
        w, idx, off, mode=mode, include_last_offset=include_last_offset, impl=impl
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_max_mode_treats_nan_as_torch_does(impl):
    w, idx, off = nan_bags()
    want = F.embedding_bag(idx, w, off, mode="max")
    assert want[0, :2].isnan().all() and not want[1].isnan().any()  # order matters to torch
    got = ops.embedding_bag(w, idx, off, mode="max", impl=impl)
    torch.testing.assert_close(got, want, equal_nan=True)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=12),
    dim=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    mode=st.sampled_from(["sum", "mean", "max"]),
)
def test_random_ragged_bags(lengths, dim, seed, mode):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(30, dim, generator=g)
    idx = torch.randint(30, (sum(lengths),), generator=g)
    off = torch.tensor([0] + lengths).cumsum(0)[:-1]
    want = F.embedding_bag(idx, w, off, mode=mode)
    for impl in CPU_IMPLS:
        if impl == "triton":
            continue  # covered by the grid above; the interpreter is slow
        got = ops.embedding_bag(w, idx, off, mode=mode, impl=impl)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize(
    "idx, off, kw, match",
    [
        ([0, 20], [0, 1], {}, r"indices\[1\] = 20 is out of range for table 0 with 20 rows"),
        ([0, -1], [0, 1], {}, "out of range"),
        ([0, 1, 2], [0, 2, 1], {}, r"non-decreasing: offsets\[2\] = 1 < offsets\[1\] = 2"),
        ([0, 1], [1, 1], {}, r"offsets\[0\] must be 0, got 1"),
        # a bag starting past the end: the appended end offset was reported as out of order
        ([0, 1], [0, 3], {}, r"offsets\[-1\] = 3 is past the end of indices \(length 2\)"),
        (
            [0, 1, 2],
            [0, 1, 2],
            {"include_last_offset": True},
            r"offsets\[-1\] = 2 must equal the number of indices 3",
        ),
        ([0, 1], [0, 1], {"mode": "median"}, "mode must be one of"),
        ([0, 1], [0, 1], {"mode": "mean", "per_sample_weights": torch.ones(2)}, "mode='sum'"),
        # weights elsewhere than the rows: the kernels would be handed a foreign pointer
        ([0, 1], [0, 1], {"per_sample_weights": torch.ones(2, device="meta")}, "different dev"),
    ],
)
def test_bad_input(impl, idx, off, kw, match):
    with pytest.raises(ValueError, match=match):
        ops.embedding_bag(torch.randn(20, 4), torch.tensor(idx), torch.tensor(off), impl=impl, **kw)


def test_mixed_index_dtypes_rejected():
    with pytest.raises(ValueError, match="offsets is torch.int64 but indices is torch.int32"):
        ops.embedding_bag(
            torch.randn(5, 2), torch.tensor([1], dtype=torch.int32), torch.tensor([0]), impl="ootb"
        )


def _ignores_last_bag(weight, table_offsets, indices, offsets, mode, per_sample_weights):
    out = SPEC.reference(weight, table_offsets, indices, offsets, mode, per_sample_weights)
    out[-1] = 0
    return out


def _first_row_of_each_bag_only(weight, table_offsets, indices, offsets, mode, per_sample_weights):
    T = table_offsets.numel() - 1
    B = (offsets.numel() - 1) // T
    rows = weight[table_offsets[:-1].repeat_interleave(B) + indices[offsets[:-1]]]
    return rows.view(T, B, -1).permute(1, 0, 2).reshape(B, -1).float()


@pytest.mark.parametrize("bad", [_ignores_last_bag, _first_row_of_each_bag_only])
def test_gate_rejects_known_bad(bad):
    v = SPEC.variants(SPEC.make_inputs(shape(), torch.float32, "cpu", 0))[0]
    r = compare(bad(**v), SPEC.reference(**v), SPEC.tolerance(torch.float32))
    assert not r.ok


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_native_gradient_matches_torch_autograd(mode):
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    w = torch.randn(12, 6, requires_grad=True)
    idx = torch.tensor([3, 3, 0, 11, 7, 3, 5])  # duplicates within and across bags
    off = torch.tensor([0, 0, 2, 3, 7])  # an empty bag first
    g = torch.randn(4, 6)
    F.embedding_bag(idx, w, off[:-1], mode=mode).backward(g)
    w2 = w.detach().clone().requires_grad_(True)
    ops.embedding_bags(w2, torch.tensor([0, 12]), idx, off, mode=mode, impl="native").backward(g)
    torch.testing.assert_close(w2.grad, w.grad, atol=1e-5, rtol=1e-5)


def test_public_sparse_steps_match_dense_math():
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    w = torch.randn(30, 4)
    to, idx, off = (
        torch.tensor([0, 10, 30]),
        torch.tensor([1, 1, 9, 0, 19, 19]),
        torch.tensor([0, 2, 3, 4, 6]),
    )  # T=2 tables, B=2 bags each
    g = torch.randn(2, 8)
    dense = ops.embedding_bags_backward(g, w.shape, to, idx, off)
    sgd = w.clone()
    ops.embedding_bags_sgd_step(sgd, to, idx, off, g, 0.1)
    torch.testing.assert_close(sgd, w - 0.1 * dense)
    ada, mom = w.clone(), torch.zeros(30)
    ops.embedding_bags_adagrad_step(ada, mom, to, idx, off, g, 0.1, 1e-8)
    want_mom = dense.pow(2).mean(1)
    torch.testing.assert_close(mom, want_mom)
    touched = want_mom > 0
    want = w.clone()
    want[touched] -= 0.1 * dense[touched] / (want_mom[touched].sqrt().unsqueeze(1) + 1e-8)
    torch.testing.assert_close(ada, want)


def test_sparse_steps_and_backward_take_a_large_non_contiguous_grad():
    """grad_out as a transposed view: the ops pass a contiguous fp32 copy, which must
    outlive the kernel call (8 MB here: freed inline, glibc unmaps it, a segfault)."""
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    T, B, D, R = 4, 4096, 128, 1000
    g = torch.Generator().manual_seed(3)
    w = torch.randn(T * R, D, generator=g)
    to = torch.arange(T + 1) * R
    idx, off = torch.randint(0, R, (T * B,), generator=g), torch.arange(T * B + 1)
    psw = torch.rand(T * B, generator=g)
    grad_t = torch.randn(T * D, B, generator=g).t()
    grad = grad_t.contiguous()
    for kw in ({}, {"per_sample_weights": psw}):
        want = ops.embedding_bags_backward(grad, w.shape, to, idx, off, **kw)
        got = ops.embedding_bags_backward(grad_t, w.shape, to, idx, off, **kw)
        assert torch.equal(got, want)
        a, b = w.clone(), w.clone()
        ops.embedding_bags_sgd_step(a, to, idx, off, grad, 0.1, **kw)
        ops.embedding_bags_sgd_step(b, to, idx, off, grad_t, 0.1, **kw)
        assert torch.equal(a, b)
        (a, ma), (b, mb) = (w.clone(), torch.zeros(T * R)), (w.clone(), torch.zeros(T * R))
        ops.embedding_bags_adagrad_step(a, ma, to, idx, off, grad, 0.1, 1e-8, **kw)
        ops.embedding_bags_adagrad_step(b, mb, to, idx, off, grad_t, 0.1, 1e-8, **kw)
        assert torch.equal(a, b) and torch.equal(ma, mb)


def test_bf16_tables_step_with_bf16_per_sample_weights():
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    g = torch.Generator().manual_seed(4)
    w = torch.randn(30, 8, generator=g).bfloat16()
    to, idx, off = (
        torch.tensor([0, 10, 30]),
        torch.tensor([1, 1, 9, 0, 19]),
        torch.tensor([0, 2, 3, 4, 5]),
    )
    grad = torch.randn(2, 16, generator=g)
    psw = torch.rand(5, generator=g).bfloat16()
    a, b = w.clone(), w.clone()
    ops.embedding_bags_sgd_step(a, to, idx, off, grad, 0.1, per_sample_weights=psw)
    ops.embedding_bags_sgd_step(b, to, idx, off, grad, 0.1, per_sample_weights=psw.float())
    assert torch.equal(a, b) and not torch.equal(a, w)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_native_zero_width_rows_pool_to_an_empty_output(mode):
    # D = 0: the kernel has nothing to write (the output's data pointer is null), but the
    # binding still checks the indices.
    w, off = torch.empty(20, 0), torch.tensor([0, 2])
    out = ops.embedding_bag(w, torch.tensor([0, 5, 19]), off, mode=mode, impl="native")
    assert out.shape == (2, 0)
    with pytest.raises(ValueError, match="out of range"):
        ops.embedding_bag(w, torch.tensor([0, 20, 1]), off, mode=mode, impl="native")


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_strided_views_are_taken_as_torch_takes_them(impl):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(30, 16, generator=g)[:, ::2]  # column stride 2
    idx = torch.stack([torch.randint(0, 30, (12,), generator=g)] * 2, 1)[:, 0]  # stride 2
    starts = torch.tensor([0, 3, 3, 7, 12, 12])[:-1]
    off = torch.stack([starts, starts], 1)[:, 0]
    want = F.embedding_bag(idx, w, off, mode="sum")
    got = ops.embedding_bag(w, idx, off, mode="sum", impl=impl)
    torch.testing.assert_close(got, want)
    g_t = torch.randn(16, 5, generator=g).t()  # a transposed gradient too
    if impl == "native":
        to, full = torch.tensor([0, 30]), torch.cat([off, torch.tensor([12])])
        dense = ops.embedding_bags_backward(g_t[:, :8], (30, 8), to, idx, full)
        wr = w.clone().requires_grad_(True)
        (F.embedding_bag(idx, wr, off, mode="sum") * g_t[:, :8]).sum().backward()
        torch.testing.assert_close(dense, wr.grad)


# ---- gradients reach the caller's tensors, or the impl says it has none -----------------

GRAD_TO = torch.tensor([0, 10, 30])  # T=2 tables, B=2 bags each
GRAD_IDX = torch.tensor([1, 1, 9, 0, 19, 19, 3])
GRAD_OFF = torch.tensor([0, 2, 3, 4, 7])


def _torch_grads(weight, psw, go, mode="sum"):
    """torch's gradients of the two-table pooling for weight and psw (either may be None)."""
    w = weight.detach().clone().requires_grad_(True)
    p = None if psw is None else psw.detach().clone().requires_grad_(True)
    outs = []
    for t in range(2):
        lo, hi = int(GRAD_OFF[2 * t]), int(GRAD_OFF[2 * t + 2])
        outs.append(
            F.embedding_bag(
                GRAD_IDX[lo:hi] + GRAD_TO[t],
                w,
                GRAD_OFF[2 * t : 2 * t + 2] - lo,
                mode=mode,
                per_sample_weights=None if p is None else p[lo:hi],
            )
        )
    torch.cat(outs, 1).backward(go)
    return w.grad, None if p is None else p.grad


GRAD_IMPLS = [i for i in ("ootb", "functional", "native") if i in CPU_IMPLS]


@pytest.mark.parametrize("impl", GRAD_IMPLS)
@pytest.mark.parametrize("wants", ["weight", "per_sample_weights", "both"])
def test_gradients_reach_the_callers_tensors(impl, wants):
    """ootb's modules used to hold their own Parameter (w.grad stayed None) and native
    dropped per_sample_weights' gradient (its output did not require grad for them)."""
    g = torch.Generator().manual_seed(6)
    w0, psw0 = torch.randn(30, 6, generator=g), torch.rand(7, generator=g)
    go = torch.randn(2, 12, generator=g)
    want_w, want_p = _torch_grads(w0, psw0, go)
    w = w0.clone().requires_grad_(wants != "per_sample_weights")
    psw = psw0.clone().requires_grad_(wants != "weight")
    out = ops.embedding_bags(w, GRAD_TO, GRAD_IDX, GRAD_OFF, per_sample_weights=psw, impl=impl)
    assert out.requires_grad
    out.backward(go)
    if w.requires_grad:
        torch.testing.assert_close(w.grad, want_w)
    else:
        assert w.grad is None
    if psw.requires_grad:
        torch.testing.assert_close(psw.grad, want_p)
    else:
        assert psw.grad is None


@pytest.mark.parametrize("impl", GRAD_IMPLS)
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_single_table_weight_gradient_matches_torch(impl, mode):
    w = torch.randn(20, 5, requires_grad=True)
    idx, off = torch.tensor([3, 3, 0, 19, 7, 3]), torch.tensor([0, 0, 2, 3])
    go = torch.randn(4, 5)
    ops.embedding_bag(w, idx, off, mode=mode, impl=impl).backward(go)
    w2 = w.detach().clone().requires_grad_(True)
    F.embedding_bag(idx, w2, off, mode=mode).backward(go)
    torch.testing.assert_close(w.grad, w2.grad)


def test_ootb_benchmark_modules_keep_their_parameters():
    """OOTB's timed inputs do not require grad: its modules stay what a researcher builds
    (nn.EmbeddingBag.from_pretrained, a Parameter over the packed table's rows)."""
    impl = registry.get_impl("embedding_bags", "ootb")
    v = SPEC.variants(SPEC.make_inputs(shape(), torch.float32, "cpu", 0))
    own = impl.prepare(v)[0]
    for m, start in zip(own["modules"], [0, 50, 57], strict=True):
        assert isinstance(m.weight, torch.nn.Parameter)
        assert m.weight.data_ptr() == v[0]["weight"][start].data_ptr()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.uint8])
def test_native_per_sample_weights_gradient_for_other_row_dtypes(dtype):
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    g = torch.Generator().manual_seed(7)
    w0, go = torch.randn(30, 6, generator=g), torch.randn(2, 12, generator=g)
    if dtype == torch.uint8:
        w = ops.quantize_rows(w0)
        values, psw = ops.dequantize_rows(w), torch.rand(7, generator=g)
    else:
        w = w0.to(dtype)
        values, psw = w.float(), torch.rand(7, generator=g).to(dtype)
    _, want = _torch_grads(values, psw.float(), go)
    psw.requires_grad_(True)
    ops.embedding_bags(w, GRAD_TO, GRAD_IDX, GRAD_OFF, per_sample_weights=psw).backward(go)
    assert psw.grad.dtype == psw.dtype
    tol = 1e-5 if dtype == torch.uint8 else 2e-2
    torch.testing.assert_close(psw.grad.float(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("impl", [i for i in ("native", "triton") if i in CPU_IMPLS])
def test_negative_views_of_every_input_keep_their_values(impl):
    """torch._neg_view(-x) reads as x but holds -x in memory. Triton read the memory: negated
    indices fetched rows before the table (out of bounds), negated offsets pooled nothing."""
    W = torch.randn(10, 4)
    to, idx, off = (
        torch.tensor([0, 5, 10]),
        torch.tensor([0, 1, 2, 3, 4]),
        torch.tensor([0, 2, 4, 4, 5]),
    )
    psw = torch.rand(5)
    want = ops.embedding_bags(W, to, idx, off, per_sample_weights=psw, impl="ootb")
    neg = torch._neg_view
    cases = [(neg(-W), to, idx, off, psw), (W, to, idx, off, neg(-psw))]
    if impl == "triton":  # native's binding reads index arrays by address and refuses these
        cases += [
            (W, neg(-to), idx, off, psw),
            (W, to, neg(-idx), off, psw),
            (W, to, idx, neg(-off), psw),
        ]
    for w, t, i, o, p in cases:
        got = ops.embedding_bags(w, t, i, o, per_sample_weights=p, impl=impl)
        torch.testing.assert_close(got, want)


# torch's forward AD scripts its decompositions on first use (its own deprecation warning)
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("impl", [i for i in ("native", "triton") if i in CPU_IMPLS])
def test_impls_without_forward_mode_refuse_tangents(impl):
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        w = fwAD.make_dual(torch.randn(30, 6), torch.ones(30, 6))
        with pytest.raises(ValueError, match=f"impl '{impl}' computes no forward-mode"):
            ops.embedding_bags(w, GRAD_TO, GRAD_IDX, GRAD_OFF, impl=impl)


@pytest.mark.slow
@pytest.mark.skipif("native" not in CPU_IMPLS, reason="native embedding kernels are not built")
@pytest.mark.skipif(
    not overcommits(16 << 30),
    reason="needs 16 GiB of untouched index memory, past this machine's overcommit limit",
)
def test_max_mode_gradient_refuses_a_bag_of_2_31_lookups():
    # The max kernel keeps a lookup's position in its bag in 32-bit lanes: with argmax (for
    # the backward) a longer bag indexed wild memory and crashed. ~8 s: the check reads
    # 16 GiB of zero pages (the resident set stays small).
    n = 2**31 + 16
    idx = torch.empty(n, dtype=torch.int64)  # fresh pages: zeros
    idx[2**31 + 5] = 1
    w = torch.tensor([[0.0], [5.0]], requires_grad=True)
    with pytest.raises(ValueError, match="bags of fewer than 2\\^31 lookups; bag 0 has"):
        ops.embedding_bags(
            w, torch.tensor([0, 2]), idx, torch.tensor([0, n]), mode="max", impl="native"
        )


@pytest.mark.skipif("native" not in CPU_IMPLS, reason="native embedding kernels are not built")
def test_native_gradient_refuses_a_second_order():
    # The C++ backward is not differentiable: create_graph=True gave a gradient without a
    # graph, and a penalty on it silently contributed nothing.
    w = torch.randn(30, 6, requires_grad=True)
    out = ops.embedding_bags(w, GRAD_TO, GRAD_IDX, GRAD_OFF, impl="native")
    (gw,) = torch.autograd.grad((out**2).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        (gw**2).sum().backward()


def test_native_weight_gradient_needs_fp32():
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    w = torch.randn(30, 6).bfloat16().requires_grad_(True)
    with pytest.raises(ValueError, match="impl 'native' computes no gradient for a torch.bfloat16"):
        ops.embedding_bags(w, GRAD_TO, GRAD_IDX, GRAD_OFF)


def test_ootb_uint8_rows_refuse_a_per_sample_weights_gradient():
    # FBGEMM's op has no autograd kernel: backward used to leave psw.grad None, silently.
    q = ops.quantize_rows(torch.randn(30, 6))
    psw = torch.rand(7, requires_grad=True)
    with pytest.raises(ValueError, match="impl 'ootb' computes no gradient for per_sample_w"):
        ops.embedding_bags(q, GRAD_TO, GRAD_IDX, GRAD_OFF, per_sample_weights=psw, impl="ootb")
    with torch.no_grad():
        out = ops.embedding_bags(
            q, GRAD_TO, GRAD_IDX, GRAD_OFF, per_sample_weights=psw, impl="ootb"
        )
    assert out.shape == (2, 12) and not out.requires_grad


def test_triton_refuses_inputs_that_require_grad():
    if "triton" not in CPU_IMPLS:
        pytest.skip("triton does not run here")
    w, psw = torch.randn(30, 6), torch.rand(7)
    for wg, pg, what in ((True, False, "weight"), (False, True, "per_sample_weights")):
        wr, pr = w.clone().requires_grad_(wg), psw.clone().requires_grad_(pg)
        with pytest.raises(ValueError, match=f"impl 'triton' computes no gradient for {what}"):
            ops.embedding_bags(wr, GRAD_TO, GRAD_IDX, GRAD_OFF, per_sample_weights=pr,
                               impl="triton")  # fmt: skip
        with torch.no_grad():  # the forward alone is fine
            out = ops.embedding_bags(
                wr, GRAD_TO, GRAD_IDX, GRAD_OFF, per_sample_weights=pr, impl="triton"
            )
        want = ops.embedding_bags(w, GRAD_TO, GRAD_IDX, GRAD_OFF, per_sample_weights=psw)
        torch.testing.assert_close(out, want)


# ---- argument checks ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [torch.randn(3, 20), torch.zeros(3, 8, dtype=torch.uint8),
                                 torch.zeros(3, 5, dtype=torch.uint8),
                                 torch.zeros(20, dtype=torch.uint8),
                                 torch.zeros(2, 3, 20, dtype=torch.uint8)])  # fmt: skip
def test_dequantize_rows_needs_2d_uint8_rows_with_scale_and_bias(bad):
    # float32 used to dequantize to garbage; <= 8 columns and 1-D failed with torch's errors
    with pytest.raises(ValueError, match="2-D uint8 rows .* more than 8 columns"):
        ops.dequantize_rows(bad)


def test_dequantize_rows_checks_its_dtype_and_arguments():
    q = ops.quantize_rows(torch.randn(4, 3))
    assert ops.dequantize_rows(q).shape == (4, 3)  # 11 columns: D = 3
    assert ops.dequantize_rows(q[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="floating-point dtype"):
        ops.dequantize_rows(q, torch.int32)
    with pytest.raises(TypeError, match="rows must be a torch.Tensor"):
        ops.dequantize_rows(q.tolist())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dequantize_rows_rounds_once_to_a_narrow_dtype(dtype):
    # Computed in bf16, the scale, the bias and the product were each rounded: values came
    # 1 ulp off the fp32 result rounded once.
    q = ops.quantize_rows(torch.randn(64, 32, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(ops.dequantize_rows(q, dtype), ops.dequantize_rows(q).to(dtype))


@pytest.mark.parametrize("bad", [torch.randn(5), torch.randn(2, 3, 5), torch.randn(3, 0),
                                 torch.ones(3, 4, dtype=torch.int32)])  # fmt: skip
def test_quantize_rows_needs_a_2d_float_table(bad):
    with pytest.raises(ValueError, match="2-D floating-point table"):
        ops.quantize_rows(bad)


def test_quantize_rows_takes_float_tables():
    w = torch.randn(6, 5)
    for t in (w, w.double(), w.bfloat16(), w[:, ::2]):
        q = ops.quantize_rows(t)
        assert q.dtype == torch.uint8 and q.shape == (6, t.shape[1] + 8)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        ops.quantize_rows([[1.0]])
    with pytest.raises(ValueError, match="not a meta tensor"):  # torch's gave float32 rows
        ops.quantize_rows(torch.randn(6, 5, device="meta"))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.float32, torch.int16])
def test_table_offsets_dtype_is_checked_for_every_impl(impl, dtype):
    # int32 used to work with ootb/functional/triton and fail in native's binding; float32
    # under ootb failed slicing ("slice indices must be integers").
    w, idx, off = torch.randn(8, 4), torch.tensor([0, 4, 1, 2, 0, 1]), torch.tensor([0, 2, 3, 5, 6])
    to = torch.tensor([0, 5, 8], dtype=dtype)
    with pytest.raises(ValueError, match="table_offsets must be torch.int64, got " + str(dtype)):
        ops.embedding_bags(w, to, idx, off, impl=impl)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("to", [[0, 8], [0, 5, 8]])
def test_offsets_need_t_times_b_plus_one_entries(impl, to):
    # Empty offsets with one table passed the count check ((0 - 1) % 1 == 0) and failed
    # later with an IndexError (ootb) or "negative dimension -1" (native).
    w, empty = torch.randn(8, 4), torch.tensor([], dtype=torch.int64)
    with pytest.raises(ValueError, match="offsets has 0 entries, not T\\*B\\+1"):
        ops.embedding_bags(w, torch.tensor(to), empty, empty, impl=impl)


@pytest.mark.parametrize("impl", [i for i in ("ootb", "functional") if i in CPU_IMPLS])
def test_torchs_impls_name_per_sample_weights_off_the_weights_dtype(impl):
    # fp32 weights for a bf16 table pass the op's check (native takes them); torch's op
    # raised its own "Expected tensor for argument #1 'weight' to have the same type".
    w, to = torch.randn(8, 4).bfloat16(), torch.tensor([0, 8])
    idx, off = torch.tensor([1, 2, 3]), torch.tensor([0, 2, 3])
    with pytest.raises(ValueError, match="takes per_sample_weights in the weight's dtype"):
        ops.embedding_bags(w, to, idx, off, per_sample_weights=torch.ones(3), impl=impl)


@pytest.mark.parametrize(
    "arg", ["weight", "table_offsets", "indices", "offsets", "per_sample_weights"]
)
def test_non_tensor_arguments_are_named(arg):
    args = {
        "weight": torch.randn(8, 4),
        "table_offsets": torch.tensor([0, 5, 8]),
        "indices": torch.tensor([0, 4, 1, 2, 0, 1]),
        "offsets": torch.tensor([0, 2, 3, 5, 6]),
        "per_sample_weights": torch.rand(6),
    }
    args[arg] = args[arg].tolist()
    with pytest.raises(TypeError, match=f"embedding_bags: {arg} must be a torch.Tensor, got list"):
        ops.embedding_bags(
            args["weight"], args["table_offsets"], args["indices"], args["offsets"],
            per_sample_weights=args["per_sample_weights"],
        )  # fmt: skip
    if arg != "table_offsets":
        single = {**args, "offsets": args["offsets"][:2] if arg == "offsets" else args["offsets"]}
        with pytest.raises(TypeError, match=f"embedding_bag: {arg} must be a torch.Tensor"):
            ops.embedding_bag(
                single["weight"], single["indices"], single["offsets"],
                per_sample_weights=single["per_sample_weights"], include_last_offset=True,
            )  # fmt: skip


@pytest.mark.parametrize("fn", ["sgd", "adagrad", "backward"])
def test_gradient_ops_name_a_bad_mode_and_bad_arguments(fn):
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    w, to = torch.randn(8, 4), torch.tensor([0, 5, 8])
    idx, off, go = (
        torch.tensor([0, 4, 1, 2, 0, 1]),
        torch.tensor([0, 2, 3, 5, 6]),
        torch.randn(2, 8),
    )

    def call(mode="sum", **kw):
        a = {"w": w.clone(), "to": to, "idx": idx, "off": off, "go": go, **kw}
        if fn == "sgd":
            ops.embedding_bags_sgd_step(a["w"], a["to"], a["idx"], a["off"], a["go"], 0.1,
                                        mode=mode)  # fmt: skip
        elif fn == "adagrad":
            ops.embedding_bags_adagrad_step(a["w"], torch.zeros(8), a["to"], a["idx"], a["off"],
                                            a["go"], 0.1, mode=mode)  # fmt: skip
        else:
            ops.embedding_bags_backward(a["go"], (8, 4), a["to"], a["idx"], a["off"], mode=mode)

    # a bare KeyError: 'avg' before
    allowed = "('sum', 'mean', 'max')" if fn == "backward" else "('sum', 'mean')"
    with pytest.raises(ValueError, match=re.escape(f"mode must be one of {allowed}, got 'avg'")):
        call(mode="avg")
    if fn != "backward":
        with pytest.raises(ValueError, match="mode must be one of .* got 'max'"):
            call(mode="max")
    with pytest.raises(TypeError, match="table_offsets must be a torch.Tensor, got list"):
        call(to=[0, 5, 8])
    with pytest.raises(TypeError, match="grad_out must be a torch.Tensor, got NoneType"):
        call(go=None)
    if fn != "backward":
        with pytest.raises(TypeError, match="weight must be a torch.Tensor, got list"):
            call(w=w.tolist())


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("weighted", [False, True])
def test_no_bags_with_indices_gives_an_empty_result_as_torch(impl, weighted):
    # It used to fail with "offsets[0] must be 0, got 6" (native) or alike.
    w, idx = torch.randn(10, 4), torch.tensor([0, 4, 1, 2, 9, 1])
    off = torch.zeros(0, dtype=torch.long)
    psw = torch.rand(6) if weighted else None
    want = F.embedding_bag(idx, w, off, mode="sum", per_sample_weights=psw)
    got = ops.embedding_bag(w, idx, off, per_sample_weights=psw, impl=impl)
    assert got.shape == want.shape == (0, 4) and got.dtype == want.dtype
    if weighted:
        with pytest.raises(
            ValueError, match=r"per_sample_weights has shape \(5,\), indices \(6,\)"
        ):
            ops.embedding_bag(w, idx, off, per_sample_weights=psw[:5], impl=impl)


def test_embedding_bag_default_mode_is_sum_and_documented():
    """The project's callers rely on "sum"; torch's default is "mean": the docstring says so."""
    assert inspect.signature(ops.embedding_bag).parameters["mode"].default == "sum"
    doc = " ".join(ops.embedding_bag.__doc__.split())
    assert 'default mode: "sum" here, "mean" in torch' in doc
    w, idx, off = torch.randn(10, 4), torch.tensor([1, 2, 3]), torch.tensor([0])
    torch.testing.assert_close(ops.embedding_bag(w, idx, off), w[1:4].sum(0, keepdim=True))


def test_large_native_outputs_come_from_the_host_pool_and_cannot_grow():
    """As the README's host-pool paragraph says: 1 MiB or more, not resizable beyond it."""
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    w, idx = torch.randn(100, 256), torch.randint(0, 100, (1024,))
    out = ops.embedding_bag(w, idx, torch.arange(1024))  # 1 MiB of fp32
    assert out.nbytes == 1 << 20
    with pytest.raises(RuntimeError, match="Trying to resize storage that is not resizable"):
        out.resize_(2048, 256)
    small = ops.embedding_bag(w, idx[:16], torch.arange(16))
    small.resize_(2048, 256)  # torch's allocator: resizable


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_native_per_sample_weights_gradient_with_more_bags_than_tables(index_dtype, monkeypatch):
    """T = 3 tables of B = 5 bags (one empty), int32 and int64 indices, and the gradient
    worked out in chunks of a few lookups (PSW_GRAD_CHUNK): a bag's table and batch row
    come from its position t*B + b, which B == T fixtures cannot tell apart."""
    if "native" not in CPU_IMPLS:
        pytest.skip("native embedding kernels are not built")
    eb = importlib.import_module("pydeepbench.ops.embedding_bag")  # the module, not the op
    monkeypatch.setattr(eb, "PSW_GRAD_CHUNK", 3 * 4)  # 3 lookups of D = 4 a chunk
    g = torch.Generator().manual_seed(8)
    T, B, D, rows = 3, 5, 4, (7, 11, 5)
    to = torch.tensor([0, 7, 18, 23])
    lens = torch.tensor([2, 0, 1, 3, 1, 2, 2, 1, 1, 4, 1, 1, 3, 2, 1])  # bag t*B + b
    off = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).to(index_dtype)
    idx = torch.cat(
        [
            torch.randint(0, rows[t], (int(n),), generator=g)
            for t in range(T)
            for n in lens[t * B : (t + 1) * B]
        ]
    ).to(index_dtype)
    w, go = torch.randn(23, D, generator=g), torch.randn(B, T * D, generator=g)
    psw = torch.rand(idx.numel(), generator=g, requires_grad=True)
    ops.embedding_bags(w, to, idx, off, per_sample_weights=psw).backward(go)
    p2 = psw.detach().clone().requires_grad_(True)
    outs = []
    for t in range(T):
        lo, hi = int(off[t * B]), int(off[(t + 1) * B])
        outs.append(
            F.embedding_bag(
                idx[lo:hi].long() + to[t],
                w,
                off[t * B : (t + 1) * B].long() - lo,
                mode="sum",
                per_sample_weights=p2[lo:hi],
            )
        )
    torch.cat(outs, 1).backward(go)
    torch.testing.assert_close(psw.grad, p2.grad)

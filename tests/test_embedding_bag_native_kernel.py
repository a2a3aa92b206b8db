"""Native CPU embedding bags, called through the binding directly (no ops layer).

Every result is compared with torch in float64: torch.nn.functional.embedding_bag per
table for the forward, autograd for the backward, and the update formulas applied to
the autograd gradient for the fused SGD / row-wise Adagrad steps.
"""

import os
import subprocess
import sys

import pytest
import torch
from guard_pages import guarded, guards_work
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quantized_rows import q8_rows

from pydeepbench._native import arg

TESTS = os.path.dirname(os.path.abspath(__file__))  # guard_pages, for the subprocesses
C = pytest.importorskip("pydeepbench._C")
if not hasattr(C, "embedding_bags_forward"):
    pytest.skip("this build has no native embedding bags", allow_module_level=True)

MODES = {"sum": 0, "mean": 1, "max": 2}
WDTYPES = (torch.float32, torch.bfloat16, torch.float16)


def make_problem(
    rows,
    B,
    D,
    lens,
    idx_dtype=torch.int64,
    wdtype=torch.float32,
    psw=False,
    seed=0,
    pad=0,
    hot=None,
):
    """rows: rows per table; lens: T*B bag lengths, table-major. pad: extra weight columns."""
    g = torch.Generator().manual_seed(seed)
    T = len(rows)
    toff = torch.tensor([0] + list(rows), dtype=torch.int64).cumsum(0)
    R = int(toff[-1])
    wfull = torch.randn(R, D + pad, generator=g).to(wdtype)
    weight = wfull[:, :D]  # row stride D + pad
    lens = torch.as_tensor(lens, dtype=torch.int64)
    offsets = torch.zeros(T * B + 1, dtype=torch.int64)
    offsets[1:] = lens.cumsum(0)
    parts = []
    for t in range(T):
        n_t = int(lens[t * B : (t + 1) * B].sum())
        hi = rows[t] if hot is None else min(rows[t], hot)
        parts.append(
            torch.randint(0, max(hi, 1), (n_t,), generator=g)
            if n_t
            else torch.zeros(0, dtype=torch.int64)
        )
    indices = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
    p = torch.rand(indices.numel(), generator=g) * 2 - 0.5 if psw else None
    return dict(
        weight=weight,
        toff=toff,
        indices=indices.to(idx_dtype),
        offsets=offsets.to(idx_dtype),
        psw=p,
        T=T,
        B=B,
        D=D,
    )


def ref_forward(pr, mode, weight=None):
    """float64 (B, T*D) reference through F.embedding_bag, one call per table."""
    w = pr["weight"] if weight is None else weight
    T, B, _D = pr["T"], pr["B"], pr["D"]
    off = pr["offsets"].long()
    idx = pr["indices"].long()
    outs = []
    for t in range(T):
        o = off[t * B : (t + 1) * B + 1]
        ii = idx[o[0] : o[-1]]
        psw = None if pr["psw"] is None else pr["psw"][o[0] : o[-1]].double()
        outs.append(
            torch.nn.functional.embedding_bag(
                ii,
                w[pr["toff"][t] : pr["toff"][t + 1]],
                o[:-1] - o[0],
                mode=mode,
                per_sample_weights=psw,
            )
        )
    return torch.cat(outs, 1) if outs else torch.zeros(B, 0, dtype=torch.float64)


def native_forward(pr, mode, want_argmax=False, out=None, am=None):
    """out and am: the caller's buffers (else fresh ones, filled with junk)."""
    if out is None:
        out = torch.full((pr["B"], pr["T"] * pr["D"]), float("nan"))
    if am is None and want_argmax:
        am = torch.full(out.shape, -7, dtype=torch.int64)
    C.embedding_bags_forward(
        arg(pr["weight"]),
        arg(pr["toff"]),
        arg(pr["indices"]),
        arg(pr["offsets"]),
        arg(out),
        MODES[mode],
        None if pr["psw"] is None else arg(pr["psw"]),
        None if am is None else arg(am),
    )
    return out, am


def native_backward(pr, mode, grad_out, gw, am=None):
    """Accumulates the dense weight gradient into gw."""
    C.embedding_bags_backward_dense(
        arg(grad_out),
        arg(pr["toff"]),
        arg(pr["indices"]),
        arg(pr["offsets"]),
        arg(gw),
        MODES[mode],
        None if pr["psw"] is None else arg(pr["psw"]),
        None if am is None else arg(am),
    )
    return gw


def tol(pr):
    maxlen = int((pr["offsets"][1:] - pr["offsets"][:-1]).max()) if pr["offsets"].numel() > 1 else 1
    return dict(rtol=1e-5, atol=2e-6 * max(maxlen, 1))


def check_forward(pr, mode):
    out, am = native_forward(pr, mode, want_argmax=(mode == "max"))
    # uint8 rows stand for their dequantized values (make_q8); other rows for themselves.
    values = pr["values"] if "values" in pr else pr["weight"].double()
    ref = ref_forward(pr, mode, values)
    torch.testing.assert_close(out.double(), ref, **tol(pr))
    if mode == "max":
        B, T, D = pr["B"], pr["T"], pr["D"]
        off = pr["offsets"].long()
        lens = (off[1:] - off[:-1]).view(T, B).t()  # (B, T)
        empty = (lens == 0).repeat_interleave(D, dim=1)
        assert bool((am[empty] == -1).all())
        cols = torch.arange(T * D).remainder(D).expand(B, -1)
        won = values[am.clamp(min=0), cols]
        # The argmax row holds the max: exactly, or for uint8 rows up to the fp32 roundings
        # of scale * code + bias (at most two, each within 2^-24 of |scale * code| + |bias|).
        err = (won - out.double())[~empty].abs()
        bound = 0.0
        if "magnitude" in pr:
            bound = 2 * 2.0**-24 * pr["magnitude"][am.clamp(min=0), cols][~empty]
        assert bool((err <= bound).all()), float(err.max())
        tables = torch.arange(T).repeat_interleave(D).expand(B, -1)
        lo, hi = pr["toff"][tables], pr["toff"][tables + 1]
        assert bool(((am >= lo) & (am < hi))[~empty].all())  # ... and belongs to bag's table
    return out, am


def ref_grad(pr, mode, grad_out):
    w = pr["weight"].double().clone().requires_grad_(True)
    (ref_forward(pr, mode, w) * grad_out.double()).sum().backward()
    return w.grad


def lens_for(T, B, kind, g):
    if kind == "single":
        return [1] * (T * B)
    if kind == "empty":
        return [0] * (T * B)
    if kind == "ragged":
        return torch.randint(0, 6, (T * B,), generator=g).tolist()
    return torch.randint(0, 40, (T * B,), generator=g).tolist()  # multi-hot


# ---- forward -------------------------------------------------------------------------


@pytest.mark.parametrize("D", [1, 3, 8, 16, 33, 128])
@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_forward_f32_shapes(D, T, mode):
    g = torch.Generator().manual_seed(D * 10 + T)
    rows = [17, 5, 40][:T]
    for kind in ("single", "ragged", "empty"):
        pr = make_problem(rows, 6, D, lens_for(T, 6, kind, g), seed=D, pad=(D % 3))
        check_forward(pr, mode)


@pytest.mark.parametrize("wdtype", WDTYPES)
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
# Column blocks: AVX2 fp32 sum/mean 128 columns, else 64; AVX-512 256, else 128. Widths on
# both sides of each, and tails of every vector width (15: an AVX-512 tail alone).
@pytest.mark.parametrize("D", [3, 15, 16, 33, 72, 100, 128, 129, 256, 257])
def test_forward_dtypes(wdtype, idx_dtype, mode, D):
    g = torch.Generator().manual_seed(D)
    pr = make_problem([30, 1, 9], 8, D, lens_for(3, 8, "multi", g), idx_dtype, wdtype, seed=1)
    check_forward(pr, mode)


@pytest.mark.parametrize("wdtype", WDTYPES)
@pytest.mark.parametrize("D", [1, 8, 33, 100, 128])
def test_forward_per_sample_weights_and_duplicates(wdtype, D):
    g = torch.Generator().manual_seed(3)
    # hot=2: each bag repeats the same two rows many times
    pr = make_problem([50, 20, 3], 5, D, lens_for(3, 5, "multi", g), wdtype=wdtype, psw=True, hot=2)
    check_forward(pr, "sum")


def test_forward_big_parallel_matches():
    # Enough bags that the work is split into many chunks over all threads.
    g = torch.Generator().manual_seed(5)
    T, B = 4, 700
    pr = make_problem([1000, 10, 5000, 1], B, 40, lens_for(T, B, "multi", g), psw=True)
    check_forward(pr, "sum")
    pr["psw"] = None
    check_forward(pr, "max")


def streaming_batch(T, D):
    """A batch whose (B, T*D) fp32 output is twice what the SIMD forwards stream past
    (streaming stores above the threads' L2: csrc/cpu/embedding_bag_simd.h)."""
    threads = torch.get_num_threads()  # the kernels share torch's OpenMP thread count
    return -(-2 * threads * C.cpu_info()["l2_clamped"] // (T * D * 4))


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("D", [16, 144])  # 144: a 128-column block and a 16-column one
def test_forward_streaming_output(wdtype, mode, D):
    g = torch.Generator().manual_seed(D)
    T = 3
    B = streaming_batch(T, D)
    lens = torch.randint(0, 3, (T * B,), generator=g).tolist()  # one-hot, empty, pairs
    q8 = wdtype == torch.uint8
    pr = make_problem(
        [100, 7, 3000],
        B,
        D,
        lens,
        wdtype=torch.float32 if q8 else wdtype,
        seed=2,
        psw=mode == "sum",
    )
    check_forward(make_q8(pr) if q8 else pr, mode)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_forward_random_ragged(data):
    T = data.draw(st.integers(1, 4))
    B = data.draw(st.integers(0, 9))
    D = data.draw(st.sampled_from([1, 2, 7, 8, 9, 16, 31, 64, 65, 130]))
    rows = data.draw(st.lists(st.integers(1, 60), min_size=T, max_size=T))
    lens = data.draw(st.lists(st.integers(0, 12), min_size=T * B, max_size=T * B))
    mode = data.draw(st.sampled_from(["sum", "mean", "max"]))
    psw = mode == "sum" and data.draw(st.booleans())
    wdtype = data.draw(st.sampled_from([*WDTYPES, torch.uint8]))
    idx_dtype = data.draw(st.sampled_from([torch.int32, torch.int64]))
    q8 = wdtype == torch.uint8
    pad = data.draw(st.integers(0, 3))
    pr = make_problem(
        rows,
        B,
        D,
        lens,
        idx_dtype,
        torch.float32 if q8 else wdtype,
        psw,
        seed=data.draw(st.integers(0, 99)),
        pad=0 if q8 else pad,
    )
    check_forward(make_q8(pr, pad=pad) if q8 else pr, mode)


# ---- backward --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("D", [1, 3, 16, 33, 128])
def test_backward_dense(mode, idx_dtype, D):
    g = torch.Generator().manual_seed(D)
    T, B = 3, 9
    pr = make_problem(
        [13, 2, 30], B, D, lens_for(T, B, "ragged", g), idx_dtype, psw=(mode == "sum"), hot=6
    )
    _, am = native_forward(pr, mode, want_argmax=(mode == "max"))
    grad_out = torch.randn(B, T * D, generator=g)
    gw = native_backward(pr, mode, grad_out, torch.zeros(pr["weight"].shape[0], D), am)
    torch.testing.assert_close(gw.double(), ref_grad(pr, mode, grad_out), rtol=1e-5, atol=1e-5)


def test_backward_dense_accumulates_and_many_duplicates():
    g = torch.Generator().manual_seed(9)
    T, B, D = 2, 3000, 24
    pr = make_problem([5, 40000], B, D, lens_for(T, B, "ragged", g), hot=50)
    grad_out = torch.randn(B, T * D, generator=g)
    gw = native_backward(pr, "mean", grad_out, torch.ones(40005, D))
    torch.testing.assert_close(
        gw.double(), 1 + ref_grad(pr, "mean", grad_out), rtol=1e-5, atol=1e-4
    )


# ---- fused sparse optimizer steps --------------------------------------------------------


def touched_rows(pr):
    off, idx, B = pr["offsets"].long(), pr["indices"].long(), pr["B"]
    rows = []
    for t in range(pr["T"]):
        rows.append(idx[off[t * B] : off[(t + 1) * B]] + pr["toff"][t])
    return torch.unique(torch.cat(rows))


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("D", [1, 3, 33, 128])
@pytest.mark.parametrize("opt", ["sgd", "adagrad"])
def test_sparse_steps(wdtype, mode, idx_dtype, D, opt):
    g = torch.Generator().manual_seed(D + 7)
    T, B = 3, 40
    # 100 hot rows out of 5000: duplicates within and across bags, most rows untouched
    pr = make_problem(
        [2000, 7, 3000],
        B,
        D,
        lens_for(T, B, "multi", g),
        idx_dtype,
        wdtype,
        psw=(mode == "sum"),
        pad=1,
        hot=100,
    )
    grad_out = torch.randn(B, T * D, generator=g)
    grad = ref_grad(pr, mode, grad_out)
    w0 = pr["weight"].clone()
    lr, eps = 0.3, 1e-6
    if opt == "sgd":
        C.embedding_bags_sgd_step(
            arg(pr["weight"]),
            arg(pr["toff"]),
            arg(pr["indices"]),
            arg(pr["offsets"]),
            arg(grad_out),
            lr,
            MODES[mode],
            None if pr["psw"] is None else arg(pr["psw"]),
        )
        expect = w0.double() - lr * grad
    else:
        mom = torch.rand(w0.shape[0], generator=g)
        m0 = mom.clone()
        C.embedding_bags_adagrad_step(
            arg(pr["weight"]),
            arg(mom),
            arg(pr["toff"]),
            arg(pr["indices"]),
            arg(pr["offsets"]),
            arg(grad_out),
            lr,
            eps,
            MODES[mode],
            None if pr["psw"] is None else arg(pr["psw"]),
        )
        mexp = m0.double() + (grad * grad).mean(1)
        expect = w0.double() - lr * grad / (mexp.sqrt() + eps)[:, None]
    hit = torch.zeros(w0.shape[0], dtype=torch.bool)
    hit[touched_rows(pr)] = True
    assert 0 < int(hit.sum()) < w0.shape[0]
    assert torch.equal(pr["weight"][~hit], w0[~hit])  # untouched rows: bit for bit
    if opt == "adagrad":
        assert torch.equal(mom[~hit], m0[~hit])
        torch.testing.assert_close(mom[hit].double(), mexp[hit], rtol=1e-5, atol=1e-6)
    if wdtype == torch.float32:
        torch.testing.assert_close(pr["weight"][hit].double(), expect[hit], rtol=1e-5, atol=1e-5)
    else:  # one bf16 rounding of the fp32 update
        torch.testing.assert_close(
            pr["weight"][hit].double(), expect[hit].to(wdtype).double(), rtol=2**-7, atol=1e-5
        )


@pytest.mark.parametrize("opt", ["sgd", "adagrad"])
def test_sparse_step_deterministic_across_threads(opt):
    g = torch.Generator().manual_seed(11)
    T, B, D = 2, 4000, 16
    pr = make_problem([100000, 50], B, D, lens_for(T, B, "ragged", g), hot=300, psw=True)
    grad_out = torch.randn(B, T * D, generator=g)
    results = []
    prev = torch.get_num_threads()
    try:
        for nthreads in (1, prev, prev):
            torch.set_num_threads(nthreads)
            w = pr["weight"].clone()
            mom = torch.zeros(w.shape[0])
            a = (arg(w), arg(pr["toff"]), arg(pr["indices"]), arg(pr["offsets"]), arg(grad_out))
            if opt == "sgd":
                C.embedding_bags_sgd_step(*a, 0.1, 0, arg(pr["psw"]))
            else:
                C.embedding_bags_adagrad_step(a[0], arg(mom), *a[1:], 0.1, 1e-8, 0, arg(pr["psw"]))
            results.append((w, mom))
    finally:
        torch.set_num_threads(prev)
    for w, mom in results[1:]:
        assert torch.equal(w, results[0][0]) and torch.equal(mom, results[0][1])
    expect = pr["weight"].double() - 0.1 * ref_grad(pr, "sum", grad_out)
    if opt == "sgd":
        torch.testing.assert_close(results[0][0].double(), expect, rtol=1e-5, atol=1e-5)


# ---- bad input -------------------------------------------------------------------------


def bad_call(pr, mode=0, out=None, psw=None, fn="forward"):
    out = torch.empty(pr["B"], pr["T"] * pr["D"]) if out is None else out
    if fn == "forward":
        C.embedding_bags_forward(
            arg(pr["weight"]),
            arg(pr["toff"]),
            arg(pr["indices"]),
            arg(pr["offsets"]),
            arg(out),
            mode,
            psw,
            None,
        )
    else:
        C.embedding_bags_sgd_step(
            arg(pr["weight"]),
            arg(pr["toff"]),
            arg(pr["indices"]),
            arg(pr["offsets"]),
            arg(out),
            0.1,
            mode,
            psw,
        )


@pytest.mark.parametrize("fn", ["forward", "sgd"])
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
def test_bad_indices(fn, idx_dtype):
    pr = make_problem([10, 4, 100], 3, 8, [2] * 9, idx_dtype)
    w0 = pr["weight"].clone()
    pr["indices"][13] = 100
    with pytest.raises(
        ValueError,
        match=r"indices\[13\] = 100 is out of range for table 2 "
        r"with 100 rows",
    ):
        bad_call(pr, fn=fn)
    pr["indices"][13] = 0
    pr["indices"][7] = 4
    with pytest.raises(ValueError, match=r"indices\[7\] = 4 is out of range for table 1 with 4"):
        bad_call(pr, fn=fn)
    pr["indices"][7] = -1
    with pytest.raises(ValueError, match=r"indices\[7\] = -1 is out of range"):
        bad_call(pr, fn=fn)
    assert torch.equal(pr["weight"], w0)


def test_bad_index_found_in_parallel_scan():
    pr = make_problem([50, 200000], 1000, 4, [100] * 2000)
    pr["indices"][150000] = 200000
    pr["indices"][190000] = -5
    with pytest.raises(ValueError, match=r"indices\[150000\] = 200000 is out of range for table 1"):
        bad_call(pr)


def test_bad_offsets_and_options():
    pr = make_problem([10, 10], 3, 8, [2, 1, 3, 0, 2, 2])
    pr["offsets"][2] = 7  # offsets: 0 2 7 6 6 8 10
    with pytest.raises(
        ValueError,
        match=r"offsets must be non-decreasing: offsets\[3\] = 6 < "
        r"offsets\[2\] = 7 \(table 0, bag 2\)",
    ):
        bad_call(pr)
    pr = make_problem([10, 10], 3, 8, [2, 1, 3, 0, 2, 2])
    pr["offsets"][-1] -= 1
    with pytest.raises(ValueError, match=r"offsets\[-1\] = 9 must equal the number of indices 10"):
        bad_call(pr)
    pr = make_problem([10, 10], 3, 8, [2, 1, 3, 0, 2, 2])
    pr["offsets"][0] = 1
    with pytest.raises(ValueError, match=r"offsets\[0\] must be 0"):
        bad_call(pr)
    pr = make_problem([10, 10], 3, 8, [2, 1, 3, 0, 2, 2])
    with pytest.raises(ValueError, match=r"per_sample_weights are only supported with mode 0"):
        bad_call(pr, mode=1, psw=arg(torch.ones(10)))
    with pytest.raises(ValueError, match=r"one weight per index"):
        bad_call(pr, mode=0, psw=arg(torch.ones(9)))
    with pytest.raises(ValueError, match=r"mode must be"):
        bad_call(pr, mode=3)
    with pytest.raises(ValueError, match=r"out must be 3x16"):
        bad_call(pr, out=torch.empty(3, 8))
    with pytest.raises(ValueError, match=r"T\*B\+1"):
        pr2 = dict(pr, offsets=pr["offsets"][:-1].contiguous())
        bad_call(pr2)
    with pytest.raises(ValueError, match=r"offsets must have the dtype of indices"):
        bad_call(dict(pr, offsets=pr["offsets"].int()))
    with pytest.raises(ValueError, match=r"table_offsets\[-1\] = 20 must equal .* 19"):
        bad_call(dict(pr, weight=pr["weight"][:19]))
    with pytest.raises(ValueError, match=r"mode 0 \(sum\) or 1 \(mean\)"):
        bad_call(pr, mode=2, fn="sgd")
    with pytest.raises(ValueError, match=r"argmax"):
        gw = torch.zeros(20, 8)
        am = torch.full((3, 16), 15, dtype=torch.int64)  # row 15 is table 1's, not table 0's
        C.embedding_bags_backward_dense(
            arg(torch.ones(3, 16)),
            arg(pr["toff"]),
            arg(pr["indices"]),
            arg(pr["offsets"]),
            arg(gw),
            2,
            None,
            arg(am),
        )


# ---- no access past the end of any buffer ------------------------------------------------


@pytest.mark.skipif(not guards_work(), reason="needs mmap and libc mprotect")
def test_guard_page_faults(tmp_path):
    """The guard works: one byte read past a guarded tensor kills the process."""
    code = (
        f"import ctypes, sys; sys.path.insert(0, {TESTS!r}); "
        f"import torch; from guard_pages import guarded; t = guarded((5, 3), torch.float32); "
        f"print(ctypes.string_at(t.data_ptr() + t.numel() * 4 - 1, 1), flush=True); "
        f"ctypes.string_at(t.data_ptr() + t.numel() * 4, 1); print('read past the end')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert r.returncode == -11 and "read past" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith("b'"), r.stdout + r.stderr  # the last byte itself was readable


@pytest.mark.skipif(not guards_work(), reason="needs mmap and libc mprotect")
@pytest.mark.parametrize("wdtype", WDTYPES)
@pytest.mark.parametrize("D", [1, 3, 15, 17, 33, 129])
def test_no_access_past_buffers(wdtype, D):
    """Weight, output, argmax and the weight gradient each end at a guard page, and
    each non-empty bag looks up its table's last row: the last table's last row and
    the last bag's output are the buffers' last bytes, read and written by tails."""
    g = torch.Generator().manual_seed(D)
    rows, B = [9, 4], 3
    T = len(rows)
    pr = make_problem(rows, B, D, lens_for(T, B, "ragged", g), torch.int32, wdtype, psw=True)
    w = guarded(pr["weight"].shape, wdtype)
    w.copy_(pr["weight"])
    pr["weight"] = w
    lens = pr["offsets"][1:] - pr["offsets"][:-1]
    for g_ in range(T * B):  # each non-empty bag's first lookup: its table's last row
        if lens[g_] > 0:
            pr["indices"][pr["offsets"][g_]] = rows[g_ // B] - 1
    for mode in ("sum", "mean", "max"):
        pr_m = dict(pr, psw=pr["psw"] if mode == "sum" else None)
        out = guarded((B, T * D), torch.float32)
        am = guarded((B, T * D), torch.int64) if mode == "max" else None
        native_forward(pr_m, mode, out=out, am=am)
        ref = ref_forward(pr_m, mode, w.double())
        torch.testing.assert_close(out.double(), ref, **tol(pr_m))
        if mode == "sum":
            gw = guarded((sum(rows), D), torch.float32).zero_()
            native_backward(pr_m, mode, out, gw)  # out: any (B, T*D) gradient
            torch.testing.assert_close(gw.double(), ref_grad(pr_m, mode, out), rtol=1e-5, atol=1e-5)


# ---- 8-bit rowwise-quantized rows ------------------------------------------------------


def make_q8(pr, pad=0, guard=False):
    """pr with its weight replaced by random uint8 rows (D codes, fp32 scale, fp32 bias;
    row stride D + 8 + pad bytes, or a guarded buffer ending at the last row), and
    `values`, the float64 rows they stand for (scale * code + bias)."""
    R, D = pr["weight"].shape
    g = torch.Generator().manual_seed(R * 1000 + D)
    out = guarded((R, D + 8), torch.uint8) if guard else None
    weight, values, magnitude = q8_rows(R, D, g, pad, out)
    return dict(pr, weight=weight, values=values, magnitude=magnitude)


@pytest.mark.parametrize("D", [1, 7, 8, 15, 16, 17, 33, 128, 129, 257])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
def test_q8_forward(D, mode, idx_dtype):
    g = torch.Generator().manual_seed(D)
    pr = make_problem([20, 3, 7], 6, D, lens_for(3, 6, "ragged", g), idx_dtype, psw=mode == "sum")
    check_forward(make_q8(pr, pad=5), mode)


@pytest.mark.parametrize("D", [1, 15, 33])
def test_q8_no_access_past_buffers(D):
    """The last table's last row (its codes' tail, then its scale and bias) is the
    weight buffer's last bytes, and every non-empty bag looks it up."""
    g = torch.Generator().manual_seed(D)
    rows, B = [9, 4], 3
    pr = make_problem(rows, B, D, lens_for(2, B, "ragged", g), torch.int32, psw=True)
    lens = pr["offsets"][1:] - pr["offsets"][:-1]
    for g_ in range(2 * B):
        if lens[g_] > 0:
            pr["indices"][pr["offsets"][g_]] = rows[g_ // B] - 1
    pr = make_q8(pr, guard=True)
    for mode in ("sum", "mean", "max"):
        out = guarded((B, 2 * D), torch.float32)
        pr_m = dict(pr, psw=pr["psw"] if mode == "sum" else None)
        native_forward(pr_m, mode, out=out)
        torch.testing.assert_close(out.double(), ref_forward(pr_m, mode, pr["values"]), **tol(pr_m))


def test_q8_rows_need_their_scale_and_bias():
    pr = make_problem([4], 2, 8, [1, 2])
    w = torch.zeros(4, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="needs D \\+ 8 columns"):
        native_forward(dict(pr, weight=w), "sum")


# ---- the paths a narrower ISA takes ----------------------------------------------------


def sweep_isa(isa):
    """Forward (and for generic, backward and steps) on a small grid; run in a process
    whose PYDEEPBENCH_ISA caps the kernels at `isa` (the default process runs the best)."""
    assert C.isa() == isa, C.isa()
    g = torch.Generator().manual_seed(0)
    for wdtype in WDTYPES:
        for D in (1, 8, 15, 33, 128, 129, 257):
            for mode in ("sum", "mean", "max"):
                pr = make_problem(
                    [20, 3, 7],
                    5,
                    D,
                    lens_for(3, 5, "ragged", g),
                    torch.int32,
                    wdtype,
                    psw=(mode == "sum"),
                    pad=1,
                )
                check_forward(pr, mode)
    for D in (1, 8, 15, 33, 129):
        for mode in ("sum", "mean", "max"):
            test_q8_forward(D, mode, torch.int64)
    test_q8_no_access_past_buffers(15)
    test_forward_streaming_output(torch.float32, "max", 144)
    test_forward_streaming_output(torch.bfloat16, "sum", 16)
    for wdtype in WDTYPES:
        for D in (3, 15, 33):
            test_no_access_past_buffers(wdtype, D)
    # The default process runs the AVX2 dense backward and, on AVX-512 CPUs, the AVX-512
    # sparse step: the narrower builds of each are checked here.
    if isa == "generic":
        test_backward_dense("sum", torch.int64, 33)
        test_backward_dense("max", torch.int32, 16)
    test_sparse_steps(torch.float32, "mean", torch.int64, 33, "adagrad")
    test_sparse_steps(torch.bfloat16, "sum", torch.int32, 3, "sgd")
    print(isa, "ok")


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_narrower_isa_in_subprocess(tmp_path, isa):
    if isa == "avx2" and C.isa() == "generic":
        pytest.skip("this CPU has no AVX2+FMA: the generic path is the default one")
    env = dict(os.environ, PYDEEPBENCH_ISA=isa)
    code = (
        f"import importlib.util, sys; sys.path.insert(0, {TESTS!r}); "
        f"s = importlib.util.spec_from_file_location('t', "
        f"{os.path.abspath(__file__)!r}); m = importlib.util.module_from_spec(s); "
        f"s.loader.exec_module(m); m.sweep_isa({isa!r})"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and f"{isa} ok" in r.stdout, r.stdout + r.stderr

"""Kernel-level tests of the native CPU GEMM (pydeepbench._C.gemm) against torch in float64.

Every ISA path the CPU supports is exercised in its own subprocess (PYDEEPBENCH_ISA is
read once per process). Covers sizes 0, 1, primes, K = 0, NN/TN/NT/strided operands,
padded ldc, bias/ReLU, f32 and bf16, and the small-M / small-N / packed paths.
Standalone: python tests/test_gemm_native_kernel.py [--isa avx2] [--quick]
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import torch
from guard_pages import guarded, guards_work

CODES = {torch.float32: 0, torch.bfloat16: 1}
SIZES = [0, 1, 2, 7, 16, 31, 127, 257]


def _arg(t: torch.Tensor):
    return (t.data_ptr(), list(t.shape), list(t.stride()), CODES.get(t.dtype, 0))


def native_gemm(a, b, out, bias=None, relu=False):
    import pydeepbench._C as C

    C.gemm(_arg(a), _arg(b), _arg(out), None if bias is None else _arg(bias), relu)
    return out


def make_operand(rows, cols, layout, dtype, gen):
    """A rows x cols view with the given memory layout."""
    if layout == "row":
        t = torch.randn(rows, cols, generator=gen)
    elif layout == "col":  # transposed view
        t = torch.randn(cols, rows, generator=gen).t()
    else:  # strided in both dims
        t = torch.randn(rows * 2 + 1, cols * 3 + 1, generator=gen)[1::2, 1::3][:rows, :cols]
    return t.to(dtype) if dtype != torch.float32 else t


def tolerance(K, ref, dtype):
    """Allowed |error| against float64: fp32 accumulation over K, plus for bf16 the fp32
    sums rounded once to bf16 (2^-8 relative)."""
    if dtype == torch.float32:
        return 1e-5 * (K + 1) ** 0.5 * 4 + 1e-5 * ref.abs()
    return 2e-3 * (K + 1) ** 0.5 + ref.abs() / 128


def at_guard(t):
    """t copied into memory that ends at a guard page, in its own layout (row or col)."""
    if t.dim() == 2 and t.stride(0) == 1 and t.shape[1] > 1:  # a transposed view
        return at_guard(t.t().contiguous()).t()
    g = guarded(t.shape, t.dtype)
    g.copy_(t)
    return g


def check_case(M, N, K, la, lb, dtype, use_bias, relu, gen, ldc_pad=3, guard=False):
    """guard: A, B, bias and C each end at an inaccessible page (C unpadded), so an
    edge tile that reads or writes past its operand crashes the run."""
    a = make_operand(M, K, la, dtype, gen)
    b = make_operand(K, N, lb, dtype, gen)
    bias = torch.randn(N, generator=gen) if use_bias else None
    if guard:
        a, b = at_guard(a), at_guard(b)
        bias = None if bias is None else at_guard(bias)
        ldc_pad = 0
    out_full = torch.full((M, N + ldc_pad), 12345.0, dtype=dtype)
    if guard:
        out_full = at_guard(out_full)
    out = out_full[:, :N]
    native_gemm(a, b, out, bias, relu)
    ref = a.double() @ b.double()
    if bias is not None:
        ref = ref + bias.double()
    if relu:
        ref = ref.clamp_min(0)
    got = out.double()
    tol = tolerance(K, ref, dtype)
    err = (got - ref).abs()
    ok = bool((err <= tol).all())
    if ldc_pad and M > 0:
        ok = ok and bool((out_full[:, N:] == 12345.0).all())  # nothing written past N
    assert ok, (
        f"M={M} N={N} K={K} A={la} B={lb} {dtype} bias={use_bias} relu={relu}: "
        f"max err {err.max().item() if err.numel() else 0}"
    )


def run_all(quick=False):
    gen = torch.Generator().manual_seed(0)
    sizes = [0, 1, 7, 31, 257] if quick else SIZES
    n = 0
    layouts = ["row", "col", "strided"]
    for M, N, K in itertools.product(sizes, sizes, sizes):
        for dtype in (torch.float32, torch.bfloat16):
            for la, lb in itertools.product(layouts, layouts):
                if (la, lb) not in (("row", "row"), ("row", "col"), ("col", "row")) and (
                    (M + N + K) % 3 != 0
                ):
                    continue  # strided combos on a third of the shapes
                use_bias = (M + 2 * N + K + n) % 2 == 0
                relu = (M + N + 3 * K + n) % 3 != 0
                check_case(M, N, K, la, lb, dtype, use_bias, relu, gen)
                n += 1
    # multi K-block, multi NC/MC block shapes (bf16 scratch accumulation path)
    for M, N, K in [
        (300, 200, 1100),
        (64, 1030, 700),
        (700, 40, 1500),
        (5, 3000, 600),
        (20, 5, 2000),
        (33, 9, 3001),
        (3, 9000, 40),
        (1, 17000, 21),
        (1100, 1100, 1024),  # several M blocks and NC blocks capped so KC x NC fits L2/2
    ]:
        for dtype in (torch.float32, torch.bfloat16):
            for la, lb in (("row", "row"), ("row", "col"), ("col", "row")):
                check_case(M, N, K, la, lb, dtype, True, True, gen)
                n += 1
    # every path's edges against guard pages: small-M/N paths, GEMV, packed edge tiles
    if guards_work():
        for M, N, K in itertools.product([1, 7, 31, 257], [1, 5, 17, 257], [1, 13, 257]):
            for dtype in (torch.float32, torch.bfloat16):
                for la, lb in (("row", "row"), ("row", "col"), ("col", "row")):
                    check_case(M, N, K, la, lb, dtype, N % 2 == 1, True, gen, guard=True)
                    n += 1
    return n


def _isas():
    import pydeepbench._C as C

    with open("/proc/cpuinfo") as f:
        flags = f.read()
    isas = ["generic"]
    if " avx2" in flags and " fma" in flags:
        isas.append("avx2")
    if " avx512f" in flags and " avx512bw" in flags:
        isas.append("avx512")
    if " avx512_bf16" in flags:
        isas.append("avx512_bf16")
    if C.cpu_info()["amx_bf16"]:  # CPU bits, OS state and the process's permission
        isas.append("amx")
    return isas


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512_bf16", "amx"])
def test_gemm_kernel_paths(isa):
    pytest.importorskip("pydeepbench._C")
    if isa not in _isas():
        pytest.skip(f"CPU lacks {isa}")
    env = dict(os.environ, PYDEEPBENCH_ISA=isa)
    r = subprocess.run(
        [sys.executable, __file__, "--quick"], env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stdout + r.stderr


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--isa")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.isa:
        os.environ["PYDEEPBENCH_ISA"] = args.isa
    count = run_all(args.quick)
    print(f"ok: {count} cases, PYDEEPBENCH_ISA={os.environ.get('PYDEEPBENCH_ISA', '')}")


@pytest.mark.parametrize(
    "M, N, K, b_t, path",
    [
        (1, 512, 256, True, "small_m_dot"),  # x @ W.t() with tiny M: stream W's rows
        (1, 512, 256, False, "small_m_rowb"),  # tiny M, row-major B: stream B's rows
        (2048, 4, 256, True, "small_n_dot"),  # small N: stream A's rows
        (2048, 1, 256, True, "gemv"),  # N = 1 (AVX-512; the small-N dot form on AVX2)
        (256, 256, 256, False, "packed"),  # the packed, register-tiled main path
        (7, 7, 0, False, "zero_k"),
    ],
)
def test_each_code_path_is_taken_and_correct(M, N, K, b_t, path):
    """The dispatcher's paths are all reached by the shapes meant for them."""
    from pydeepbench import _native

    a = torch.randn(M, K)
    b = torch.randn(N, K).t() if b_t else torch.randn(K, N)
    out = torch.empty(M, N)
    args = (_native.arg(a), _native.arg(b), _native.arg(out), None, False)
    taken = _native.cpu().gemm_path(*args)
    if _native.cpu().isa() == "generic":
        assert taken.startswith("generic") or taken == "zero_k"
    elif path == "gemv" and _native.cpu().isa() == "avx2":
        assert "small_n_dot" in taken
    else:
        assert path in taken
    _native.cpu().gemm(*args)
    torch.testing.assert_close(out.double(), a.double() @ b.double(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "M, N, K",
    [
        (256, 256, 256),  # whole 32x32 tiles, one K block
        (300, 200, 2100),  # edge tiles in M and N, three K blocks (AMX KC 1024)
        (33, 65, 1025),  # one row / column past a tile, K one past a block
    ],
)
def test_bf16_packed_kernel_follows_the_isa(M, N, K):
    """bf16 takes AMX tiles where the CPU and OS allow them (and the compiler built them),
    vdpbf16ps with AVX512_BF16, fp32 panels elsewhere; each is checked against float64 with
    bias and ReLU."""
    from pydeepbench import _native

    C = _native.cpu()
    gen = torch.Generator().manual_seed(M + N + K)
    a = torch.randn(M, K, generator=gen).bfloat16()
    b = torch.randn(N, K, generator=gen).bfloat16().t()  # x @ W.t(), as nn.Linear
    bias = torch.randn(N, generator=gen)
    out = torch.empty(M, N, dtype=torch.bfloat16)
    args = (_native.arg(a), _native.arg(b), _native.arg(out), _native.arg(bias), True)
    want = {"amx": "amx:bf16_32x32", "avx512_bf16": "avx512_bf16:dpbf16_14x32"}
    if C.isa() in want:
        assert C.gemm_path(*args) == want[C.isa()]
    C.gemm(*args)
    ref = (a.double() @ b.double() + bias.double()).clamp_min(0)
    assert bool(((out.double() - ref).abs() <= tolerance(K, ref, torch.bfloat16)).all())


@pytest.mark.parametrize(
    "M, N, K, lda",
    [
        (31, 40, 1100, 1100),  # A read in place: edge rows packed, three K blocks (KC 512)
        (257, 16, 600, 603),  # the 14x16 kernel, a padded row stride
        (100, 64, 1024, 1024),  # a 4 KiB row stride with 2 panels (still read in place)
        (45, 500, 300, 1024),  # a 4 KiB row stride with 16 panels (packed instead)
    ],
)
def test_fp32_row_major_a_in_place_and_narrow_n(M, N, K, lda):
    """fp32 A with unit stride along K is read in place for few B panels; the results
    match float64 on whole and edge tiles, with bias and ReLU."""
    from pydeepbench import _native

    C = _native.cpu()
    gen = torch.Generator().manual_seed(M * N + K)
    a = torch.randn(M, lda, generator=gen)[:, :K]
    b = torch.randn(N, K, generator=gen).t()
    bias = torch.randn(N, generator=gen)
    out = torch.empty(M, N)
    args = (_native.arg(a), _native.arg(b), _native.arg(out), _native.arg(bias), True)
    if C.isa() in ("avx512", "avx512_bf16", "amx"):
        assert C.gemm_path(*args) == ("avx512:packed14x16" if N <= 16 else "avx512:packed14x32")
    C.gemm(*args)
    ref = (a.double() @ b.double() + bias.double()).clamp_min(0)
    assert bool(((out.double() - ref).abs() <= tolerance(K, ref, torch.float32)).all())


def test_malformed_tensor_arguments_raise():
    """The binding's tuple parser refuses what torch would never hand it, by name."""
    import pydeepbench._C as C

    a, b, out = torch.ones(2, 3), torch.ones(3, 4), torch.empty(2, 4)
    good = _arg(a)
    bad = {
        "expected \\(data_ptr": good[:3],
        "sizes must be ints": (good[0], [2.0, 3.0], good[2], 0),
        "sizes must be a tuple or list": (good[0], 6, good[2], 0),
        "sizes has more than 8 dimensions": (good[0], [1] * 9, [1] * 9, 0),
        "overflows int64": (0, [2**62, 4], [4, 1], 0),
        "differ in rank": (good[0], [2, 3], [3], 0),
        "negative strides": (good[0], [2, 3], [3, -1], 0),
        "unknown dtype code": (good[0], [2, 3], [3, 1], 9),
        "null data pointer": (0, [2, 3], [3, 1], 0),
    }
    for msg, arg in bad.items():
        with pytest.raises(ValueError, match=msg):
            C.gemm(arg, _arg(b), _arg(out), None, False)
    with pytest.raises(OverflowError):
        C.gemm((-1, [2, 3], [3, 1], 0), _arg(b), _arg(out), None, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_row_streaming_path_sums_long_k_in_blocks(dtype):
    """Tiny M with row-major B streams B's rows, summing in memory. One running sum over
    all of K read 3.5e-5 to 9.5e-5 here (seeds 0-2; MKL 1.9e-6 to 2.8e-6, K = 2^25 failed
    the gate); summed in blocks of 512 it reads 2.2e-6 to 2.9e-6."""
    from pydeepbench import _native

    g = torch.Generator().manual_seed(1)
    M, K, N = 4, 2**21, 8
    a = torch.randn(M, K, generator=g).to(dtype)
    b = (torch.randn(K, N, generator=g) / K**0.5).to(dtype)
    out = torch.empty(M, N, dtype=dtype)
    args = (_native.arg(a), _native.arg(b), _native.arg(out), None, False)
    assert "small_m_rowb" in _native.cpu().gemm_path(*args) or _native.cpu().isa() == "generic"
    _native.cpu().gemm(*args)
    ref = a.double() @ b.double()
    err = (out.double() - ref).abs()
    if dtype == torch.float32:
        assert err.max().item() < 1e-5
    else:  # the blocked sums in the bf16 scratch, rounded once: half a bf16 ulp (2^-8 |x|)
        assert (err <= ref.abs() * 2.0**-8 + 1e-5).all()


@pytest.mark.parametrize(
    "M, N, b_t, paths",
    [
        (17, 2, False, ("small_n_dot",)),
        (2, 8, True, ("small_m_dot",)),
        (24, 1, False, ("gemv", "small_n_dot")),  # the AVX-512 GEMV, else the dot form
    ],
)
def test_dot_paths_sum_long_k_in_blocks(M, N, b_t, paths):
    """The dot-product and GEMV paths kept one running sum per lane over all of K (K =
    2^25: 1.6e-4 against torch's 7.6e-6, over the gate); in blocks of 512, as the
    row-streaming path. Here (K = 2^21, seeds 0-2) one running sum read 2.1e-5 to 3.7e-5
    (GEMV 1.3e-5 to 2.0e-5), blocks 1.6e-6 to 4.9e-6, torch 1.1e-6 to 2.4e-5."""
    from pydeepbench import _native

    g = torch.Generator().manual_seed(0)
    K = 2**21
    a = torch.randn(M, K, generator=g)
    b = torch.randn(N, K, generator=g).t() if b_t else torch.randn(K, N, generator=g)
    b = b / K**0.5
    out = torch.empty(M, N)
    args = (_native.arg(a), _native.arg(b), _native.arg(out), None, False)
    if _native.cpu().isa() == "generic":
        pytest.skip("the dot paths are AVX2 code")
    assert any(p in _native.cpu().gemm_path(*args) for p in paths)
    _native.cpu().gemm(*args)
    err = (out.double() - a.double() @ b.double()).abs().max().item()
    assert err < 8e-6  # seed 0: one running sum 1.3e-5 to 3.0e-5, blocks 1.6e-6 to 4.9e-6


@pytest.mark.parametrize("a_t", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("M, K", [(1, 513), (3, 1025), (2, 7), (4, 100)])
@pytest.mark.parametrize("N", [9, 45])
def test_row_streaming_blocks_with_epilogue_and_padding(M, K, N, dtype, a_t):
    """The blocked sums at K one past a block (and short K), with a column tail under 8,
    bias, ReLU, padded rows of A and of C, and A transposed (read in place at any stride).
    M >= 2 with B in L2 runs register strips (rowb_strips): N = 45 is 16- or 32-column
    strips, then 8, then 5 scalar columns."""
    from pydeepbench import _native

    g = torch.Generator().manual_seed(M * 1000 + K)
    if a_t:
        a = torch.randn(K, M + 2, generator=g).to(dtype)[:, :M].t()
    else:
        a = torch.randn(M, K + 3, generator=g).to(dtype)[:, :K]
    b = (torch.randn(K, N, generator=g) / K**0.5).to(dtype)
    bias = torch.randn(N, generator=g)
    full = torch.full((M, N + 4), 7.0, dtype=dtype)
    out = full[:, :N]
    args = (_native.arg(a), _native.arg(b), _native.arg(out), _native.arg(bias), True)
    assert "small_m_rowb" in _native.cpu().gemm_path(*args) or _native.cpu().isa() == "generic"
    _native.cpu().gemm(*args)
    ref = torch.relu(a.double() @ b.double() + bias.double())
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-5, rtol=2**-8)
    torch.testing.assert_close(out.double(), ref, **tol)
    assert bool((full[:, N:] == 7.0).all()), "wrote past out's columns"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_large_scratch_is_released_after_the_call():
    """A small-M call's fp32 copy of a long bf16 A (256 MiB here) stayed allocated in every
    thread that ran one, for the life of the process."""
    from pydeepbench.ops.linear import linear

    x = torch.randn(16, 2**22).bfloat16()
    w = torch.randn(8, 2**22).bfloat16()
    before = _rss_bytes()
    y = linear(x, w, impl="native")
    torch.testing.assert_close(y.double(), x.double() @ w.double().t(), rtol=8e-3, atol=1e-2)
    assert _rss_bytes() - before < 64 << 20


def test_new_python_threads_follow_torch_set_num_threads():
    """OpenMP keeps the thread count per thread, and torch.set_num_threads reaches a new
    Python thread's setting only when torch first asks for it there: our kernels, asking
    first, ran on every core after torch.set_num_threads(1)."""
    import ctypes
    import threading

    from pydeepbench.ops.gemm import gemm

    try:
        omp_max = ctypes.CDLL("libgomp.so.1").omp_get_max_threads
    except OSError:
        pytest.skip("no libgomp.so.1 to ask")
    saved = torch.get_num_threads()
    seen = []
    a = torch.randn(64, 64)

    def worker():
        gemm(a, a, impl="native")
        seen.append(omp_max())

    try:
        torch.set_num_threads(1)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    finally:
        torch.set_num_threads(saved)
    assert seen == [1]

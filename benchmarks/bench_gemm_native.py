"""Standalone dev benchmark: native CPU GEMM (pydeepbench._C.gemm) vs torch, side by side.

Sets (fp32 unless said), each timed native/torch interleaved in one process, median of
several repeats after warm-up, every shape checked once against torch in float64:
  dlrm       DLRM MLP layers (M=batch, K=in, N=out, B = W.t() view of an (N, K) weight)
  dlrm_bf16  same in bf16 vs torch bf16 matmul
  fused      relu(x @ W.t() + b) fused vs F.relu(F.linear(x, W, b)) on the dlrm layers
  deepbench  DeepBench inference-server GEMMs, K <= 2816. The tuples are cuBLAS
             column-major (M, N, K); here they run as the equivalent row-major
             C^T[N, M] = B^T[N, K] @ A^T[K, M] with both operands contiguous.
  square     M = N = K = 2048 fp32, GF/s and % of the measured FMA peak (C.fma_probe)

  python benchmarks/bench_gemm_native.py [--sets dlrm,fused,...] [--quick] [--reps 7]
Run it from outside the source tree so the installed pydeepbench._C is imported.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

import pydeepbench._C as C

CODES = {torch.float32: 0, torch.bfloat16: 1}

DLRM = {
    # name: (batch, bottom MLP, top MLP)
    "kaggle": (128, [13, 512, 256, 64, 16], [367, 512, 256, 1]),
    "terabyte": (2048, [13, 512, 256, 64], [415, 512, 512, 256, 1]),
    "mlperf": (2048, [13, 512, 256, 128], [479, 1024, 1024, 512, 256, 1]),
}

DEEPBENCH_MK = [(7680, 2560), (6144, 2048), (4608, 1536), (8448, 2816), (3072, 1024)]
DEEPBENCH_EXTRA = [(5124, 700, 2048), (35, 700, 2048), (5124, 1500, 2560), (35, 1500, 2560),
                   (1024, 700, 512), (512, 1500, 2048), (1024, 3000, 2816), (512, 1, 512),
                   (1024, 4, 512)]


def dlrm_layers():
    out = []
    for name, (batch, bot, top) in DLRM.items():
        for part, dims in (("bot", bot), ("top", top)):
            for k, n in zip(dims[:-1], dims[1:]):
                out.append((f"{name}.{part} {k}->{n}", batch, n, k))
    return out


def deepbench_shapes(quick):
    ns = [1, 2, 4, 1500] if quick else [1, 2, 4, 1500, 3000]
    mk = DEEPBENCH_MK[::2] if quick else DEEPBENCH_MK
    shapes = [(m, n, k) for (m, k) in mk for n in ns]
    if not quick:
        shapes += DEEPBENCH_EXTRA
    return shapes


def arg(t):
    return (t.data_ptr(), list(t.shape), list(t.stride()), CODES[t.dtype])


STAT = statistics.median


def bench_pair(fa, fb, reps, target=0.02):
    """Seconds per call of fa and fb (median, or min with --stat min), sampled alternately."""
    for f in (fa, fb):
        f()
        f()
    ns = []
    for f in (fa, fb):
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        ns.append(max(1, int(target / max(dt, 1e-7))))
    sa, sb = [], []
    for _ in range(reps):
        for f, n, s in ((fa, ns[0], sa), (fb, ns[1], sb)):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            s.append((time.perf_counter() - t0) / n)
    return STAT(sa), STAT(sb)


def check(out, ref, k, dtype, what):
    ref = ref.double()
    if dtype == torch.float32:
        tol = 4e-5 * (k + 1) ** 0.5 + 1e-5 * ref.abs()
    else:
        tol = 2e-3 * (k + 1) ** 0.5 + ref.abs() / 128
    err = (out.double() - ref).abs()
    if not bool((err <= tol).all()):
        raise AssertionError(f"{what}: max err {err.max().item():.3g}")


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


class Table:
    def __init__(self, title):
        self.title = title
        self.ratios = []
        print(f"\n== {title}")
        print(f"{'shape':44s} {'native ms':>10s} {'torch ms':>10s} {'speedup':>8s} "
              f"{'nat GF/s':>9s} {'tor GF/s':>9s}")

    def row(self, name, flops, tn, tt):
        r = tt / tn
        self.ratios.append(r)
        print(f"{name:44s} {tn * 1e3:10.3f} {tt * 1e3:10.3f} {r:7.2f}x "
              f"{flops / tn * 1e-9:9.1f} {flops / tt * 1e-9:9.1f}", flush=True)

    def done(self):
        g = geomean(self.ratios)
        print(f"{'geomean speedup (torch time / native time)':44s} {'':10s} {'':10s} {g:7.2f}x")
        return g


def run_linear(layers, dtype, reps, fused, title):
    tab = Table(title)
    g = torch.Generator().manual_seed(0)
    for name, m, n, k in layers:
        x = torch.randn(m, k, generator=g).to(dtype)
        w = (torch.randn(n, k, generator=g) / k**0.5).to(dtype)
        b = torch.randn(n, generator=g)
        out = torch.empty(m, n, dtype=dtype)
        ta, tb, tc = arg(x), arg(w.t()), arg(out)
        if fused:
            bt = arg(b)
            bd = b.to(dtype)

            def fn():
                C.gemm(ta, tb, tc, bt, True)

            def ft():
                return F.relu(F.linear(x, w, bd))

            fn()
            ref = torch.relu(x.double() @ w.double().t() + b.double())
        else:

            def fn():
                C.gemm(ta, tb, tc, None, False)

            def ft():
                return torch.matmul(x, w.t())

            fn()
            ref = x.double() @ w.double().t()
        check(out, ref, k, dtype, name)
        tn, tt = bench_pair(fn, ft, reps)
        tab.row(f"{name} (M={m},N={n},K={k})", 2.0 * m * n * k, tn, tt)
    return tab.done()


def run_deepbench(shapes, reps):
    tab = Table("deepbench inference server fp32: cuBLAS (M,N,K) as row-major [N,K]@[K,M]")
    g = torch.Generator().manual_seed(1)
    for m, n, k in shapes:
        x = torch.randn(n, k, generator=g)
        w = torch.randn(k, m, generator=g) / k**0.5
        out = torch.empty(n, m)
        ta, tb, tc = arg(x), arg(w), arg(out)

        def fn():
            C.gemm(ta, tb, tc, None, False)

        def ft():
            return torch.matmul(x, w)

        fn()
        check(out, x.double() @ w.double(), k, torch.float32, str((m, n, k)))
        flops = 2.0 * m * n * k
        tn, tt = bench_pair(fn, ft, reps if flops < 2e10 else max(3, reps // 2))
        tab.row(f"(M={m},N={n},K={k})", flops, tn, tt)
    return tab.done()


def fma_peak_sample(iters=10**7):
    t0 = time.perf_counter()
    flops, _, _ = C.fma_probe("float32", iters)
    return flops / (time.perf_counter() - t0)


def run_square(reps, n=2048):
    tab = Table(f"square fp32 M=N=K={n}")
    g = torch.Generator().manual_seed(2)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    ta, tb, tc = arg(a), arg(b), arg(out)

    def fn():
        C.gemm(ta, tb, tc, None, False)

    fn()
    check(out, a.double() @ b.double(), n, torch.float32, "square")
    tn, tt = bench_pair(fn, lambda: torch.matmul(a, b), reps)
    flops = 2.0 * n**3
    tab.row(f"NN {n}^3", flops, tn, tt)
    # Peak and GEMM sampled alternately, best of each: on a shared machine this compares
    # both at their least-disturbed moments.
    fma_peak_sample()
    best_peak = best_gemm = 0.0
    for _ in range(max(reps, 5)):
        best_peak = max(best_peak, fma_peak_sample())
        t0 = time.perf_counter()
        fn()
        best_gemm = max(best_gemm, flops / (time.perf_counter() - t0))
    print(f"measured FMA peak (C.fma_probe float32, best of {max(reps, 5)}): "
          f"{best_peak * 1e-9:.1f} GF/s; native best {best_gemm * 1e-9:.1f} GF/s = "
          f"{best_gemm / best_peak * 100:.1f}% of peak (median-based: "
          f"{flops / tn / best_peak * 100:.1f}%, torch {flops / tt / best_peak * 100:.1f}%)")
    return best_gemm / best_peak


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sets", default="dlrm,dlrm_bf16,fused,deepbench,square")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer deepbench shapes")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="per-shape statistic over the repeats (min resists noisy neighbours)")
    args = p.parse_args()
    global STAT
    STAT = statistics.median if args.stat == "median" else min
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"PYDEEPBENCH_ISA={os.environ.get('PYDEEPBENCH_ISA')}, stat={args.stat}")
    sets = args.sets.split(",")
    summary = {}
    layers = dlrm_layers()
    if "dlrm" in sets:
        summary["dlrm fp32 matmul"] = run_linear(layers, torch.float32, args.reps, False,
                                                 "dlrm fp32: x @ W.t() vs torch.matmul")
    if "dlrm_bf16" in sets:
        summary["dlrm bf16 matmul"] = run_linear(layers, torch.bfloat16, args.reps, False,
                                                 "dlrm bf16: x @ W.t() vs torch.matmul")
    if "fused" in sets:
        summary["dlrm fp32 fused linear+relu"] = run_linear(
            layers, torch.float32, args.reps, True,
            "dlrm fp32 fused: relu(x @ W.t() + b) vs F.relu(F.linear(x, W, b))")
    if "deepbench" in sets:
        summary["deepbench inference fp32"] = run_deepbench(deepbench_shapes(args.quick),
                                                            args.reps)
    if "square" in sets:
        summary["square 2048 fraction of FMA peak"] = run_square(args.reps)
    print("\n== summary (geomean native speedup over torch; square: fraction of peak)")
    for k, v in summary.items():
        print(f"{k:40s} {v:6.3f}")


if __name__ == "__main__":
    main()

"""Dev benchmark: native CPU embedding bags vs out-of-the-box torch, side by side.

Configs (fp32 weights, sum pooling, int64 indices, torch.set_num_threads(--threads)):
  mlperf  DLRM MLPerf-like: 26 tables (rows capped at --cap), D=128, B=2048, 1 lookup/bag
  dcnv2   DLRM DCNv2-like multi-hot: same tables, bag sizes 3,2,1,...,100,27,...
  emb_a   one table (--emb-a-rows rows) x D=128, B=65536, 30 lookups/bag
  train   dcnv2 training step: native forward + fused sparse SGD vs torch modules with
          dense grads + loss.backward() + torch.optim.SGD (and, for reference, sparse=True)

OOTB forward baselines: "modules" = 26 nn.EmbeddingBag(mode="sum") called in a Python
loop + torch.cat; "functional" = F.embedding_bag per table + torch.cat. Both run under
torch.no_grad() and share the packed weight (views), so they gather the same memory.
Native allocates its output every call (like the ops layer would); "native_prealloc"
reuses one. Indices are uniform random, fresh each iteration (8 pre-generated batches
rotate). Every timed config is checked against torch before it is timed.

GB/s counts logical bytes: rows gathered x D x 4 + indices + offsets + output.

    cd /tmp && python /work/wt/emb-cpu/benchmarks/bench_embedding_native.py
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time

import torch
import torch.nn.functional as F

from pydeepbench._native import arg, cpu

MLPERF_ROWS = [39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951, 2953546, 403346,
               10, 2208, 11938, 155, 4, 976, 14, 39979771, 25641295, 39664984, 585935, 12972, 108,
               36]
DCNV2_BAGS = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
MADV_HUGEPAGE = 14


def alloc_weight(rows: int, D: int, thp: bool) -> torch.Tensor:
    w = torch.empty(rows, D)
    if thp:  # before first touch, so the faults can take 2 MiB pages
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        start = (w.data_ptr() + (1 << 21) - 1) & ~((1 << 21) - 1)
        end = (w.data_ptr() + w.numel() * 4) & ~((1 << 21) - 1)
        if end > start and libc.madvise(start, end - start, MADV_HUGEPAGE) != 0:
            print(f"madvise(MADV_HUGEPAGE) failed: errno {ctypes.get_errno()}")
    # uniform in [-1, 1) in chunks (randn over GBs is slow)
    for s in range(0, rows, 1 << 20):
        w[s:s + (1 << 20)].uniform_(-1, 1)
    return w


class Tables:
    """T tables packed in one weight (R_total, D) + per-table views."""

    def __init__(self, rows: list[int], D: int, thp: bool):
        self.rows, self.D, self.T = rows, D, len(rows)
        self.toff = torch.tensor([0] + rows, dtype=torch.int64).cumsum(0)
        self.weight = alloc_weight(int(self.toff[-1]), D, thp)
        self.views = [self.weight[self.toff[t]:self.toff[t + 1]] for t in range(self.T)]

    def batch(self, B: int, bags: list[int], g: torch.Generator):
        """Packed (indices, offsets) table-major + per-table (indices, offsets) for torch."""
        per = []
        for t in range(self.T):
            n = B * bags[t]
            per.append(torch.randint(0, self.rows[t], (n,), generator=g))
        indices = torch.cat(per)
        lens = torch.tensor(bags, dtype=torch.int64).repeat_interleave(B)
        offsets = torch.zeros(self.T * B + 1, dtype=torch.int64)
        offsets[1:] = lens.cumsum(0)
        torch_in = [(per[t], torch.arange(B, dtype=torch.int64) * bags[t]) for t in range(self.T)]
        return indices, offsets, torch_in


def logical_bytes(N: int, D: int, B: int, T: int) -> int:
    return N * D * 4 + N * 8 + (T * B + 1) * 8 + B * T * D * 4


def native_forward(tb: Tables, indices, offsets, B, out=None):
    if out is None:
        out = torch.empty(B, tb.T * tb.D)
    cpu().embedding_bags_forward(arg(tb.weight), arg(tb.toff), arg(indices), arg(offsets),
                                 arg(out), 0, None, None)
    return out


def time_side_by_side(fns: dict, batches: int, iters: int, rounds: int) -> dict:
    """Median seconds per call. The impls alternate call by call (round robin), so a
    noisy neighbour or a slow phase of the machine hits all of them alike."""
    times = {k: [] for k in fns}
    for name, fn in fns.items():  # warm up (page in, allocator, thread pool)
        for i in range(3):
            fn(i % batches)
    for i in range(iters * rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(i % batches)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def stream_copy_gbs(reps: int = 15) -> float:
    """Median STREAM-copy bandwidth right now (2 x bytes per copy): the machine is shared,
    so the bandwidth available to a run varies; each config reports it alongside."""
    a = torch.ones(32 << 20)
    b = torch.empty_like(a)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        b.copy_(a)
        ts.append(time.perf_counter() - t0)
    return 2 * a.numel() * 4 / statistics.median(ts) / 1e9


def report(title: str, res: dict, nbytes: int, base: str = "native"):
    print(f"\n== {title}   (logical bytes/call {nbytes / 1e6:.1f} MB; "
          f"stream copy now {stream_copy_gbs():.1f} GB/s)")
    for name, s in res.items():
        ratio = s / res[base]
        print(f"  {name:<22} {s * 1e3:9.3f} ms  {nbytes / s / 1e9:7.2f} GB/s   "
              f"{base} is {ratio:5.2f}x faster" if name != base else
              f"  {name:<22} {s * 1e3:9.3f} ms  {nbytes / s / 1e9:7.2f} GB/s")


def forward_config(title, tb: Tables, B, bags, args):
    g = torch.Generator().manual_seed(0)
    data = [tb.batch(B, bags, g) for _ in range(args.batches)]
    N = data[0][0].numel()
    modules = [torch.nn.EmbeddingBag(r, tb.D, mode="sum", _weight=v) for r, v in
               zip(tb.rows, tb.views)]
    with torch.no_grad():
        # correctness: native vs F.embedding_bag for every batch used
        for idx, off, tin in data:
            ref = torch.cat([F.embedding_bag(i, v, o, mode="sum") for (i, o), v in
                             zip(tin, tb.views)], 1)
            got = native_forward(tb, idx, off, B)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
            mods = torch.cat([m(i, o) for m, (i, o) in zip(modules, tin)], 1)
            torch.testing.assert_close(mods, ref, rtol=1e-5, atol=1e-5)
        out = torch.empty(B, tb.T * tb.D)
        fns = {
            "native": lambda i: native_forward(tb, data[i][0], data[i][1], B),
            "native_prealloc": lambda i: native_forward(tb, data[i][0], data[i][1], B, out),
            "functional+cat": lambda i: torch.cat(
                [F.embedding_bag(ii, v, o, mode="sum") for (ii, o), v in
                 zip(data[i][2], tb.views)], 1),
        }
        if tb.T > 1:
            fns["modules+cat"] = lambda i: torch.cat(
                [m(ii, o) for m, (ii, o) in zip(modules, data[i][2])], 1)
        res = time_side_by_side(fns, args.batches, args.iters, args.rounds)
    report(f"{title}: T={tb.T} D={tb.D} B={B} N={N} R_total={int(tb.toff[-1])}", res,
           logical_bytes(N, tb.D, B, tb.T))
    return res


def train_config(tb: Tables, B, bags, args):
    g = torch.Generator().manual_seed(1)
    data = [tb.batch(B, bags, g) for _ in range(args.batches)]
    N = data[0][0].numel()
    grad_out = torch.randn(B, tb.T * tb.D, generator=g)
    lr = 0.01

    # correctness of one fused step on batch 0, on the rows it touches
    idx, off, _ = data[0]
    grows = idx + tb.toff[:-1].repeat_interleave(torch.tensor(bags) * B)
    bag_of = torch.arange(tb.T * B).repeat_interleave(off[1:] - off[:-1])
    contrib = grad_out.view(B, tb.T, tb.D).transpose(0, 1).reshape(tb.T * B, tb.D)[bag_of].double()
    rows, inv = torch.unique(grows, return_inverse=True)
    agg = torch.zeros(rows.numel(), tb.D, dtype=torch.float64).index_add_(0, inv, contrib)
    before = tb.weight[rows].double()
    untouched = torch.ones(tb.weight.shape[0], dtype=torch.bool)
    untouched[rows] = False
    probe = untouched.nonzero()[:1000, 0]
    probe_before = tb.weight[probe].clone()
    native_forward(tb, idx, off, B)
    cpu().embedding_bags_sgd_step(arg(tb.weight), arg(tb.toff), arg(idx), arg(off),
                                  arg(grad_out), lr, 0, None)
    torch.testing.assert_close(tb.weight[rows].double(), before - lr * agg, rtol=1e-5, atol=1e-5)
    assert torch.equal(tb.weight[probe], probe_before)
    del contrib, agg, before

    def native_step(i):
        idx, off, _ = data[i]
        native_forward(tb, idx, off, B)
        cpu().embedding_bags_sgd_step(arg(tb.weight), arg(tb.toff), arg(idx), arg(off),
                                      arg(grad_out), lr, 0, None)

    def ootb(sparse):
        mods = [torch.nn.EmbeddingBag(r, tb.D, mode="sum", _weight=v, sparse=sparse)
                for r, v in zip(tb.rows, tb.views)]
        opt = torch.optim.SGD([m.weight for m in mods], lr=lr)

        def step(i):
            out = torch.cat([m(ii, o) for m, (ii, o) in zip(mods, data[i][2])], 1)
            (out * grad_out).sum().backward()
            opt.step()
            opt.zero_grad()

        return step

    fns = {"native fwd+sgd": native_step, "ootb dense grad+SGD": ootb(False)}
    if not args.no_sparse_baseline:
        fns["ootb sparse grad+SGD"] = ootb(True)
    res = time_side_by_side(fns, args.batches, args.train_iters, args.rounds)
    report(f"train dcnv2: T={tb.T} D={tb.D} B={B} N={N}", res, logical_bytes(N, tb.D, B, tb.T),
           base="native fwd+sgd")
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", default="mlperf,dcnv2,emb_a,train")
    p.add_argument("--cap", type=int, default=1_000_000, help="row cap per table (mlperf/dcnv2)")
    p.add_argument("--emb-a-rows", type=int, default=4_000_000)
    p.add_argument("--iters", type=int, default=20, help="timed calls per impl per round")
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--thp", action="store_true", help="madvise(MADV_HUGEPAGE) the weights")
    p.add_argument("--no-sparse-baseline", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, native isa "
          f"{cpu().isa()}, thp={'madvise' if args.thp else 'off'}")
    configs = args.configs.split(",")
    rows = [min(r, args.cap) for r in MLPERF_ROWS]
    D = 128
    if {"mlperf", "dcnv2", "train"} & set(configs):
        tb = Tables(rows, D, args.thp)
        if "mlperf" in configs:
            forward_config("mlperf", tb, 2048, [1] * 26, args)
        if "dcnv2" in configs:
            forward_config("dcnv2", tb, 2048, DCNV2_BAGS, args)
        if "train" in configs:
            train_config(tb, 2048, DCNV2_BAGS, args)
        del tb
        gc.collect()
    if "emb_a" in configs:
        tb = Tables([args.emb_a_rows], D, args.thp)
        forward_config(f"emb_a ({args.emb_a_rows} rows)", tb, 65536, [30], args)


if __name__ == "__main__":
    main()

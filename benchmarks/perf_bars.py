"""The performance bars of the GEMM/Linear and EmbeddingBag issues, measured side by side.

Every figure comes from pydeepbench's own sweep (seeded inputs, correctness gate, adaptive
harness) in one process on this machine; each bar is a ratio of two implementations timed
in the same run, or a percentage of this machine's measured roofline peak. Ratio bars also
print the ratio a kernel at the roofline would reach (Ratio.at_roofline); % bars print the
percentage of the baseline timed beside the kernel (Pct).

    python benchmarks/perf_bars.py                      # every bar
    python benchmarks/perf_bars.py --only gemm-dlrm-fp32,emb-mlperf --json bars.json
    python benchmarks/perf_bars.py --repeat 3          # median of 3 runs per bar
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import pydeepbench
from pydeepbench import harness, registry, report, roofline, shapes, system
from pydeepbench.runner import SweepConfig, sweep


@dataclass
class Bar:
    name: str
    op: str
    cases: str  # shape set name, or "shape:K=V,..." for one case
    impls: list[str]
    dtype: torch.dtype
    target: float
    unit: str  # "x" (ratio) or "%"
    measure: Callable[[list[dict]], float | None]
    what: str
    # Re-measure the FMA peak of `dtype` just before and after the sweep and place the
    # rows against the higher (for bars that are a % of it; memory roofs are re-measured
    # for every op that gathers rows).
    flops_roof: bool = False


@dataclass(frozen=True)
class Ratio:
    """Geomean over cases of time(den) / time(num): how many times faster `num` is."""

    num: str
    den: str

    def cases(self, rows: list[dict]) -> list[dict]:
        by: dict = {}
        for r in rows:
            if r["status"] == "ok":
                by.setdefault(r["case"], {})[r["impl"]] = r
        return [c for c in by.values() if self.num in c and self.den in c]

    def __call__(self, rows: list[dict]) -> float | None:
        return report.geomean(
            [
                c[self.den]["time_s"]["median"] / c[self.num]["time_s"]["median"]
                for c in self.cases(rows)
            ]
        )

    def at_roofline(self, rows: list[dict]) -> float | None:
        """The ratio `num` would read if it ran at the roofline on every case where it is
        slower than that: the geomean of time(den) / min(time(num), max(flops / FMA peak,
        bytes / STREAM rate)), with the roofs each row was placed against (STREAM also for
        ops that gather rows, so this errs high). Where a case's data stays in cache, `num`
        can already be past the roofline, and is counted as it is. Below the target, the
        bar asks more than reaching the machine's measured roofs would give. None unless
        every case has both peaks."""
        xs = []
        for c in self.cases(rows):
            r = c[self.num]
            if not (r.get("peak_flops") and r.get("peak_bw")):
                return None
            roof = max(r["flops"] / r["peak_flops"], r["bytes"] / r["peak_bw"])
            xs.append(c[self.den]["time_s"]["median"] / min(roof, r["time_s"]["median"]))
        return report.geomean(xs)


@dataclass(frozen=True)
class Pct:
    """The best ok row of `impl` as a percentage of a roof (`field` of the rows). The bar's
    other impl, if any, is a baseline timed side by side in the same sweep; its own
    percentage is printed beside the bar: a low value that the baseline shares is the
    machine's hour or its roof, one that it does not is the kernel's."""

    field: str
    impl: str

    def __call__(self, rows: list[dict], impl: str | None = None) -> float | None:
        impl = impl or self.impl
        vals = [
            r[self.field]
            for r in rows
            if r["impl"] == impl and r["status"] == "ok" and r[self.field]
        ]
        return max(vals) if vals else None


F32, BF16 = torch.float32, torch.bfloat16
BARS = [
    Bar(
        "gemm-dlrm-fp32",
        "gemm",
        "dlrm",
        ["ootb", "native"],
        F32,
        0.95,
        "x",
        Ratio("native", "ootb"),
        "native gemm vs torch.matmul (MKL), geomean over dlrm",
    ),
    Bar(
        "gemm-2048-peak",
        "gemm",
        "shape:M=2048,N=2048,K=2048",
        ["ootb", "native"],
        F32,
        80,
        "%",
        Pct("pct_peak_flops", "native"),
        "native fp32 gemm at 2048^3, % of measured FMA peak",
        flops_roof=True,
    ),
    Bar(
        "linear-dlrm-fused",
        "linear",
        "linear-dlrm",
        ["ootb", "native"],
        F32,
        1.5,
        "x",
        Ratio("native", "ootb"),
        "native Linear+bias+ReLU vs F.relu(F.linear())",
    ),
    Bar(
        "gemm-dlrm-bf16",
        "gemm",
        "dlrm",
        ["ootb", "native"],
        BF16,
        0.85,
        "x",
        Ratio("native", "ootb"),
        "native bf16 gemm vs torch bf16 matmul (oneDNN)",
    ),
    Bar(
        "gemm-infer-server",
        "gemm",
        "deepbench-infer-server",
        ["ootb", "native"],
        F32,
        0.9,
        "x",
        Ratio("native", "ootb"),
        "native vs torch.matmul on DeepBench inference-server",
    ),
    Bar(
        "emb-mlperf",
        "embedding_bags",
        "dlrm-mlperf",
        ["ootb", "native"],
        F32,
        3.0,
        "x",
        Ratio("native", "ootb"),
        "batched native vs 26 nn.EmbeddingBag modules",
    ),
    Bar(
        "emb-mlperf-functional",
        "embedding_bags",
        "dlrm-mlperf",
        ["functional", "native"],
        F32,
        1.5,
        "x",
        Ratio("native", "functional"),
        "batched native vs F.embedding_bag per table",
    ),
    Bar(
        "emb-dcnv2",
        "embedding_bags",
        "dlrm-dcnv2",
        ["ootb", "native"],
        F32,
        3.0,
        "x",
        Ratio("native", "ootb"),
        "multi-hot: batched native vs modules",
    ),
    Bar(
        "emb-dcnv2-functional",
        "embedding_bags",
        "dlrm-dcnv2",
        ["functional", "native"],
        F32,
        1.5,
        "x",
        Ratio("native", "functional"),
        "multi-hot: native vs F.embedding_bag",
    ),
    Bar(
        "emb-A-bandwidth",
        "embedding_bags",
        "shape:tables=1,rows=14000000,row_cap=4000000,dim=128,batch=65536,pooling=30",
        ["functional", "native"],
        F32,
        60,
        "%",
        Pct("pct_peak_bw", "native"),
        "emb_A batch 65536: native logical GB/s, % of measured bandwidth",
    ),
    Bar(
        "emb-train-dcnv2",
        "embedding_bags_train",
        "dlrm-dcnv2",
        ["ootb", "native"],
        F32,
        10,
        "x",
        Ratio("native", "ootb"),
        "fwd + fused sparse SGD vs modules + dense grads + optim.SGD",
    ),
]


def baseline(bar: Bar) -> str | None:
    """The impl a % bar times beside the one it measures (None for ratio bars)."""
    if not isinstance(bar.measure, Pct):
        return None
    return next((i for i in bar.impls if i != bar.measure.impl), None)


def needed(bar: Bar) -> set[str]:
    """The impls the bar's value is made of (a % bar's baseline is context only)."""
    return {bar.measure.impl} if isinstance(bar.measure, Pct) else set(bar.impls)


def left_out(bar: Bar, rows: list[dict]) -> list[str]:
    """The cases the bar's value leaves out: a needed impl's row that did not run (skipped:
    an unsupported shape, not enough memory), as "case (impl: reason)"."""
    named = (
        f"{r['case']} ({r['impl']}: {r.get('reason') or r['status']})"
        for r in rows
        if r["impl"] in needed(bar) and r["status"] != "ok"
    )
    return list(dict.fromkeys(named))  # once, however many runs left it out


class BarFailed(Exception):
    """A needed impl failed a case (its check, or an error): the bar has no value."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def run_bar(bar: Bar, peaks, max_time: float) -> tuple[float | None, list[dict], dict | None]:
    """The bar's value, its rows, and the roofs measured just before and just after the
    sweep: memory for ops that gather rows, the FMA peak for `flops_roof` bars (None for
    the others)."""
    if bar.cases.startswith("shape:"):
        cases, set_name = [shapes.parse_shape(bar.cases[6:], bar.op)], "custom"
    else:
        sset = shapes.load(bar.cases, bar.op)
        cases, set_name = sset.cases, sset.name
        if bar.op.startswith("embedding"):
            cases = [c for c in cases if c.shape["distribution"] == "uniform"]
    cfg = SweepConfig(
        op=bar.op,
        impls=bar.impls,
        dtypes=[bar.dtype],
        device="cpu",
        shape_set=set_name,
        harness=harness.HarnessConfig(max_time_s=max_time),
    )
    gathers = registry.get_op(bar.op).gathers

    def remeasure():
        if gathers:
            return roofline.remeasure_memory(peaks)
        return roofline.remeasure_flops(peaks, bar.dtype) if bar.flops_roof else None

    before = remeasure()
    rows = sweep(cfg, cases, peaks, lambda rows: None)
    # A % bar's baseline is context: a failure of it leaves `beside` empty, not the bar.
    failed = [r for r in rows if r["status"] == "failed" and r["impl"] in needed(bar)]
    if failed:
        raise BarFailed(f"{len(failed)} failed row(s): {failed[0]['reason']}", rows)
    if before is None:
        return bar.measure(rows), rows, None
    after = remeasure()
    if gathers:
        roof = higher_memory_roof(before, after)
        roofs = {
            "stream_before": before.bandwidth,
            "stream_after": after.bandwidth,
            "gather_before": before.gather_bandwidth,
            "gather_after": after.gather_bandwidth,
        }
    else:
        roof = max(before, after, key=lambda p: p.peak_flops(bar.dtype)[0] or 0.0)
        roofs = {
            "flops_before": before.peak_flops(bar.dtype)[0],
            "flops_after": after.peak_flops(bar.dtype)[0],
            "flops_cached": peaks.peak_flops(bar.dtype)[0],
        }
    for r in rows:
        if r["status"] == "ok":
            r.update(
                roofline.place(
                    r["flops"], r["bytes"], r["time_s"]["median"], bar.dtype, roof, gathers
                )
            )
    return bar.measure(rows), rows, roofs


def higher_memory_roof(before: roofline.Peaks, after: roofline.Peaks) -> roofline.Peaks:
    """The higher STREAM rate and the higher gather rate of two measurements taken around
    a sweep: the memory rates of a shared VM drift within minutes (the gather rate by 2x
    on Zen 4), and the cached ones may come from a slow spell, which would flatter every
    percentage placed against them."""
    bw = max(before, after, key=lambda p: p.bandwidth)
    g = max(before, after, key=lambda p: p.gather_bandwidth or 0.0)
    return dataclasses.replace(
        bw,
        gather_bandwidth=g.gather_bandwidth,
        gather_source=g.gather_source,
        detail={**bw.detail, "gather": g.detail["gather"]},
    )


DRIFT = 0.15  # a roof that moves more than this across one sweep marks the run unstable
NOISY = harness.HarnessConfig().noisy_rel_iqr  # the bars' sweeps use the harness default


def drifted(roofs: dict) -> list[str]:
    """The roofs of one run that moved by more than DRIFT between the measurements just
    before and just after its sweep: the machine's speed changed while the bar ran (on
    the shared Zen 4 VM the FMA probe once fell 235 -> 116 GFLOP/s within one 2048^3
    sweep), so that run's value says little."""
    out = []
    for kind in ("flops", "stream", "gather"):
        a, b = roofs.get(f"{kind}_before"), roofs.get(f"{kind}_after")
        if a and b and abs(a - b) > DRIFT * max(a, b):
            out.append(f"{kind} {a / 1e9:.1f}->{b / 1e9:.1f}")
    return out


def _gbps(v: float | None) -> str:
    return "not measured" if v is None else f"{v / 1e9:.1f} GB/s"


def roof_note(rows: list[dict], roofs: list[dict]) -> str:
    """The roofs measured around each run. For ops that gather rows: where the native rows
    sit against the gather roof (the bars themselves are against STREAM or OOTB, as the
    issues state them). For FMA-peak bars: the native rate as a % of the cached peak too."""
    if roofs and "flops_before" in roofs[0]:
        ok = [r["tflops"] for r in rows if r["impl"] == "native" and r["status"] == "ok"]
        cached = roofs[0]["flops_cached"]
        moved = ", ".join(
            f"{m['flops_before'] / 1e9:.1f}->{m['flops_after'] / 1e9:.1f}" for m in roofs
        )
        best = (
            f"; best native run {100 * max(ok) * 1e12 / cached:.1f}% of the cached "
            f"{cached / 1e9:.1f}"
            if ok
            else ""
        )
        return f"  [FMA peak measured around the run(s), GFLOP/s: {moved}{best}]"
    pcts = [
        r["pct_peak_gather"] for r in rows if r["impl"] == "native" and r.get("pct_peak_gather")
    ]
    if not pcts:
        return ""
    lo, hi = min(pcts), max(pcts)
    span = f"{lo:.0f}%" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}%"

    def moved(kind: str) -> str:
        return ", ".join(
            f"{m[kind + '_before'] / 1e9:.1f}->{m[kind + '_after'] / 1e9:.1f}" for m in roofs
        )

    return (
        f"  [native at {span} of the gather roof; measured around the run(s), GB/s: "
        f"STREAM {moved('stream')}, gather {moved('gather')}]"
    )


CHECKOUT = Path(__file__).resolve().parents[1]


def stale_copy_note(checkout: Path = CHECKOUT) -> str | None:
    """A note when the pydeepbench measured is not this checkout's: `python
    benchmarks/perf_bars.py` puts benchmarks/, not the checkout, on sys.path, so after a
    change a non-editable install measures the code it was built from."""
    mine = checkout / "pydeepbench"
    used = Path(pydeepbench.__file__).resolve().parent
    if not mine.is_dir() or used == mine.resolve():
        return None
    return (
        f"measuring the installed pydeepbench ({used}), not this checkout's: "
        f"`pip install .` to update it, or run with PYTHONPATH={checkout}"
    )


def main(argv=None) -> int:
    names = [b.name for b in BARS]
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="bars:\n"
        + "\n".join(f"  {b.name:24s} {f'>= {b.target:g}{b.unit}':8s} {b.what}" for b in BARS),
    )
    p.add_argument("--only", help="comma list of bar names (the bars below; default: all)")
    p.add_argument("--max-time", type=float, default=2.0, help="seconds of samples per case")
    p.add_argument("--json", help="write the bars and every row here")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per bar; a bar's value is the median of its runs (on a shared VM one "
        "run's ratio can be off by 10-20%%)",
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat}")
    try:  # known before minutes of measuring
        harness.check_bounds(max_time_s=args.max_time)
        report.refuse_directory("--json", args.json)
    except ValueError as e:
        p.error(str(e))
    wanted = None
    if args.only is not None:
        # Before the peaks are measured: a typo must not cost minutes and run nothing.
        wanted = {n.strip() for n in args.only.split(",")} - {""}
        unknown = sorted(wanted - set(names))
        if unknown or not wanted:
            p.error(
                f"--only: unknown bar(s) {', '.join(unknown) or repr(args.only)}; "
                f"the bars: {', '.join(names)}"
            )
    sysinfo = system.collect()
    if warning := system.busy_warning(sysinfo):
        print(f"warning: {warning}")
    if note := stale_copy_note():
        print(f"note: {note}")
    peaks = roofline.peaks("cpu")
    print(
        f"machine: {system.machine_id(sysinfo)}  isa: {sysinfo['cpu'].get('isa')}  "
        f"fp32 peak {peaks.flops['float32'] / 1e9:.1f} GFLOP/s  "
        f"bandwidth {peaks.bandwidth / 1e9:.1f} GB/s  gather {_gbps(peaks.gather_bandwidth)}"
    )
    results, all_rows = [], []
    for bar in BARS:
        if wanted and bar.name not in wanted:
            continue
        runs, bar_rows, roofs, at_roof, beside, cases = [], [], [], [], [], []
        base, failure = baseline(bar), None
        for _ in range(max(1, args.repeat)):
            try:
                v, rows, r = run_bar(bar, peaks, args.max_time)
            except BarFailed as e:  # the other bars still run, and the JSON is written
                failure = str(e)
                bar_rows.extend(e.rows)
                break
            runs.append(v)
            bar_rows.extend(rows)
            roofs += [r] if r else []
            if isinstance(bar.measure, Ratio):
                cases.append(len(bar.measure.cases(rows)))
                if c := bar.measure.at_roofline(rows):
                    at_roof.append(c)
            if base:
                beside.append(bar.measure(rows, base))
        all_rows.extend(bar_rows)
        # A run without a value (no case ran) leaves the bar without one: the median of
        # the others would pass on less than was asked.
        value = None if failure or not runs or None in runs else statistics.median(runs)
        ok = value is not None and value >= bar.target
        shown = "-" if value is None else f"{value:.2f}{bar.unit}"
        unstable = [
            f"run {i + 1}: {', '.join(d)}" for i, r in enumerate(roofs) if (d := drifted(r))
        ]
        spread = f"  [{'/'.join(map(str, sorted(set(cases))))} cases]" if cases else ""
        if len(runs) > 1:
            spread += f"  runs {', '.join('-' if v is None else f'{v:.2f}' for v in runs)}"
        ceiling = statistics.median(at_roof) if at_roof else None
        if ceiling is not None:
            past = "; the bar is past it" if ceiling < bar.target else ""
            spread += f"  [at the roofline: {ceiling:.2f}x{past}]"
        beside_runs = [v for v in beside if v is not None]
        beside_value = statistics.median(beside_runs) if beside_runs else None
        if base:
            shown_base = "no ok row" if beside_value is None else f"{beside_value:.2f}{bar.unit}"
            spread += f"  [{base} beside it: {shown_base}]"
        verdict = "FAIL" if failure else "PASS" if ok else "MISS"
        print(
            f"{verdict}  {bar.name:24s} {shown:>9s}  (bar >= {bar.target:g}"
            f"{bar.unit})  {bar.what}{spread}{roof_note(bar_rows, roofs)}",
            flush=True,
        )
        if failure:
            print(f"      failed: {failure}", flush=True)
        if skipped := left_out(bar, [r for r in bar_rows if r["status"] != "failed"]):
            print(
                f"      {len(skipped)} case(s) left out of the value, their rows not run: "
                f"{skipped[0]}{' ...' if len(skipped) > 1 else ''}",
                flush=True,
            )
        if unstable:
            print(
                f"      unstable: a roof moved more than {DRIFT:.0%} across the sweep "
                f"({'; '.join(unstable)}); rerun with --repeat",
                flush=True,
            )
        timed = [r.get("harness") or {} for r in bar_rows]
        short = sum(h.get("stop_reason") == harness.SHORT for h in timed)
        noisy = sum(bool(h.get("noisy")) for h in timed) - short
        if short:
            print(
                f"      {short} row(s) ran out of time below the minimum sample count (the "
                "machine was slow): rerun with a larger --max-time",
                flush=True,
            )
        if noisy:
            print(
                f"      {noisy} other row(s) noisy (IQR above {NOISY:.0%} of the median): "
                "their times are less certain",
                flush=True,
            )
        results.append(
            {
                "bar": bar.name,
                "value": value,
                "runs": runs,
                "target": bar.target,
                "unit": bar.unit,
                "pass": ok,
                "what": bar.what,
                "at_roofline": ceiling,
                **(
                    {"beside": {"impl": base, "value": beside_value, "runs": beside}}
                    if base
                    else {}
                ),
                **({"flops_roofs" if bar.flops_roof else "memory_roofs": roofs} if roofs else {}),
                "unstable": unstable,
                "short_rows": short,
                "noisy_rows": noisy,
                **({"cases": cases} if cases else {}),
                "left_out": skipped,
                **({"failed": failure} if failure else {}),
            }
        )
    if args.json:
        doc = {
            "schema": report.SCHEMA,
            "system": sysinfo,
            "peaks": peaks.as_dict(),
            "bars": results,
            "results": [report.normalize(r) for r in all_rows],
        }
        report.write_text(args.json, json.dumps(report.json_safe(doc), indent=1, allow_nan=False))
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

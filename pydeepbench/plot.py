"""Roofline chart from results JSON: `python -m pydeepbench plot RESULTS.json... --out F`.

Every ok op row is a point at its arithmetic intensity (FLOPs / bytes, both from the op's
own formulas) and its achieved FLOP/s (FLOPs / median time), coloured by impl (the same
colour in every chart), one marker per op (and dtype, where the points have several); the
legend sits beside the axes. The ceilings are the roofs the rows
were placed against: the FMA peak of each dtype (bf16 on a CPU without a bf16 dot
product meets the fp32 one; dtypes sharing a roof share its line), the STREAM bandwidth
times the intensity, and, when ops that read random rows are plotted and the files
measured it, the random-row gather rate (dashed), the roof the embedding rows meet (the
rate they were placed against). Where rows of one machine carry different roofs (runs at
different hours), the highest of each is drawn. Files from different machines are
refused, as in `report`; so are rows of a --no-roofline run (no peaks, no intensity),
with that reason. The format follows the file name's extension (png, svg, pdf).
"""

from __future__ import annotations

import math
import os

from rich.markup import escape

from pydeepbench import registry, report
from pydeepbench.proxy import load_docs

MARKERS = "os^Dv<>Pp*hX"


def _op_rows(docs: list[dict], ops: set[str] | None) -> list[dict]:
    """The ok op rows of the files (of `ops`, if given), in file order."""
    return [
        r
        for doc in docs
        for r in doc["results"]
        if r.get("kind") != "model" and r.get("status") == "ok" and (not ops or r["op"] in ops)
    ]


def points(docs: list[dict], ops: set[str] | None = None) -> list[dict]:
    """The ok op rows to plot, in file order: op, impl, dtype, device, intensity, flop_s,
    and the roofs the row was placed against (peak_flops, peak_bw, peak_gather; None if
    not measured or, for peak_gather, the op reads no random rows)."""
    out = []
    for r in _op_rows(docs, ops):
        ai, tf = r.get("arithmetic_intensity"), r.get("tflops")
        # not placed (--no-roofline), no bytes model (intensity inf), or no FLOPs; NaN
        # only from a file written elsewhere (json reads it; ours store null)
        if not ai or not tf or not math.isfinite(ai) or not math.isfinite(tf):
            continue
        pg = r.get("pct_peak_gather")
        out.append(
            {
                "op": r["op"],
                "impl": r["impl"],
                "dtype": r["dtype"],
                "device": r["device"],
                "intensity": ai,
                "flop_s": tf * 1e12,
                "peak_flops": r.get("peak_flops"),
                "peak_bw": r.get("peak_bw"),
                # the gather rate the row was placed against (rows keep only the %)
                "peak_gather": r["gbps"] * 1e9 * 100 / pg if pg else None,
            }
        )
    return out


def ceilings(docs: list[dict], pts: list[dict]) -> dict:
    """The highest roofs of the points' devices: {"flops": {(device, dtype): FLOP/s},
    "bandwidth": {device: B/s}, "gather": {device: B/s}}. FMA and STREAM roofs are the
    ones the rows were placed against (so bf16 on a CPU without a bf16 dot product gets
    the fp32 roof, and perf_bars rows the rates it measured around their bar); so is the
    gather rate where rows were placed against it, else the files' `peaks`."""
    out: dict = {"flops": {}, "bandwidth": {}, "gather": {}}

    def top(table: dict, key, value) -> None:
        if value:
            table[key] = max(table.get(key, 0.0), value)

    for p in pts:
        top(out["flops"], (p["device"], p["dtype"]), p["peak_flops"])
        top(out["bandwidth"], p["device"], p["peak_bw"])
        top(out["gather"], p["device"], p["peak_gather"])
    # The files' gather rate only where a plotted op reads random rows (not under GEMMs).
    devices = {p["device"] for p in pts if _gathers(p["op"])} - set(out["gather"])
    for doc in docs:
        pk = doc.get("peaks") or {}
        if pk.get("device") in devices:
            top(out["gather"], pk["device"], pk.get("gather_bandwidth"))
    return out


def _gathers(op: str) -> bool:
    return op in registry.ops() and registry.get_op(op).gathers


# One colour per impl in every chart (the order of the impls present used to decide it).
IMPL_COLORS = {"ootb": "C0", "native": "C1", "triton": "C2", "functional": "C3", "sparse": "C4"}


def roofline_figure(docs: list[dict], machine: str, ops: set[str] | None = None):
    """A matplotlib Figure of the points under the ceilings (ValueError: nothing to plot)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ValueError("plot needs matplotlib: pip install 'pydeepbench[plot]'") from e
    pts = points(docs, ops)
    if not pts:
        which = f" of op(s) {', '.join(sorted(ops))}" if ops else ""
        # Rows of a run without peaks have FLOPs and bytes but no roofline placement.
        if any(
            r.get("flops") and r.get("bytes") and r.get("arithmetic_intensity") is None
            for r in _op_rows(docs, ops)
        ):
            raise ValueError(
                f"plot: the ok rows{which} in these files were measured with --no-roofline "
                "(no peaks, no arithmetic intensity); rerun without --no-roofline to plot them"
            )
        raise ValueError(f"plot: no ok rows{which} with FLOPs and bytes in these files")
    roofs = ceilings(docs, pts)
    xs = [p["intensity"] for p in pts]
    lo, hi = min(xs) / 2, max(xs) * 2
    for (dev, _), f in roofs["flops"].items():  # reach past each ridge point
        for bw in (roofs["bandwidth"].get(dev), roofs["gather"].get(dev)):
            if bw:
                lo, hi = min(lo, f / bw / 4), max(hi, f / bw * 4)

    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Ceilings are legend entries: STREAM and gather rates are often close enough that
    # labels on the lines would overlap.
    same_roof: dict = {}  # dtypes placed against one roof share its line
    for (dev, dtype), f in sorted(roofs["flops"].items()):
        same_roof.setdefault((dev, f), []).append(dtype)
    for (dev, f), dtypes in sorted(same_roof.items()):
        label = f"FMA peak ({dev}) {f / 1e9:.1f} GFLOP/s: roof of {'/'.join(dtypes)} rows"
        ax.plot([lo, hi], [f, f], color="black", lw=1.2, label=label)
    # Each device's diagonals stop at its highest FMA roof (twice the top point without one).
    tops: dict = {}
    for (dev, _), f in roofs["flops"].items():
        tops[dev] = max(tops.get(dev, 0.0), f)
    no_roof = max(p["flop_s"] for p in pts) * 2
    for key, style, name in (("bandwidth", "-", "STREAM"), ("gather", "--", "random-row gather")):
        for dev, bw in sorted(roofs[key].items()):
            x1 = min(hi, tops.get(dev, no_roof) / bw)
            ax.plot(
                [lo, x1],
                [bw * lo, bw * x1],
                color="gray",
                ls=style,
                lw=1.2,
                label=f"{name} ({dev}) {bw / 1e9:.1f} GB/s",
            )
    # One series per op (marker) and impl (colour); the dtype joins the label when the
    # points have more than one (bf16 and fp32 GEMMs meet different roofs).
    impls = sorted({p["impl"] for p in pts})
    others = [i for i in impls if i not in IMPL_COLORS]
    colors = {**IMPL_COLORS, **{i: f"C{(5 + n) % 10}" for n, i in enumerate(others)}}
    series = sorted({(p["op"], p["dtype"]) for p in pts})
    many_dtypes = len({d for _, d in series}) > 1
    markers = {s: MARKERS[n % len(MARKERS)] for n, s in enumerate(series)}
    for op, dtype in series:
        for impl in impls:
            sel = [p for p in pts if (p["op"], p["dtype"], p["impl"]) == (op, dtype, impl)]
            if sel:
                ax.scatter(
                    [p["intensity"] for p in sel],
                    [p["flop_s"] for p in sel],
                    marker=markers[(op, dtype)],
                    color=colors[impl],
                    alpha=0.75,
                    label=f"{op}{' ' + dtype if many_dtypes else ''} [{impl}]",
                )
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP / byte, the op's bytes model)")
    ax.set_ylabel("achieved FLOP/s (median time)")
    ax.set_title(f"Roofline: {machine}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    fig.legend(fontsize=8, loc="outside right upper")  # beside the axes, not over points
    return fig


def cli_plot(args, con) -> int:
    """`python -m pydeepbench plot RESULTS.json... --out F [--op OP,...]`."""
    ext = os.path.splitext(args.out)[1].lower().lstrip(".")
    if ext not in ("png", "svg", "pdf"):
        raise ValueError(f"plot: --out must end in .png, .svg or .pdf, got {args.out!r}")
    machine, docs = load_docs(args.results)
    ops = None
    if args.op:
        from pydeepbench.cli import csv_list

        ops = set(csv_list(args.op, "--op"))
        unknown = ops - set(registry.ops())
        if unknown:
            raise ValueError(
                f"plot: unknown op(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(registry.ops()))}"
            )
    fig = roofline_figure(docs, machine, ops)
    report.out_path(args.out)
    fig.savefig(args.out, dpi=150)
    # escaped: rich would take brackets in the file name for markup and drop them
    con.print(escape(f"wrote {args.out} ({len(points(docs, ops))} points)"))
    return 0

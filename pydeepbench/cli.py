"""`python -m pydeepbench`: list, roofline, and one subcommand per op."""

from __future__ import annotations

import argparse
import datetime as dt

import torch
from rich.markup import escape

from pydeepbench import _native, harness, registry, report, roofline, shapes, system
from pydeepbench.ops._spec import TF32, dtype_name, parse_dtype
from pydeepbench.runner import SweepConfig, sweep


def csv_list(text: str, flag: str) -> list[str]:
    """A comma list flag's items; ValueError naming the flag when it has none (it would run
    nothing) or repeats one (it would run twice)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{flag}: no names in {text!r}")
    if len(set(items)) < len(items):
        dup = sorted({t for t in items if items.count(t) > 1})
        raise ValueError(f"{flag}: {', '.join(dup)} given more than once")
    return items


def _add_op_parser(sub, op: str) -> None:
    p = sub.add_parser(op, help=f"benchmark {op} over a shape set")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shapes", help="built-in shape set name or path to a .toml file")
    fields = registry.get_op(op).fields
    need = [k for k, (_, default, _) in fields.items() if default is None]
    src.add_argument(
        "--shape",
        help=f"one case as KEY=VALUE,... (lists in brackets: rows=[5000,300]); fields "
        f"{', '.join(fields)}; {', '.join(need) or 'none'} required",
    )
    p.add_argument("--impl", default=None, help="comma list (default: all registered)")
    p.add_argument(
        "--dtype",
        default="fp32",
        help="comma list of fp32,tf32,bf16,fp16,uint8 (tf32: fp32 tensors, TF32 tensor-core "
        "products, CUDA only; uint8: 8-bit rowwise embedding rows)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--mode",
        default="hot",
        choices=harness.MODES,
        help="hot: caches warm; cold: last-level cache flushed before each sample",
    )
    p.add_argument(
        "--max-time",
        type=float,
        default=5.0,
        help="seconds of samples per implementation and case (a case of 3 impls takes up to 3x)",
    )
    p.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds of sampling at least, per impl, before it may stop as converged "
        "(default 0.25, or half of --max-time if less)",
    )
    p.add_argument("--min-samples", type=int, default=10, help="samples at least, per impl")
    p.add_argument(
        "--target-noise",
        type=float,
        default=0.02,
        help="stop at IQR/median below (0: never on noise, only at --max-time)",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="time a case's impls one after another (default: side by side, samples "
        "alternating, so load drift on a shared machine stays out of their ratio)",
    )
    p.add_argument("--limit", type=int, default=None, help="run only the first N (>= 1) cases")
    p.add_argument("--json", help="results JSON (default: results/<op>-<set>-<time>.json)")
    p.add_argument("--csv", help="also write CSV here")
    p.add_argument("--markdown", help="also write a Markdown table here")
    p.add_argument("--no-roofline", action="store_true", help="skip peak measurement")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pydeepbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="ops, implementations available here (or why not), shape sets")
    r = sub.add_parser("roofline", help="measure (or show cached) peak FLOP/s and bandwidth")
    r.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    r.add_argument("--refresh", action="store_true", help="measure again, ignoring the cache")
    r.add_argument(
        "--max-time", type=float, default=2.0, help="seconds per probe when measuring (> 0)"
    )
    for op in registry.ops():
        _add_op_parser(sub, op)
    _add_model_parsers(sub)
    return p


def _add_model_parsers(sub) -> None:
    """`model` (workload.py), `report` (proxy.py) and `plot` (plot.py)."""
    m = sub.add_parser("model", help="benchmark whole model steps (train/infer), OOTB vs optimized")
    m.add_argument("model", help="model name (dlrm)")
    m.add_argument("--config", required=True, help="built-in config name or path to a .toml")
    m.add_argument("--impl", default="ootb,optimized", help="comma list of ootb,optimized")
    m.add_argument("--mode", default=None, help="comma list of train,infer (default: config's)")
    m.add_argument("--batch-size", type=int, default=None)
    m.add_argument("--steps", type=int, default=None, help="timed steps (default: config's)")
    m.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: config's)")
    m.add_argument("--row-cap", type=int, default=None, help="rows kept per table")
    m.add_argument(
        "--dense-impl",
        default="native",
        choices=("native", "ootb"),
        help="GEMM impl inside the optimized model's MLPs (default native)",
    )
    m.add_argument(
        "--emb-dtype",
        default="float32",
        choices=("float32", "uint8"),
        help="embedding tables: float32, or uint8 8-bit rowwise for both models (infer only)",
    )
    m.add_argument(
        "--json", help="results JSON (default: results/model-<model>-<config>-<time>.json)"
    )
    r = sub.add_parser(
        "report", help="Proxy Workloads table from results JSON (one machine), or two compared"
    )
    r.add_argument("results", nargs="+", help="results JSON files (side A with --against)")
    r.add_argument(
        "--against",
        nargs="+",
        metavar="RESULTS",
        help="results JSON files of a second system (side B): the lines both have, with B/A",
    )
    r.add_argument("--markdown", help="also write the table as Markdown here")
    r.add_argument("--csv", help="also write the table as CSV here")
    pl = sub.add_parser(
        "plot", help="roofline chart of op results (one machine) under its measured peaks"
    )
    pl.add_argument("results", nargs="+", help="results JSON files")
    pl.add_argument("--out", required=True, help="image to write (.png, .svg or .pdf)")
    pl.add_argument("--op", help="comma list of ops to plot (default: every op in the files)")


def cmd_list(con) -> int:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for op, _spec in registry.ops().items():
        con.print(f"[bold]{op}[/bold]")
        for name, impl in registry.impls(op).items():
            where = []
            for dev in ("cpu", "cuda"):
                if dev not in impl.devices:
                    continue
                why = impl.why_not(dev) if dev in devices else "no CUDA device here"
                dts = ",".join(dtype_name(d) for d in impl.dtypes[dev])
                state = "available" if why is None else f"unavailable: {why}"
                where.append(f"{dev} [{dts}]: {state}")
            con.print(escape(f"  {name:8s} {'; '.join(where)}"))
            if impl.doc:  # its first paragraph, not a line cut mid-sentence
                first = " ".join(impl.doc.split("\n\n")[0].split())
                con.print(escape(f"           {first}"))
        sets = shapes.builtin_sets(op)
        con.print(f"  shape sets: {', '.join(sets) if sets else '(none)'}")
    from pydeepbench.models import dlrm

    con.print("[bold]model dlrm[/bold]")
    con.print(f"  configs: {', '.join(dlrm.builtin_configs())}")
    return 0


def cmd_roofline(args, con) -> int:
    harness.check_bounds(max_time_s=args.max_time)  # also when the cached peaks answer
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("roofline --device cuda: no CUDA device visible to torch")
    sysinfo = system.collect()
    path = roofline.cache_path(args.device, sysinfo)
    pk = None if args.refresh else roofline.load_cached(args.device, path)
    measuring = pk is None
    if measuring:
        if warning := system.busy_warning(sysinfo):
            # every later %peak is placed against what this measures
            con.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        pk = roofline.peaks(args.device, refresh=True, max_time_s=args.max_time)
    con.print(f"peaks for {args.device} ({escape(system.machine_id(sysinfo))}):")
    if "not_cached" in pk.detail:  # roofline.peaks: measured on a busy machine
        where = f"measured now, not cached (the machine was busy; {path} is left as it was)"
    elif measuring:
        where = f"measured now: {path}"
    else:
        when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        where = f"cached, measured {when.strftime('%Y-%m-%d %H:%M UTC')}: {path}"
    con.print(escape(f"  {where} (--refresh measures again; PYDEEPBENCH_CACHE moves the cache)"))
    for dtype, v in pk.flops.items():
        con.print(escape(f"  {dtype:9s} {v / 1e9:10.1f} GFLOP/s   [{pk.flops_source[dtype]}]"))
    for k, v in pk.detail.items():
        if k.startswith("fma_") and isinstance(v, str):
            roof = pk.peak_flops(getattr(torch, k[4:]))[0]
            also = "; its rows are placed under the float32 peak" if roof else ""
            con.print(escape(f"  {k[4:]:9s} {'-':>10s}           [{v}{also}]"))
    con.print(escape(f"  bandwidth {pk.bandwidth / 1e9:10.1f} GB/s      [{pk.bandwidth_source}]"))
    stream = pk.detail.get("stream", {}).get("bytes_per_s", {})
    for k, v in stream.items():
        con.print(f"    STREAM {k:6s} {v / 1e9:8.1f} GB/s")
    if pk.gather_bandwidth:
        g = pk.detail["gather"]
        con.print(
            escape(
                f"  gather    {pk.gather_bandwidth / 1e9:10.1f} GB/s      [{pk.gather_source}; "
                f"{g['table_bytes'] / 2**30:.1f} GiB table, median "
                f"{g['median_bytes_per_s'] / 1e9:.1f} GB/s]"
            )
        )
    return 0


def _check_sweep_args(args, op: str, impl_names: list[str], dtypes: list[torch.dtype]) -> None:
    """Refuse flags that would run nothing or measure nonsense, naming the flag."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    impls = [registry.get_impl(op, n) for n in impl_names]
    for dtype in dtypes:
        if not any(dtype in i.dtypes.get(args.device, ()) for i in impls):
            name = dtype_name(dtype)
            why = " (a CUDA tensor-core mode)" if dtype == TF32 and args.device != "cuda" else ""
            raise ValueError(
                f"--dtype {name}: no implementation of {op} ({', '.join(impl_names)}) "
                f"supports it on {args.device}{why}"
            )


def cmd_op(args, con) -> int:
    op = args.command
    impl_names = csv_list(args.impl, "--impl") if args.impl else list(registry.impls(op))
    for name in impl_names:
        registry.get_impl(op, name)  # unknown names fail before anything runs
    if "ootb" in impl_names:  # baseline first, so speedups are computed against it
        impl_names.remove("ootb")
        impl_names.insert(0, "ootb")
    dtypes = [parse_dtype(d) for d in csv_list(args.dtype, "--dtype")]
    if len(set(dtypes)) < len(dtypes):  # two spellings of one dtype (fp32,float32)
        raise ValueError(f"--dtype: {args.dtype!r} names a dtype more than once")
    _check_sweep_args(args, op, impl_names, dtypes)
    hcfg = harness.HarnessConfig(
        mode=args.mode,
        max_time_s=args.max_time,
        min_time_s=args.min_time,
        min_samples=args.min_samples,
        target_rel_iqr=args.target_noise,
    )
    if args.shapes:
        sset = shapes.load(args.shapes, op)
        set_name, cases = sset.name, sset.cases
    else:
        set_name, cases = "custom", [shapes.parse_shape(args.shape, op)]
    if args.limit is not None:
        cases = cases[: args.limit]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{op} --device cuda: no CUDA device visible to torch")
    cfg = SweepConfig(
        op=op,
        impls=impl_names,
        dtypes=dtypes,
        device=args.device,
        shape_set=set_name,
        harness=hcfg,
        interleave=not args.sequential,
    )
    sysinfo = system.collect()
    if warning := system.busy_warning(sysinfo):
        con.print(f"[yellow]warning:[/yellow] {warning}")
    json_path = args.json or report.default_json_path(f"{op}-{set_name}")
    for flag, path in (("--json", json_path), ("--csv", args.csv), ("--markdown", args.markdown)):
        report.refuse_directory(flag, path)  # before the sweep, not after it
    pk = None if args.no_roofline else roofline.peaks(args.device)
    run_info = {
        "op": op,
        "set": set_name,
        "impls": impl_names,
        "dtypes": [dtype_name(d) for d in dtypes],
        "device": args.device,
        "harness": vars(cfg.harness),
        "interleave": cfg.interleave,
    }
    writer = report.JsonWriter(json_path, sysinfo, pk.as_dict() if pk else None, run_info)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = len(cases) * len(dtypes)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=con,
        transient=True,
    ) as prog:
        task = prog.add_task(f"{op} {set_name}", total=total)

        first = [True]
        # One layout for the whole sweep, so that every case's rows line up.
        gathers, width, said = registry.get_op(op).gathers, con.width, set()

        def on_rows(rows):
            writer.add(rows)
            table = report.table(rows, first[0], gathers, width, said)
            prog.console.print(table)
            first[0] = False
            prog.advance(task)

        try:
            rows = sweep(cfg, cases, pk, on_rows)
        except KeyboardInterrupt:
            con.print(escape(f"interrupted: the cases done are in {json_path} (incomplete)"))
            return 130
    writer.close()
    for line in report.summary(rows):
        con.print(line)
    if args.csv:
        report.write_csv(args.csv, rows)
    if args.markdown:
        report.write_text(args.markdown, report.markdown(rows, gathers))
    con.print(escape(f"results: {json_path}"))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    con = report.console()
    try:
        # A typo would skip every native row of a run, and the run would pass.
        if args.command not in ("list", "report", "plot") and (why := _native.setting_problem()):
            raise ValueError(why)
        if args.command == "list":
            return cmd_list(con)
        if args.command == "roofline":
            return cmd_roofline(args, con)
        if args.command == "model":
            from pydeepbench.workload import cli_model

            return cli_model(args, con)
        if args.command == "report":
            from pydeepbench.proxy import cli_report

            return cli_report(args, con)
        if args.command == "plot":
            from pydeepbench.plot import cli_plot

            return cli_plot(args, con)
        return cmd_op(args, con)
    except KeyboardInterrupt:
        con.print("interrupted")
        return 130
    except (ValueError, OSError) as e:
        if isinstance(e, OSError) and e.filename is None:
            raise  # not a results file or output path the user named: keep the traceback
        con.print(f"[red]error:[/red] {escape(str(e))}")
        return 2

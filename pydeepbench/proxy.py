"""The Proxy Workloads results table (FAMBench's summary), from results JSON files.

Columns: Model | Implementation | Mode | Config | Batch Size | Score | Units.
- Model rows (`kind: "model"`, from `pydeepbench model`): score in examples/s; a `*`
  after the score marks an inference row whose latency percentile missed its target.
  An implementation that ran with fallback kernels says so ("optimized (fallback emb)"),
  as does one whose MLPs ran torch GEMMs ("dense ootb"); Config carries the row cap
  where it cut a table.
- Micro rows, one per op row: `gemm` and `linear` give "Micro | GEMM [impl]" and
  "Micro | MLP/Linear [impl]" in TF/s, `embedding_bags`, `embedding_bags_train` and
  `dot_interaction` "Micro | EmbeddingBag [impl]", "Micro | EmbeddingBag train [impl]"
  and "Micro | Interaction [impl]" in GB/s (memory bound); Mode is the micro benchmark's
  timing mode (hot/cold), Config is set:case plus the dtype unless float32 (", bf16",
  ", uint8"; not the device, so a CPU system's lines compare with a GPU's), Batch Size
  is linear's M, the bags' batch, the interaction's B ("-" for a GEMM, which names no
  batch dimension).
Only rows with status ok are tabulated; the others are counted in a note, as are ok rows
of an op the table has no line for. Files from different machines (system.machine_id)
are refused: their scores do not compare.

`report A.json... --against B.json...` compares two sets of files (two systems, or one
system before and after a change), each set from one machine: the lines both sides
have (same model or micro op, impl, mode, config, batch size and units) with both
scores and B/A (every score is higher-is-better), and the geomean of B/A per model and
per micro op and impl.
"""

from __future__ import annotations

import csv
import json
import math
import os

from rich.markup import escape
from rich.table import Table

from pydeepbench import registry, report, system
from pydeepbench.workload import latency_marker

COLUMNS = ("Model", "Implementation", "Mode", "Config", "Batch Size", "Score", "Units")
KEY = tuple(c for c in COLUMNS if c != "Score")  # what matches a line across two systems
COMPARE_COLUMNS = (*KEY, "A", "B", "B/A")
# op -> (name, score key, units, shape key of the batch size or None)
MICRO_OPS = {
    "gemm": ("GEMM", "tflops", "TF/s", None),
    "linear": ("MLP/Linear", "tflops", "TF/s", "M"),
    "embedding_bags": ("EmbeddingBag", "gbps", "GB/s", "batch"),
    "embedding_bags_train": ("EmbeddingBag train", "gbps", "GB/s", "batch"),
    "dot_interaction": ("Interaction", "gbps", "GB/s", "B"),
}
# --dtype's names; float32 is left implicit, as on model rows.
SHORT_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}


def load_docs(paths: list[str | os.PathLike]) -> tuple[str, list[dict]]:
    """(machine id, the parsed files) from result files of one machine; ValueError
    otherwise (also what `plot` reads)."""
    if not paths:
        raise ValueError("give at least one results JSON file")
    ids: dict[str, list[str]] = {}
    docs = []
    for p in paths:
        doc = report.load_results(p)
        if not isinstance(doc.get("system"), dict) or not isinstance(doc.get("results"), list):
            raise ValueError(f"{p}: needs a 'system' object and a 'results' list")
        try:
            mid = system.machine_id(doc["system"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{p}: its 'system' lacks the CPU and memory fields ({e})") from None
        ids.setdefault(mid, []).append(str(p))
        docs.append(doc)
    if len(ids) > 1:
        detail = "; ".join(f"{mid}: {', '.join(files)}" for mid, files in ids.items())
        raise ValueError(
            f"refusing to mix results from {len(ids)} different machines ({detail}); "
            "give one machine's files at a time"
        )
    return next(iter(ids)), docs


# What the table reads of every row (a hand-edited or cut file ended in a KeyError).
_NEEDED = ("op", "impl", "set", "case", "status")
_NEEDED_MODEL = ("model", "impl", "mode", "config", "batch_size", "status", "score", "units")


def _check_fields(path, doc: dict) -> None:
    for i, row in enumerate(doc["results"]):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: results[{i}] is not an object")
        need = _NEEDED_MODEL if row.get("kind") == "model" else _NEEDED
        missing = [k for k in need if k not in row]
        if missing:
            raise ValueError(f"{path}: results[{i}] lacks {', '.join(missing)}")


def load(paths: list[str | os.PathLike]) -> tuple[str, list[dict], list[str]]:
    """(machine id, every row, the files of interrupted runs) from result files of one
    machine; ValueError otherwise."""
    machine, docs = load_docs(paths)
    for p, doc in zip(paths, docs, strict=True):
        _check_fields(p, doc)
    cut = [str(p) for p, doc in zip(paths, docs, strict=True) if doc.get("complete") is False]
    return machine, [r for doc in docs for r in doc["results"]], cut


def devices(rows: list[dict]) -> set[str]:
    return {r.get("device", "cpu") for r in rows if r.get("status") == "ok"}


def entry(r: dict, device_tag: bool = False) -> dict | None:
    """One table line for a result row, or None when the row is not tabulated. With
    device_tag, Config names the device (see `entries`)."""
    e = _entry(r)
    if e is not None and device_tag:
        e["Config"] += f", {r.get('device', 'cpu')}"
    return e


def _entry(r: dict) -> dict | None:
    if r.get("status") != "ok":
        return None
    if r.get("kind") == "model":
        tags = ["fallback emb"] if r.get("fallback") else []
        if r["impl"] != "ootb" and r.get("dense_impl") not in (None, "native"):
            tags.append(f"dense {r['dense_impl']}")
        impl = r["impl"] + (f" ({', '.join(tags)})" if tags else "")
        return {
            "Model": r["model"].upper(),
            "Implementation": impl,
            "Mode": r["mode"],
            # "cap N" only where the cap cut a table (a small config's tables keep all rows)
            "Config": r["config"]
            + ("" if r.get("tables_capped") == 0 else f" cap {r.get('row_cap')}")
            + (", uint8 emb" if r.get("emb_dtype") == "uint8" else ""),
            "Batch Size": r["batch_size"],
            "Score": f"{r['score']:.1f}{latency_marker(r)}",
            "Units": r["units"],
            "value": r["score"],
            "missed": None if r.get("latency_met") is None else not r["latency_met"],
            # Not shown, but part of the line's identity: another version of the config,
            # or another latency target, is another line.
            "identity": json.dumps(
                [r.get(k) for k in ("config_version", "latency_target_s", "latency_percentile")]
            ),
        }
    if r.get("op") in MICRO_OPS:
        name, key, units, batch_key = MICRO_OPS[r["op"]]
        if r.get(key) is None:
            return None
        # The dtype is part of a line's identity: a sweep of several dtypes gives one line
        # per dtype, and --against must not match fp32 with uint8. The device is only
        # where a side holds several (`entries`): a CPU system's lines compare with a GPU
        # system's.
        dtype = r.get("dtype", "float32")
        tags = [] if dtype == "float32" else [SHORT_DTYPES.get(dtype, dtype)]
        return {
            "Model": "Micro",
            "Implementation": f"{name} [{r['impl']}]",
            "Mode": r.get("mode") or "-",
            "Config": f"{r['set']}:{r['case']}" + "".join(f", {t}" for t in tags),
            "Batch Size": (r.get("shape") or {}).get(batch_key, "-") if batch_key else "-",
            "Score": f"{r[key]:.3g}",
            "Units": units,
            "value": r[key],
            # A case's name may leave fields out (a --shape case's embedding rows and
            # row_cap), and a named set's case may change with the set's file (an edited
            # or newer version): the whole shape is part of the line's identity, less
            # the fields at their defaults (a file written before a field was added
            # lacks them, and is the same case).
            "identity": _shape_identity(r["op"], r.get("shape") or {}),
        }
    return None


def _shape_identity(op: str, shape: dict) -> str:
    fields = registry.get_op(op).fields
    kept = {k: v for k, v in shape.items() if k not in fields or fields[k][1] != v}
    return json.dumps(kept, sort_keys=True)


def entries(rows: list[dict], device_tag: bool | None = None) -> list[dict]:
    """The table's lines. Config names the device when device_tag is true, by default when
    the rows hold more than one device: one GPU machine's cpu and cuda rows of a case are
    two lines, which --against had matched with another file's one."""
    if device_tag is None:
        device_tag = len(devices(rows)) > 1
    out = [e for e in (entry(r, device_tag) for r in rows) if e is not None]
    return sorted(out, key=lambda e: (e["Model"] == "Micro", e["Model"], e["Config"], e["Mode"]))


def notes(rows: list[dict]) -> list[str]:
    out = []
    if any(latency_marker(r) for r in rows if r.get("status") == "ok"):
        out.append("* missed its latency target (MLPerf Server percentile, see the row's JSON)")
    # A percentile p of fewer than 100 / (100 - p) steps is the slowest step or near it
    # (p = 100 is the slowest step by definition).
    few = {}
    for r in rows:
        pct, steps = r.get("latency_percentile"), r.get("steps")
        if r.get("status") == "ok" and r.get("latency_met") is not None and pct and steps:
            need = math.ceil(100 / (100 - pct)) if pct < 100 else 1
            if steps < need:
                few[(steps, pct)] = need
    for (steps, pct), need in sorted(few.items()):
        out.append(
            f"latency p{pct:g} from {steps} step(s) is about the slowest step: "
            f"run at least {need} --steps to read the percentile"
        )
    fb = {r["fallback"] for r in rows if r.get("kind") == "model" and r.get("fallback")}
    for f in sorted(fb):
        out.append(f"fallback emb: {f}")
    n = sum(r.get("status") != "ok" for r in rows)
    if n:
        out.append(f"{n} row(s) skipped or failed are not tabulated")
    noisy = sum(
        bool((r.get("harness") or {}).get("noisy")) for r in rows if r.get("status") == "ok"
    )
    if noisy:
        out.append(
            f"{noisy} line(s) from noisy timings (IQR over the bound, or out of time below "
            "the minimum samples; see each row's harness in the JSON)"
        )
    # ok rows without a line (an op unknown here, or no score): said, not dropped silently
    lost = [r for r in rows if r.get("status") == "ok" and entry(r) is None]
    if lost:
        ops = sorted({str(r.get("op") or r.get("kind")) for r in lost})
        out.append(f"{len(lost)} ok row(s) of {', '.join(ops)} have no line in this table")
    return out


def line_key(e: dict) -> tuple:
    """What identifies a line across files: KEY's columns, and what the table does not show
    (a micro case's shape; a model config's version and latency target)."""
    return (*(e[c] for c in KEY), e.get("identity", ""))


def compare(base: list[dict], other: list[dict]) -> tuple[list[dict], list[str]]:
    """Lines on both sides (matched on KEY) with A's and B's scores and B/A, and notes:
    the geomean of B/A per model (per micro op and impl), lines only one side has, and
    repeated lines."""
    notes_out = []
    sides = []
    device_tag = len(devices(base)) > 1 or len(devices(other)) > 1
    for name, rows in (("A", base), ("B", other)):
        es = entries(rows, device_tag)
        by_key: dict[tuple, dict] = {}
        for e in es:
            by_key.setdefault(line_key(e), e)  # the first of repeated lines
        repeats = len(es) - len(by_key)
        if repeats:
            notes_out.append(f"{repeats} repeated line(s) on side {name}: the first is compared")
        sides.append(by_key)
    a, b = sides
    lines, ratios = [], {}
    for k, ea in a.items():
        if k not in b:
            continue
        ratio = b[k]["value"] / ea["value"] if ea["value"] else None
        lines.append(
            {
                **{c: ea[c] for c in KEY},
                "A": ea["Score"],
                "B": b[k]["Score"],
                "B/A": report.ratio_text(ratio),
                "a_value": ea["value"],
                "b_value": b[k]["value"],
                "ratio": ratio,
                "a_missed": ea.get("missed"),
                "b_missed": b[k].get("missed"),
            }
        )
        if ratio:
            group = ea["Model"] + (f" {ea['Implementation']}" if ea["Model"] == "Micro" else "")
            ratios.setdefault(group, []).append(ratio)
    for group, rs in sorted(ratios.items()):
        g = report.ratio_text(report.geomean(rs))
        notes_out.append(f"{group}: geomean B/A {g} over {len(rs)} line(s)")
    for name, mine, theirs in (("A", a, b), ("B", b, a)):
        n = len(set(mine) - set(theirs))
        if n:
            notes_out.append(f"{n} line(s) only on side {name} are not compared")
    return lines, notes_out


def text_table(es: list[dict], columns: tuple[str, ...] = COLUMNS) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    right = ("Batch Size", "Score", "A", "B", "B/A")
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left")
    for e in es:
        t.add_row(*(escape(str(e[c])) for c in columns))  # "[native]" is not rich markup
    return t


def markdown(es: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for e in es:
        lines.append("| " + " | ".join(report.md_cell(e[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


# CSV cells are numbers: the raw value behind each formatted score column, the latency
# marker in its own column (empty where a line has no latency target).
CSV_NUMBERS = {"Score": "value", "A": "a_value", "B": "b_value", "B/A": "ratio"}
CSV_MISSED = {"Score": ("Latency target missed", "missed"),
              "A": ("A latency target missed", "a_missed"),
              "B": ("B latency target missed", "b_missed")}  # fmt: skip


def write_csv(path: str | os.PathLike, es: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    extra = [CSV_MISSED[c] for c in columns if c in CSV_MISSED]
    with open(report.out_path(path), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*columns, *(h for h, _ in extra)])
        w.writeheader()
        for e in es:
            row = {c: e.get(CSV_NUMBERS[c]) if c in CSV_NUMBERS else e[c] for c in columns}
            row.update({h: "" if e.get(k) is None else e[k] for h, k in extra})
            w.writerow(row)


def detail_table(rows: list[dict]) -> Table:
    """Per model row: latency percentiles, target, equivalence check, speedup, kernels."""
    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in (
        "impl",
        "mode",
        "ex/s",
        "p50",
        "p95",
        "p99",
        "target",
        "vs ootb",
        "check",
        "kernels",
        "status",
    ):
        t.add_column(c)
    for r in rows:
        lat = r.get("latency_s") or {}
        chk = r.get("check")
        target = r.get("latency_target_s")
        t.add_row(
            r["impl"],
            r["mode"],
            "-" if r.get("score") is None else f"{r['score']:.1f}{latency_marker(r)}",
            *(report._fmt_time(lat.get(p)) for p in ("p50", "p95", "p99")),
            "-" if target is None else f"p{r['latency_percentile']} <= {report._fmt_time(target)}",
            report.ratio_text(r.get("speedup_vs_ootb")),
            "-" if chk is None else ("pass" if chk["ok"] else "FAIL") + _diff(chk),
            "-"
            if r.get("emb_impl") is None  # a skipped row built no model
            else f"emb={r['emb_impl']} dense={r.get('dense_impl')}",
            escape(r["status"] + ("" if r["status"] == "ok" else f": {r.get('reason')}")),
        )
    return t


def _diff(chk: dict) -> str:
    d = chk.get("max_abs_diff")  # None once written: the difference was NaN
    return "" if d is None else f" {d:.1e}"


def cli_report(args, con) -> int:
    """`python -m pydeepbench report RESULTS.json... [--against RESULTS.json...]
    [--markdown PATH] [--csv PATH]`."""
    for flag, path in (("--csv", args.csv), ("--markdown", args.markdown)):
        report.refuse_directory(flag, path)
    machine, rows, cut = load(args.results)
    if args.against:
        other_machine, other, other_cut = load(args.against)
        cut += other_cut
        es, extra = compare(rows, other)
        columns = COMPARE_COLUMNS
        con.print(escape(f"A: {machine} ({', '.join(map(str, args.results))})"))
        con.print(escape(f"B: {other_machine} ({', '.join(map(str, args.against))})"))
        lines = extra + [f"A: {n}" for n in notes(rows)] + [f"B: {n}" for n in notes(other)]
    else:
        es, columns = entries(rows), COLUMNS
        con.print(escape(f"Proxy Workloads results on {machine}"))
        lines = notes(rows)
        repeats = len(es) - len({line_key(e) for e in es})
        if repeats:
            lines.append(f"{repeats} repeated line(s): a case in more than one file or run")
    lines += [f"{p}: an interrupted run (incomplete): its missing cases have no line" for p in cut]
    con.print(text_table(es, columns))
    for line in lines:
        con.print(escape(line))
    if args.markdown:
        report.write_text(args.markdown, markdown(es, columns))
    if args.csv:
        write_csv(args.csv, es, columns)
    return 0

"""The only module that formats output: terminal tables, JSON (versioned schema), CSV and
Markdown. JSON is rewritten atomically after every case, so an interrupted sweep keeps
everything it measured."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import sys
from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

SCHEMA = "pydeepbench.results/3"
# /3 added emb_dtype to model rows, /2 pct_peak_gather to op rows; older files read the same
# otherwise (a missing field reads as None: float32 tables).
READABLE_SCHEMAS = ("pydeepbench.results/1", "pydeepbench.results/2", SCHEMA)

# Every result row carries these keys (None when they do not apply, e.g. skipped rows).
ROW_FIELDS = (
    "op",
    "impl",
    "device",
    "dtype",
    "set",
    "case",
    "shape",
    "seed",
    "mode",
    "status",
    "reason",
    "time_s",
    "samples_s",
    "flops",
    "bytes",
    "tflops",
    "gbps",
    "arithmetic_intensity",
    "peak_flops",
    "peak_flops_source",
    "peak_bw",
    "pct_peak_flops",
    "pct_peak_bw",
    "pct_peak_gather",
    "attainable_flops",
    "bound",
    "pct_attainable",
    "speedup_vs_ootb",
    "check",
    "harness",
    "telemetry",  # CUDA rows only: the GPU's NVML readings after the case was timed
)
STATUSES = ("ok", "skipped", "failed")

# Model rows (`kind: "model"`, written by workload.py) carry these keys instead; op rows
# have no `kind`. See workload.py for what each field means.
MODEL_ROW_FIELDS = (
    "kind",
    "model",
    "impl",
    "mode",
    "config",
    "config_version",
    "config_source",
    "device",
    "dtype",
    "batch_size",
    "row_cap",
    "tables_capped",
    "table_bytes",
    "seed",
    "data",
    "steps",
    "warmup",
    "status",
    "reason",
    "score",
    "units",
    "score_convention",
    "time_s",
    "samples_s",
    "latency_s",
    "latency_percentile",
    "latency_target_s",
    "latency_met",
    "emb_impl",
    "dense_impl",
    "emb_dtype",
    "fallback",
    "check",
    "speedup_vs_ootb",
    "harness",
)


def json_safe(v):
    """v with every NaN or infinite float (a failed check's error) as None: JSON has no
    such numbers, and writing them would end the sweep at the row that should record it."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


def normalize(row: dict) -> dict:
    fields = MODEL_ROW_FIELDS if row.get("kind") == "model" else ROW_FIELDS
    unknown = set(row) - set(fields)
    if unknown:
        raise ValueError(f"result row has fields outside the schema: {sorted(unknown)}")
    if row.get("status") not in STATUSES:
        raise ValueError(f"result row status must be one of {STATUSES}, got {row.get('status')!r}")
    return {k: json_safe(row.get(k)) for k in fields}


def default_json_path(stem: str) -> str:
    """results/<stem>-<UTC time>.json, where a sweep or model run writes without --json."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join("results", f"{stem}-{stamp}.json")


class JsonWriter:
    def __init__(self, path: str | os.PathLike, system: dict, peaks: dict | None, run: dict):
        self.path = Path(path)
        self.doc = {
            "schema": SCHEMA,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "run": {"argv": sys.argv[1:], **run},
            "system": system,
            "peaks": peaks,
            "complete": False,
            "results": [],
        }
        self._flush()

    def add(self, rows: list[dict]) -> None:
        self.doc["results"].extend(normalize(r) for r in rows)
        self._flush()

    def close(self) -> None:
        self.doc["complete"] = True
        self._flush()

    def _flush(self) -> None:
        out_path(self.path)
        tmp = self.path.with_name(self.path.name + ".partial")
        tmp.write_text(json.dumps(self.doc, indent=1, allow_nan=False, default=_json_default))
        tmp.replace(self.path)


def _json_default(o):
    raise TypeError(f"cannot serialize {type(o).__name__} in results")


def load_results(path: str | os.PathLike) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such results file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a pydeepbench results file (a JSON object)")
    if doc.get("schema") not in READABLE_SCHEMAS:
        raise ValueError(f"{path}: schema {doc.get('schema')!r} is not one of {READABLE_SCHEMAS}")
    return doc


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    # A unit from where the value lands once rounded to 3 digits: 999.7e-6 s is "1 ms",
    # not "1e+03 us".
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale * 0.9995:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def ratio_text(ratio: float | None) -> str:
    """A speedup or B/A: two decimals, two significant digits below 0.1 (a Triton
    interpreter's 0.0012x read 0.00x), none from 100 on (2500.37x wrapped its cell)."""
    if ratio is None:
        return "-"
    if ratio >= 99.995:  # what rounds to 100.00x
        return f"{ratio:.0f}x"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _fmt(v: float | None, spec: str = ".3g", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


# CSV column -> where it lives in a result row (a top-level key, or a key of a nested dict).
_FLAT = {
    **{
        k: (k,)
        for k in ("op", "impl", "device", "dtype", "set", "case", "mode", "status", "reason")
    },
    "time_median_s": ("time_s", "median"),
    "time_min_s": ("time_s", "min"),
    "time_iqr_s": ("time_s", "iqr"),
    "n": ("time_s", "n"),
    **{
        k: (k,)
        for k in (
            "tflops",
            "gbps",
            "pct_peak_flops",
            "pct_peak_bw",
            "pct_peak_gather",
            "bound",
            "speedup_vs_ootb",
        )
    },
    "check_ok": ("check", "ok"),
    "max_abs_err": ("check", "max_abs_err"),
    "stop_reason": ("harness", "stop_reason"),
    "noisy": ("harness", "noisy"),
}
FLAT_COLUMNS = tuple(_FLAT)


def flat(row: dict) -> dict:
    out = {}
    for col, path in _FLAT.items():
        v = row.get(path[0])
        out[col] = (v or {}).get(path[1]) if len(path) == 2 else v
    return out


def refuse_directory(flag: str, path: str | os.PathLike | None) -> None:
    """ValueError when an output path names a directory (checked before the work)."""
    if path is not None and Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file path")


def out_path(path: str | os.PathLike) -> Path:
    """An output file's path, its directories created (every file the commands write)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def write_text(path: str | os.PathLike, text: str) -> None:
    out_path(path).write_text(text)


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    with open(out_path(path), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FLAT_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(flat(r))


def _status(r: dict, with_reason: bool) -> str:
    if r["status"] == "ok":
        return "ok (noisy)" if (r.get("harness") or {}).get("noisy") else "ok"
    return f"{r['status']}: {r.get('reason')}" if with_reason else r["status"]


def _cells(r: dict, with_reason: bool = True) -> dict[str, str]:
    t = (r.get("time_s") or {}).get("median")
    chk = r.get("check")
    check = "-"
    if chk is not None:
        err = json_safe(chk["max_abs_err"])  # NaN or infinite (None once written): no figure
        check = ("pass" if chk["ok"] else "FAIL") + ("" if err is None else f" {err:.1e}")
    return {
        "case": r["case"],
        "impl": r["impl"],
        "dtype": r["dtype"],
        "median time": _fmt_time(t),
        "TF/s": _fmt(r.get("tflops"), ".3g"),
        "GB/s": _fmt(r.get("gbps"), ".1f"),
        "%peak F": _fmt(r.get("pct_peak_flops"), ".0f", "%"),
        "%peak BW": _fmt(r.get("pct_peak_bw"), ".0f", "%"),
        "%gather": _fmt(r.get("pct_peak_gather"), ".0f", "%"),
        "bound": r.get("bound") or "-",
        "vs ootb": ratio_text(r.get("speedup_vs_ootb")),
        "check": check,
        "status": _status(r, with_reason),
    }


# Column -> fixed width, so the tables printed case by case line up as one table.
WIDTHS = {
    "case": 28,
    "impl": 10,
    "dtype": 8,
    "median time": 11,
    "TF/s": 9,
    "GB/s": 7,
    "%peak F": 7,
    "%peak BW": 8,
    "%gather": 7,
    "bound": 7,
    "vs ootb": 7,
    "check": 12,
    "status": 10,
}
HEADERS = list(WIDTHS)
# Columns left out, in this order, while a table is wider than the terminal (the JSON,
# CSV and Markdown keep them all), once narrowing the case column to 12 (it folds) is
# not enough. Case, impl, median time and status remain: 49 columns; a narrower
# terminal cuts them.
NARROW_DROP = (
    "bound",
    "%peak BW",
    "%gather",
    "GB/s",
    "%peak F",
    "check",
    "TF/s",
    "dtype",
    "vs ootb",
)


def _headers(gathers: bool) -> list[str]:
    """%gather only for ops placed under the gather roof (OpSpec.gathers)."""
    return [h for h in HEADERS if gathers or h != "%gather"]


def table(
    rows: list[dict],
    header: bool = True,
    gathers: bool = False,
    width: int | None = None,
    said: set | None = None,
):
    """Rows as a terminal table of fixed column widths (the tables printed case by case
    line up), and the reasons of skipped/failed rows as lines below it: rich cuts a cell's
    text when a table is wider than the terminal, so a table fitted to `width` (the
    console's) leaves columns out instead (NARROW_DROP). `said`: the (impl, dtype, reason)
    lines already printed in this sweep, printed once (a skip for want of Triton or of a
    kernel would otherwise repeat under every case)."""
    heads, widths = _headers(gathers), dict(WIDTHS)
    if width is not None:
        drop = [h for h in NARROW_DROP if h in heads]
        room = widths["case"] - 12  # what folding the case column gives back first
        while sum(widths[h] + 2 for h in heads) - 2 - room > width and drop:
            heads.remove(drop.pop(0))
        over = sum(widths[h] + 2 for h in heads) - 2 - width
        widths["case"] = max(12, widths["case"] - max(over, 0))  # folded, not cut
    t = Table(box=None, show_header=header, pad_edge=False, header_style="bold")
    for h in heads:
        t.add_column(h, min_width=widths[h], max_width=widths[h], overflow="fold")
    reasons = []
    for r in rows:
        cells = _cells(r, with_reason=False)
        t.add_row(*(escape(cells[h]) for h in heads))
        key = (r["impl"], r["dtype"], _status(r, True))
        if r["status"] != "ok" and (said is None or key not in said):
            reasons.append(escape(f"  {r['case']} {r['impl']} {r['dtype']}: {key[2]}"))
            if said is not None:
                said.add(key)
    return Group(t, *reasons) if reasons else t


def md_cell(text: object) -> str:
    """Text for one Markdown table cell: pipes escaped, line breaks (multi-line error
    reasons from torch or Triton split the row) as spaces."""
    return " ".join(str(text).replace("|", "\\|").splitlines())


def markdown(rows: list[dict], gathers: bool) -> str:
    heads = _headers(gathers)
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        cells = _cells(r)
        lines.append("| " + " | ".join(md_cell(cells[h]) for h in heads) + " |")
    return "\n".join(lines) + "\n"


def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def summary(rows: list[dict]) -> list[str]:
    """Geomean speedup vs ootb per (impl, dtype), and counts of failed/skipped rows."""
    out = []
    keys = sorted({(r["impl"], r["dtype"]) for r in rows if r["impl"] != "ootb"})
    for impl, dtype in keys:
        sp = [
            r["speedup_vs_ootb"]
            for r in rows
            if r["impl"] == impl and r["dtype"] == dtype and r.get("speedup_vs_ootb")
        ]
        g = geomean(sp)
        if g is not None:
            out.append(f"{impl} {dtype}: geomean {ratio_text(g)} vs ootb over {len(sp)} cases")
    noisy = sum(r["status"] == "ok" and (r.get("harness") or {}).get("noisy") for r in rows)
    if noisy:
        out.append(
            f"{noisy} ok row(s) noisy (spread above the bound, or out of time below "
            "--min-samples): their times and speedups are less certain"
        )
    for status in ("failed", "skipped"):
        n = sum(r["status"] == status for r in rows)
        if n:
            out.append(f"{n} row(s) {status}")
    return out


def console() -> Console:
    # Piped output (CI logs, files) gets a wide fixed width instead of rich's 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 170)

"""The Proxy Workloads table from result files: model and micro rows, the latency marker,
Markdown/CSV output, refusal to mix machines, and the `report` subcommand end to end."""

import csv
import json
from pathlib import Path

import pytest

from pydeepbench import cli, proxy, report

FIX = Path(__file__).parent / "fixtures"
MODELS, MICRO, OTHER = (
    FIX / "results-models.json",
    FIX / "results-micro.json",
    FIX / "results-other-machine.json",
)


def test_table_from_model_and_micro_files():
    machine, rows, _ = proxy.load([MODELS, MICRO])
    assert machine.startswith("Test CPU 9000|2 cpus|24 GiB")
    es = proxy.entries(rows)
    by = {(e["Model"], e["Implementation"], e["Mode"]): e for e in es}
    # value: the score as a number; missed: the latency target missed (None: no target)
    assert list(es[0]) == [*proxy.COLUMNS, "value", "missed", "identity"]
    # Model rows: score in ex/s, '*' only on the inference row that missed its target.
    assert by[("DLRM", "ootb", "train")]["Score"] == "400.0"
    assert by[("DLRM", "ootb", "infer")]["Score"] == "20000.0"
    missed = by[("DLRM", "optimized (fallback emb)", "infer")]
    assert missed["Score"] == "800.0*" and missed["Units"] == "ex/s"
    assert missed["Config"] == "dlrm-mlperf cap 500000" and missed["Batch Size"] == 2048
    # Micro rows: linear in TF/s (batch = M), embedding_bags in GB/s (batch = batch).
    lin = by[("Micro", "MLP/Linear [native]", "hot")]
    assert (lin["Score"], lin["Units"], lin["Batch Size"]) == ("0.0712", "TF/s", 256)
    emb = by[("Micro", "EmbeddingBag [native]", "hot")]
    assert (emb["Score"], emb["Units"], emb["Batch Size"]) == ("12.5", "GB/s", 65536)
    # gemm in TF/s; a GEMM names no batch dimension, its case gives M, N, K.
    gemm = by[("Micro", "GEMM [native]", "hot")]
    assert (gemm["Config"], gemm["Score"], gemm["Units"], gemm["Batch Size"]) == (
        "fixture-set:g",
        "1",
        "TF/s",
        "-",
    )
    # Failed and skipped rows are not tabulated; micro rows come last.
    assert len(es) == 7 and [e["Model"] for e in es][-3:] == ["Micro"] * 3
    notes = proxy.notes(rows)
    assert any(n.startswith("*") for n in notes)
    assert any("fallback emb" in n for n in notes)
    assert any("2 row(s) skipped or failed" in n for n in notes)


def test_interaction_rows_are_micro_rows_in_gbps():
    r = {
        "op": "dot_interaction",
        "impl": "native",
        "status": "ok",
        "mode": "hot",
        "set": "interaction-dlrm",
        "case": "mlperf.b2048",
        "shape": {"B": 2048, "F": 27, "D": 128},
        "gbps": 10.04,
    }
    e = proxy.entry(r)
    assert (e["Model"], e["Implementation"], e["Batch Size"]) == (
        "Micro",
        "Interaction [native]",
        2048,
    )
    assert (e["Score"], e["Units"]) == ("10", "GB/s")


def micro_file(tmp_path, rows, name="micro.json"):
    """MICRO's system with these rows: a results file of one sweep."""
    doc = json.loads(MICRO.read_text())
    doc["results"] = rows
    out = tmp_path / name
    out.write_text(json.dumps(doc))
    return out


def test_micro_lines_of_different_dtypes_stay_apart(tmp_path, capsys):
    """One embedding_bags sweep with --dtype fp32,uint8 (and linear fp32,bf16): a line per
    dtype, fp32 implicit as on model rows, and --against compares each with its own."""
    _, rows, _ = proxy.load([MICRO])
    emb, lin = (next(r for r in rows if r["op"] == op) for op in ("embedding_bags", "linear"))
    rows = [
        emb,
        {**emb, "dtype": "uint8", "gbps": 6.0},
        lin,
        {**lin, "dtype": "bfloat16", "tflops": 0.2},
    ]
    configs = [e["Config"] for e in proxy.entries(rows)]
    assert sorted(configs) == [
        "fixture-set:emb_A.b65536",
        "fixture-set:emb_A.b65536, uint8",
        "fixture-set:mlp_A.1dev.b256",
        "fixture-set:mlp_A.1dev.b256, bf16",
    ]
    lines, notes = proxy.compare(rows, rows)
    assert len(lines) == 4 and not any("repeated" in n for n in notes)
    # a CPU system's line compares with a GPU system's
    gpu = [{**r, "device": "cuda"} for r in rows]
    assert len(proxy.compare(rows, gpu)[0]) == 4
    a = micro_file(tmp_path, rows)
    assert cli.main(["report", str(a), "--against", str(a)]) == 0
    out = capsys.readouterr().out
    assert "emb_A.b65536, uint8" in out and "mlp_A.1dev.b256, bf16" in out
    assert "repeated" not in out


def test_report_of_a_gemm_file_tabulates_it(tmp_path, capsys):
    _, rows, _ = proxy.load([MICRO])
    gemm = micro_file(tmp_path, [r for r in rows if r["op"] == "gemm"])
    assert cli.main(["report", str(gemm)]) == 0
    out = capsys.readouterr().out
    assert "GEMM [native]" in out and "fixture-set:g" in out and "TF/s" in out


def test_noisy_lines_are_counted_in_a_note():
    """The op sweep's summary counts them; the table had taken them in silently."""
    ok = {"status": "ok", "impl": "native", "set": "s", "op": "gemm", "shape": {}}
    rows = [
        {**ok, "case": "a", "tflops": 1.0, "harness": {"noisy": True}},
        {**ok, "case": "b", "tflops": 1.0, "harness": {"noisy": False}},
        {**ok, "case": "c", "tflops": 1.0},
    ]
    assert any(n.startswith("1 line(s) from noisy timings") for n in proxy.notes(rows))
    assert not any("noisy" in n for n in proxy.notes(rows[1:]))


def test_ok_rows_without_a_line_are_counted_in_a_note():
    ok = {"status": "ok", "impl": "native", "set": "s", "case": "c", "shape": {}}
    rows = [{**ok, "op": "softmax", "gbps": 1.0}, {**ok, "op": "linear", "tflops": None}]
    assert proxy.entries(rows) == []
    assert "2 ok row(s) of linear, softmax have no line in this table" in proxy.notes(rows)


def test_refuses_to_mix_machines():
    with pytest.raises(ValueError, match="refusing to mix results from 2 different machines"):
        proxy.load([MODELS, OTHER])
    with pytest.raises(ValueError, match="at least one"):
        proxy.load([])


def test_report_cli_writes_markdown_and_csv(tmp_path, capsys):
    md, cs = tmp_path / "new" / "t.md", tmp_path / "new2" / "t.csv"  # directories made
    rc = cli.main(["report", str(MODELS), str(MICRO), "--markdown", str(md), "--csv", str(cs)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Proxy Workloads results on Test CPU 9000" in out and "800.0*" in out
    assert "MLP/Linear [native]" in out and "EmbeddingBag [native]" in out
    lines = md.read_text().splitlines()
    assert lines[0] == "| " + " | ".join(proxy.COLUMNS) + " |" and len(lines) == 2 + 7
    assert any(
        "| DLRM | optimized (fallback emb) | infer | dlrm-mlperf cap 500000 | 2048 | 800.0* |" in x
        for x in lines
    )
    with open(cs) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and set(rows[0]) == {*proxy.COLUMNS, "Latency target missed"}
    assert {r["Units"] for r in rows} == {"ex/s", "TF/s", "GB/s"}
    # numbers, the latency marker in its own column (the cell read "800.0*")
    missed = [r for r in rows if r["Latency target missed"] == "True"]
    assert [float(r["Score"]) for r in missed] == [800.0]
    assert {r["Latency target missed"] for r in rows if r["Model"] == "Micro"} == {""}
    assert all(float(r["Score"]) > 0 for r in rows)


def test_report_says_which_files_are_incomplete_and_which_lines_repeat(tmp_path, capsys):
    doc = json.loads(MICRO.read_text())
    doc["complete"] = False  # an interrupted sweep's file
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(doc))
    assert cli.main(["report", str(cut), str(MICRO)]) == 0
    out = capsys.readouterr().out
    assert f"{cut}: an interrupted run (incomplete)" in out
    n = len(proxy.entries(doc["results"]))
    assert f"{n} repeated line(s): a case in more than one file or run" in out
    assert cli.main(["report", str(MICRO), "--csv", str(tmp_path)]) == 2
    assert "--csv " + str(tmp_path) + " is a directory" in capsys.readouterr().out


def test_report_cli_refuses_mixed_machines_and_bad_files(tmp_path, capsys):
    assert cli.main(["report", str(MODELS), str(OTHER)]) == 2
    assert "different machines" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other/9"}))
    assert cli.main(["report", str(bad)]) == 2
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert f"is not one of {report.READABLE_SCHEMAS}" in out


def test_report_of_a_fresh_model_run(tmp_path):
    """`model` then `report` on its JSON: the two subcommands agree on the row format."""
    j = tmp_path / "run.json"
    tiny = str(FIX / "tiny-dot.toml")
    assert (
        cli.main(
            [
                "model",
                "dlrm",
                "--config",
                tiny,
                "--mode",
                "infer",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--json",
                str(j),
            ]
        )
        == 0
    )
    _, rows, _ = proxy.load([j])
    es = proxy.entries(rows)
    assert [e["Mode"] for e in es] == ["infer", "infer"] and es[0]["Config"] == "tiny-dot cap 100"
    assert all(e["Units"] == "ex/s" and e["Batch Size"] == 16 for e in es)
    # p99 of 2 steps is the slower step: said, with the steps that would read it
    said = "latency p99 from 2 step(s) is about the slowest step: run at least 100 --steps"
    assert any(said in n for n in proxy.notes(rows))


def test_detail_table_takes_a_nan_difference_and_a_skipped_row():
    # A model whose output was NaN is written with max_abs_diff null (JSON has no NaN);
    # a skipped row built no model, so it has no kernels to name.
    from rich.console import Console

    _, rows, _ = proxy.load([MODELS])
    failed = {**rows[0], "status": "failed", "reason": "output differs from OOTB by nan"}
    failed["check"] = {**(rows[0]["check"] or {}), "ok": False, "max_abs_diff": None}
    skipped = {**rows[0], "status": "skipped", "reason": "needs ~9 GiB", "emb_impl": None}
    skipped["dense_impl"] = None
    con = Console(width=250, record=True)
    con.print(proxy.detail_table([failed, skipped]))
    out = con.export_text()
    assert "FAIL " in out and "emb=None" not in out and "skipped: needs ~9 GiB" in out


def test_few_steps_note_takes_every_percentile():
    _, rows, _ = proxy.load([MODELS])
    base = next(x for x in rows if x["status"] == "ok")

    def r(pct, steps):
        return {**base, "latency_met": True, "latency_percentile": pct, "steps": steps}

    notes = proxy.notes([r(100, 2), r(95, 19), r(95, 20)])  # p100 divided by zero before
    assert [n for n in notes if n.startswith("latency")] == [
        "latency p95 from 19 step(s) is about the slowest step: run at least 20 --steps to "
        "read the percentile"
    ]


def test_entry_names_kernels_that_stood_in():
    _, rows, _ = proxy.load([MODELS])
    r = dict(next(r for r in rows if r["impl"] == "optimized" and r["mode"] == "train"))
    assert proxy.entry(r)["Implementation"] == "optimized"
    r["dense_impl"] = "ootb"
    assert proxy.entry(r)["Implementation"] == "optimized (dense ootb)"
    # The row cap is named only where it cut a table.
    assert proxy.entry({**r, "tables_capped": 0})["Config"] == "dlrm-mlperf"
    assert proxy.entry({**r, "tables_capped": 3})["Config"] == "dlrm-mlperf cap 500000"
    r["fallback"] = "torch index_add_"
    assert proxy.entry(r)["Implementation"] == "optimized (fallback emb, dense ootb)"


def faster_copy(tmp_path, src, factor, name):
    """`src` as if measured on a machine `factor` times faster (scores up, times down)."""
    doc = json.loads(src.read_text())
    doc["system"]["cpu"]["model"] = "Faster CPU"
    for r in doc["results"]:
        for k in ("score", "tflops", "gbps"):
            if r.get(k) is not None:
                r[k] *= factor
    out = tmp_path / name
    out.write_text(json.dumps(doc))
    return out


def test_compare_two_systems_matches_lines_and_gives_b_over_a(tmp_path, capsys):
    fast_models = faster_copy(tmp_path, MODELS, 2.0, "m.json")
    fast_micro = faster_copy(tmp_path, MICRO, 4.0, "u.json")
    md, cs = tmp_path / "c.md", tmp_path / "c.csv"
    argv = ["report", str(MODELS), str(MICRO), "--against", str(fast_models), str(fast_micro)]
    assert cli.main([*argv, "--markdown", str(md), "--csv", str(cs)]) == 0
    out = capsys.readouterr().out
    assert "A: Test CPU 9000" in out and "B: Faster CPU" in out
    assert "DLRM: geomean B/A 2.00x over 4 line(s)" in out
    assert "Micro EmbeddingBag [native]: geomean B/A 4.00x over 1 line(s)" in out
    lines = md.read_text().splitlines()
    assert lines[0] == "| " + " | ".join(proxy.COMPARE_COLUMNS) + " |" and len(lines) == 2 + 7
    assert (
        "| DLRM | ootb | train | dlrm-mlperf cap 500000 | 2048 | ex/s | 400.0 | 800.0 | 2.00x |"
        in lines
    )
    with open(cs) as f:
        rows = list(csv.DictReader(f))
    assert {float(r["B/A"]) for r in rows if r["Model"] == "Micro"} == {4.0}  # a number
    # the marker on each side, in its own column (800.0* on A, its 2x copy on B)
    assert [(r["A latency target missed"], r["B latency target missed"]) for r in rows
            if r["A"] == "800.0"] == [("True", "True")]  # fmt: skip
    assert all(float(r["B"]) > float(r["A"]) for r in rows)


def test_compare_keeps_only_lines_both_sides_have():
    a = json.loads(MODELS.read_text())["results"]
    b = json.loads(OTHER.read_text())["results"]
    lines, notes = proxy.compare(a, b)
    assert [(x["Implementation"], x["Mode"], x["B/A"]) for x in lines] == [
        ("ootb", "infer", "0.005x")
    ]
    assert "3 line(s) only on side A are not compared" in notes
    # Repeated lines (e.g. perf_bars --repeat) compare the first and say so.
    lines, notes = proxy.compare(a + a, b)
    assert len(lines) == 1 and "4 repeated line(s) on side A: the first is compared" in notes


@pytest.mark.parametrize(
    "set_name, case, tables, rows",
    [
        # A --shape case's name leaves out an embedding's rows: a 100-row and a 4M-row
        # table were compared as one line (B/A 269x).
        ("custom", "T=2,D=64,B=256,L=1,uniform", 2, (100, 4_000_000)),
        # An edited shape file keeps its set and case names (B/A 0.20x).
        ("my-emb", "T8xD64 B2048 L20", 8, (1000, 10_000_000)),
    ],
)
def test_compare_matches_micro_cases_on_their_whole_shape(set_name, case, tables, rows):
    def row(n, gbps):
        shape = {"tables": tables, "rows": n, "dim": 64, "batch": 256, "pooling": 1}
        return {"op": "embedding_bags", "impl": "native", "status": "ok", "mode": "hot",
                "set": set_name, "case": case, "shape": shape, "gbps": gbps}  # fmt: skip

    small, large = rows
    lines, notes = proxy.compare([row(small, 269.0)], [row(large, 1.0)])
    assert lines == [] and "1 line(s) only on side A are not compared" in notes
    lines, _ = proxy.compare([row(small, 2.0)], [row(small, 3.0)])
    assert [x["B/A"] for x in lines] == ["1.50x"]


def test_compare_matches_a_file_written_before_a_shape_field_was_added():
    # gemm gained col_major (default false): a file written before has no such key, and
    # its lines are the same cases.
    def row(tflops, **extra):
        shape = {"M": 128, "N": 512, "K": 13, "a_t": False, "b_t": True, **extra}
        return {"op": "gemm", "impl": "native", "status": "ok", "mode": "hot", "set": "dlrm",
                "case": "kaggle.bot0", "dtype": "float32", "shape": shape,
                "tflops": tflops}  # fmt: skip

    lines, _ = proxy.compare([row(0.1)], [row(0.2, col_major=False)])
    assert [x["B/A"] for x in lines] == ["2.00x"]
    lines, _ = proxy.compare([row(0.1)], [row(0.2, col_major=True)])
    assert lines == []


def test_a_side_holding_two_devices_names_them():
    """One GPU machine's cpu and cuda rows of a case: --against had compared its cuda row
    with the other side's cpu row (B/A 0.0012x). Single-device sides stay untagged, so a
    CPU system still compares with a GPU system."""

    def row(device, tflops):
        return {"op": "gemm", "impl": "native", "status": "ok", "mode": "hot", "set": "dlrm",
                "case": "kaggle.bot0", "device": device, "dtype": "float32",
                "shape": {"M": 128}, "tflops": tflops}  # fmt: skip

    a = [row("cuda", 50.0), row("cpu", 0.05)]
    configs = [e["Config"] for e in proxy.entries(a)]
    assert configs == ["dlrm:kaggle.bot0, cpu", "dlrm:kaggle.bot0, cuda"]
    lines, notes = proxy.compare(a, [row("cpu", 0.06)])
    assert [(x["Config"], x["B/A"]) for x in lines] == [("dlrm:kaggle.bot0, cpu", "1.20x")]
    assert "1 line(s) only on side A are not compared" in notes
    lines, _ = proxy.compare([row("cpu", 0.05)], [row("cuda", 50.0)])
    assert [(x["Config"], x["B/A"]) for x in lines] == [("dlrm:kaggle.bot0", "1000x")]


def test_compare_refuses_a_side_that_mixes_machines(capsys):
    assert cli.main(["report", str(MODELS), "--against", str(MODELS), str(OTHER)]) == 2
    assert "different machines" in capsys.readouterr().out


def test_against_does_not_match_another_version_or_latency_target_of_a_config():
    # The table shows the config's name only: version 1 and 2 of it, or the same config
    # under another latency target, were matched and given a B/A ratio.
    base = {
        "status": "ok", "kind": "model", "model": "dlrm", "impl": "ootb", "mode": "infer",
        "config": "c", "config_version": 1, "tables_capped": 0, "row_cap": 10,
        "batch_size": 8, "score": 100.0, "units": "ex/s", "latency_met": True,
        "latency_target_s": 0.06, "latency_percentile": 99,
    }  # fmt: skip
    for change in ({"config_version": 2}, {"latency_target_s": 0.01}):
        lines, notes = proxy.compare([base], [{**base, **change}])
        assert lines == [] and any("only" in n for n in notes)
    lines, _ = proxy.compare([base], [{**base, "score": 200.0}])
    assert len(lines) == 1 and lines[0]["B/A"] == "2.00x"

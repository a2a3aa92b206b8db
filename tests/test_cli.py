"""End to end through the CLI: JSON schema, CSV/Markdown, list, bad input."""

import contextlib
import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pydeepbench import cli, proxy, registry, report, shapes

FAST = ["--max-time", "0.05", "--min-time", "0.0", "--min-samples", "3"]


@contextlib.contextmanager
def extra_impl(name, fn, devices=("cpu",), dtypes=(torch.float32,)):
    """fn registered as gemm impl `name` for the block's length."""
    registry.register_impl("gemm", name, devices=devices, dtypes=dtypes)(fn)
    try:
        yield
    finally:
        registry._IMPLS["gemm"].pop(name)


def run(args):
    return cli.main(args)


def test_gemm_sweep_writes_schema_json_csv_markdown(tmp_path, capsys):
    j, c, m = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.md"
    rc = run(
        [
            "gemm",
            "--shapes",
            "dlrm",
            "--limit",
            "2",
            "--dtype",
            "fp32,bf16",
            *FAST,
            "--json",
            str(j),
            "--csv",
            str(c),
            "--markdown",
            str(m),
            "--no-roofline",
        ]
    )
    assert rc == 0
    doc = json.loads(j.read_text())
    assert doc["schema"] == report.SCHEMA and doc["complete"] is True
    assert {"cpu", "versions", "git_commit", "os"} <= set(doc["system"])
    assert doc["system"]["versions"]["torch"]
    rows = doc["results"]
    assert len(rows) == 2 * 2 * len(registry.impls("gemm"))
    for r in rows:
        assert set(r) == set(report.ROW_FIELDS)
        assert r["set"] == "dlrm" and r["mode"] == "hot" and r["device"] == "cpu"
        impl = registry.get_impl("gemm", r["impl"])
        dtype = getattr(torch, r["dtype"])
        if impl.why_not("cpu", dtype) is None and impl.supports(r["shape"], dtype, "cpu") is None:
            assert r["status"] == "ok", r["reason"]
            assert r["check"]["ok"] is True
            assert set(r["time_s"]) >= {"median", "min", "mean", "stdev", "iqr", "n"}
            assert r["time_s"]["n"] == len(r["samples_s"]) >= 1
            # fewer samples only when out of time, e.g. the Triton interpreter
            if r["harness"]["stop_reason"] != "max_time_below_min_samples":
                assert r["time_s"]["n"] >= 3
            assert r["flops"] == 2 * r["shape"]["M"] * r["shape"]["N"] * r["shape"]["K"]
            assert r["tflops"] == pytest.approx(r["flops"] / r["time_s"]["median"] / 1e12)
        else:
            assert r["status"] == "skipped" and r["reason"]
    out = capsys.readouterr().out
    assert "geomean" in out and "kaggle.bot0" in out
    with c.open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert m.read_text().startswith("| case | impl |")


def test_single_shape_with_roofline(tmp_path):
    j = tmp_path / "r.json"
    assert (
        run(
            [
                "gemm",
                "--shape",
                "M=64,N=64,K=64",
                "--impl",
                "ootb,native",
                *FAST,
                "--mode",
                "cold",
                "--json",
                str(j),
            ]
        )
        == 0
    )
    doc = json.loads(j.read_text())
    assert doc["peaks"]["flops"]["float32"] > 0 and doc["peaks"]["bandwidth"] > 0
    for r in doc["results"]:
        assert r["mode"] == "cold"
        assert r["pct_peak_flops"] > 0 and r["pct_peak_bw"] > 0
        assert r["bound"] in ("compute", "memory")
        assert r["attainable_flops"] <= r["peak_flops"]
        assert r["pct_peak_gather"] is None  # gemm streams; only gathering ops get it
    native = next(r for r in doc["results"] if r["impl"] == "native")
    assert native["speedup_vs_ootb"] > 0


def test_embedding_rows_are_placed_against_the_gather_roof(tmp_path, capsys):
    j, c = tmp_path / "r.json", tmp_path / "r.csv"
    shape = "tables=1,rows=5000,dim=64,batch=256,pooling=4"
    argv = ["embedding_bags", "--shape", shape, "--impl", "ootb,native", *FAST]
    assert run([*argv, "--json", str(j), "--csv", str(c)]) == 0
    doc = report.load_results(j)
    gather = doc["peaks"]["gather_bandwidth"]
    for r in doc["results"]:
        assert r["pct_peak_gather"] == pytest.approx(100 * r["gbps"] * 1e9 / gather)
    with c.open() as f:
        assert all(float(row["pct_peak_gather"]) > 0 for row in csv.DictReader(f))
    assert "%gather" in capsys.readouterr().out


def test_uint8_rows_run_beside_fp32(tmp_path):
    """--dtype uint8: 8-bit rowwise rows, checked and timed like the float ones; the bytes
    count each row's codes with its scale and bias."""
    j = tmp_path / "r.json"
    shape = "tables=2,rows=300,dim=16,batch=32,pooling=3,weighted=true"
    argv = ["embedding_bags", "--shape", shape, "--impl", "ootb,native", "--dtype", "fp32,uint8"]
    assert run([*argv, *FAST, "--json", str(j)]) == 0
    rows = {(r["impl"], r["dtype"]): r for r in report.load_results(j)["results"]}
    assert set(rows) == {(i, d) for i in ("ootb", "native") for d in ("float32", "uint8")}
    assert all(r["status"] == "ok" and r["check"]["ok"] for r in rows.values())
    n = 32 * 3 * 2
    assert (
        rows["native", "uint8"]["bytes"] == rows["native", "float32"]["bytes"] - n * 16 * 4 + n * 24
    )


def test_results_of_the_previous_schema_still_load(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": "pydeepbench.results/1", "results": []}))
    assert report.load_results(old)["results"] == []
    old.write_text(json.dumps({"schema": "pydeepbench.results/0", "results": []}))
    with pytest.raises(ValueError, match="results/0"):
        report.load_results(old)


@pytest.mark.parametrize(
    "doc, match",
    [
        ({"system": None, "results": []}, "needs a 'system' object"),
        ({"system": {}, "results": []}, "its 'system' lacks the CPU and memory fields"),
        ({"results": [{"op": "gemm", "impl": "native"}]}, "results.0. lacks set"),
        ({"results": [{"kind": "model", "status": "ok"}]}, "lacks model"),
        ({"results": [5]}, r"results\[0\] is not an object"),
        (
            {
                "results": [
                    dict(
                        kind="model",
                        model="dlrm",
                        impl="ootb",
                        mode="train",
                        config="c",
                        batch_size=1,
                        status="ok",
                        units="ex/s",
                    )
                ]
            },
            "lacks score",
        ),  # fmt: skip
    ],
)
def test_malformed_results_files_are_named(tmp_path, doc, match):
    """A file missing the system or a row's fields ended `report` in a KeyError."""
    fixture = Path(__file__).parent / "fixtures" / "results-micro.json"
    doc = {"system": json.loads(fixture.read_text())["system"], **doc}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": report.SCHEMA, **doc}))
    with pytest.raises(ValueError, match=match):
        proxy.load([path])


def test_cuda_rows_with_telemetry_fit_the_schema(monkeypatch):
    """A CUDA row carries the GPU's NVML readings; the schema refused the field, so every
    CUDA sweep ended at its first timed row."""
    from pydeepbench import harness, runner, system

    monkeypatch.setattr(system, "gpu_telemetry", lambda index: {"sm_clock_mhz": 1980})
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    hcfg = harness.HarnessConfig(max_time_s=0.01, min_time_s=0)
    cfg = runner.SweepConfig(
        op="gemm", impls=["ootb"], dtypes=[torch.float32], device="cuda", shape_set="custom",
        harness=hcfg,
    )  # fmt: skip
    m = harness.measure(lambda: None, hcfg)
    base = dict(op="gemm", impl="ootb", device="cuda", dtype="float32", set="custom")
    row = dict(base, case="c", shape={"M": 1, "N": 1, "K": 1}, seed=0, mode="hot")
    row = runner._timed_row(row, m, 2.0, 12.0, torch.float32, None, cfg, False)
    assert report.normalize(row)["telemetry"] == {"sm_clock_mhz": 1980}


def test_list_shows_impls_and_reasons(capsys):
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    assert "gemm" in out and "native" in out and "dlrm" in out
    # Every CUDA entry states its availability; without a device, the reason says so.
    cuda = [part for line in out.splitlines() for part in line.split("; ") if "cuda [" in part]
    assert cuda and all("]: available" in c or "]: unavailable: " in c for c in cuda)
    if not torch.cuda.is_available():
        assert all("unavailable: no CUDA device here" in c for c in cuda)


@pytest.mark.parametrize(
    "args, match",
    [
        (["gemm", "--shapes", "no-such-set"], "unknown shape set"),
        (["gemm", "--shape", "M=1,N=1"], "needs field 'K'"),
        (["gemm", "--shape", "M=1,N=1,K=1", "--impl", "magic"], "unknown implementation"),
        (["gemm", "--shape", "M=1,N=1,K=1", "--dtype", "fp8"], "unknown dtype"),
        (["gemm", "--shape", "M=1,N=1,K=1", "--dtype", "uint8"], "no implementation of gemm"),
        (["dot_interaction", "--shapes", "interaction-dlrm", "--dtype", "bf16"], "--dtype bf"),
        (["gemm", "--shapes", "dlrm", "--limit", "0"], "--limit must be >= 1"),
        (["gemm", "--shapes", "dlrm", "--limit", "-1"], "--limit must be >= 1"),
        (
            ["gemm", "--shapes", "dlrm", "--max-time", "-1"],
            "--max-time (max_time_s) must be > 0, got -1",
        ),
        (
            ["gemm", "--shapes", "dlrm", "--min-samples", "0"],
            "--min-samples (min_samples) must be >= 1",
        ),
        (["gemm", "--shapes", "/no/such/set.toml"], "does not exist"),
        # lists that would run nothing, or something twice
        (["gemm", "--shape", "M=8,N=8,K=8", "--dtype", ","], "--dtype: no names in ','"),
        (["gemm", "--shape", "M=8,N=8,K=8", "--impl", ","], "--impl: no names in ','"),
        (["gemm", "--shape", "M=8,N=8,K=8", "--impl", "native,native"], "native given more"),
        (["gemm", "--shape", "M=8,N=8,K=8", "--dtype", "fp32,float32"], "more than once"),
        (["gemm", "--shape", "M=8,N=8,K=8,M=16"], "field 'M' is given more than once"),
        (
            ["gemm", "--shapes", "dlrm", "--min-time", "3", "--max-time", "0.1"],
            "--min-time (min_time_s) must be <= --max-time",
        ),
        (["gemm", "--shapes", "embedding-nope"], "built-in sets for gemm: deepbench-infer"),
    ],
)
def test_bad_arguments_exit_2_with_message(args, match, capsys):
    assert run(args + ["--no-roofline"]) == 2
    assert match in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--impl", "--mode"])
def test_model_refuses_an_empty_list(flag, capsys):
    assert cli.main(["model", "dlrm", "--config", "dlrm-kaggle", flag, ","]) == 2
    assert f"{flag}: no names in ','" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--json", "--csv", "--markdown"])
def test_an_output_path_that_is_a_directory_is_refused_before_the_sweep(tmp_path, flag, capsys):
    # --json left a stray .partial file; --csv and --markdown failed after the sweep.
    args = ["gemm", "--shape", "M=8,N=8,K=8", *FAST, flag, str(tmp_path)]
    if flag != "--json":
        args += ["--json", str(tmp_path / "r.json")]
    assert run(args) == 2
    assert f"{flag} {tmp_path} is a directory" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_ctrl_c_keeps_the_cases_done_and_says_where(tmp_path, monkeypatch, capsys):
    from pydeepbench import runner

    real, calls = runner.run_case, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(runner, "run_case", interrupted)
    j = tmp_path / "r.json"
    assert run(["gemm", "--shapes", "dlrm", "--impl", "native", *FAST, "--json", str(j)]) == 130
    assert f"interrupted: the cases done are in {j} (incomplete)" in capsys.readouterr().out
    doc = json.loads(j.read_text())
    assert doc["complete"] is False and len(doc["results"]) == 1


def test_roofline_says_whether_it_measured_or_read_the_cache_and_where(
    tmp_path, capsys, monkeypatch
):
    from pydeepbench import roofline, system

    fake = roofline.Peaks("cpu", {"float32": 1e11}, {"float32": "test"}, 1e10, "test", {})
    monkeypatch.setenv("PYDEEPBENCH_CACHE", str(tmp_path))  # not the suite's cache
    monkeypatch.setattr(system, "busy_warning", lambda s, cpus=None: "the machine is busy (test)")
    measured = []
    monkeypatch.setattr(roofline, "measure_cpu", lambda t: measured.append(t) or fake)
    assert run(["roofline", "--refresh", "--max-time", "0.05"]) == 0
    out = capsys.readouterr().out
    # Busy: measured and used, but a later run must not be placed under this roof.
    assert "warning: the machine is busy (test)" in out
    assert "measured now, not cached (the machine was busy" in out
    assert not roofline.cache_path("cpu").exists()
    monkeypatch.setattr(system, "busy_warning", lambda s, cpus=None: None)
    assert run(["roofline"]) == 0
    assert "measured now: " in capsys.readouterr().out and len(measured) == 2
    assert run(["roofline"]) == 0
    out = capsys.readouterr().out
    assert "cached, measured " in out and "PYDEEPBENCH_CACHE" in out and "warning" not in out
    # A stale cache (an older schema) is measured again, and said so.
    roofline.cache_path("cpu").write_text('{"schema": "pydeepbench.roofline/1"}')
    assert run(["roofline"]) == 0
    assert "measured now: " in capsys.readouterr().out and len(measured) == 3


def test_roofline_refuses_a_probe_time_that_would_cache_a_bogus_peak(capsys):
    assert run(["roofline", "--refresh", "--max-time", "0"]) == 2
    assert "--max-time (max_time_s) must be > 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "no such results file"),
        ("[]", "not a"),
        ('{"schema": ', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("dir", "Is a directory"),
    ],
)
def test_unreadable_results_files_exit_2_naming_the_file(tmp_path, content, match, capsys):
    path = tmp_path / "r.json"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    for cmd in (["report", str(path)], ["plot", str(path), "--out", str(tmp_path / "x.png")]):
        assert run(cmd) == 2
        out = capsys.readouterr().out
        assert match in out and str(path) in out.replace("\n", "")


def _rendered(renderable, width):
    from rich.console import Console

    con = Console(width=width, record=True, highlight=False)
    con.print(renderable)
    return con.export_text()


@pytest.mark.parametrize("width", [49, 60, 78, 80, 120, 170])
def test_table_keeps_the_whole_reason_and_fits_the_terminal(width):
    """A reason in a cell was wrapped at the column's width and then cut when the table was
    wider than the console; it is now a line under the table, and a narrow console gets
    fewer columns instead of cut ones."""
    reason = "native supports float32, bfloat16 on cpu, not uint8 [see --help]"
    rows = [
        {
            "case": "M=8,N=8,K=8,NN",
            "impl": "native",
            "dtype": "uint8",
            "status": "skipped",
            "reason": reason,
        },
        {
            "case": "M=8,N=8,K=8,NN",
            "impl": "ootb",
            "dtype": "float32",
            "status": "ok",
            "time_s": {"median": 1e-6},
            "tflops": 1e-3,
            "speedup_vs_ootb": 1.0,
            "check": {"ok": True, "max_abs_err": 0.0},
            "harness": {"noisy": True},
        },
    ]
    text = _rendered(report.table(rows, True, False, width), width)
    assert " ".join(text.split()).count(" ".join(reason.split())) == 1
    assert max(map(len, text.splitlines())) <= width
    header = text.splitlines()[0]
    kept = [h for h in report.HEADERS if h in header]
    assert {"case", "impl", "median time", "status"} <= set(kept)
    if width >= 80:
        assert {"dtype", "TF/s", "vs ootb"} <= set(kept)
    assert "%gather" not in kept and "ok (noisy)" in text
    if width >= 170:  # all columns at their fixed widths, lined up across cases
        assert kept == [h for h in report.HEADERS if h != "%gather"]
        assert header.index("impl") == report.WIDTHS["case"] + 2
        assert "%gather" in _rendered(report.table(rows, True, True, width), width)
    md = report.markdown(rows, False)
    assert reason in md and "%gather" not in md.splitlines()[0]


def test_markdown_cells_keep_a_multi_line_reason_on_its_row():
    row = {"case": "c", "impl": "triton", "dtype": "float32", "status": "failed",
           "reason": "error: CompilationError: at 1:2\nbad | thing\r\nthird line"}  # fmt: skip
    md = report.markdown([row], False).splitlines()
    assert len(md) == 3 and md[2].count(" | ") == md[0].count(" | ")
    assert "at 1:2 bad \\| thing third line" in md[2]


@pytest.mark.parametrize(
    "seconds, text",
    [(999.7e-6, "1 ms"), (0.9996, "1 s"), (999.6e-9, "1 us"), (1.5e-3, "1.5 ms"), (2e-9, "2 ns")],
)
def test_times_take_the_unit_they_round_into(seconds, text):
    assert report._fmt_time(seconds) == text  # 999.7e-6 s had read "1e+03 us"


def test_ratios_that_round_to_100_lose_their_decimals():
    assert report.ratio_text(99.996) == "100x" and report.ratio_text(99.99) == "99.99x"


def test_list_names_the_model_configs_and_whole_first_paragraphs(capsys):
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    assert "configs:" in out and "dlrm-kaggle" in out
    flat = " ".join(out.split())
    long = 0
    for op in registry.ops():
        for impl in registry.impls(op).values():
            lines = impl.doc.split("\n\n")[0].splitlines()
            long += len(lines) > 1  # a first line alone would cut these mid-sentence
            assert " ".join(" ".join(lines).split()) in flat
    assert long > 0


def test_the_readme_command_runs_native_from_the_checkout_root(tmp_path):
    """`python -m pydeepbench` in the clone's root imports the source tree ahead of the
    installed package; the native impl must still find the installed _C (it was skipped
    as 'not available')."""
    pytest.importorskip("pydeepbench._C")
    root = Path(__file__).resolve().parents[1]
    j = tmp_path / "r.json"
    args = ["gemm", "--shape", "M=8,N=8,K=8", "--impl", "native", *FAST, "--no-roofline"]
    subprocess.run(
        [sys.executable, "-m", "pydeepbench", *args, "--json", str(j)], cwd=root, check=True
    )
    (row,) = json.loads(j.read_text())["results"]
    assert row["status"] == "ok", row["reason"]


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "pydeepbench", "list"], capture_output=True, text=True, check=True
    )
    assert "gemm" in out.stdout


@pytest.mark.parametrize(
    "wrong, err",
    [
        (lambda a, b: (a.bfloat16() @ b.bfloat16()).float(), float),  # rounded inputs
        (lambda a, b: torch.full((a.shape[0], b.shape[1]), float("nan")), None),
        (lambda a, b: (a @ b)[:-1], None),  # wrong shape
    ],
    ids=["bf16cast", "nan", "shape"],
)
def test_failed_impl_is_recorded_not_hidden(tmp_path, wrong, err, capsys):
    # A NaN output or a wrong shape has an infinite error, which JSON cannot hold: the
    # row is still written (with a null error) and the sweep goes on to the next impl.
    with extra_impl("wrong", wrong):
        j = tmp_path / "r.json"
        args = ["gemm", "--shape", "M=32,N=32,K=512", "--impl", "ootb,wrong,native", *FAST]
        assert run([*args, "--json", str(j), "--no-roofline"]) == 1  # a failed check fails the run
        rows = {r["impl"]: r for r in json.loads(j.read_text())["results"]}
        assert rows["wrong"]["status"] == "failed"
        assert "wrong result" in rows["wrong"]["reason"]
        chk = rows["wrong"]["check"]
        assert chk["ok"] is False and rows["wrong"]["time_s"] is None
        assert type(chk["max_abs_err"]) is (float if err else type(None))
        out = capsys.readouterr().out  # the live table: FAIL, with a figure only if finite
        assert "FAIL" in out and "FAIL inf" not in out and "FAIL nan" not in out
        assert rows["ootb"]["status"] == rows["native"]["status"] == "ok"


def _harness_info(tmp_path, *extra):
    j = tmp_path / "r.json"
    args = ["gemm", "--shape", "M=64,N=64,K=64", "--impl", "ootb,native", *FAST]
    assert run([*args, *extra, "--json", str(j), "--no-roofline"]) == 0
    rows = json.loads(j.read_text())["results"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    return {r["impl"]: r["harness"] for r in rows}


def test_impls_are_timed_side_by_side_unless_sequential(tmp_path):
    h = _harness_info(tmp_path)
    assert h["ootb"]["interleaved"] and h["native"]["interleaved"]
    assert h["ootb"]["stop_reason"] == h["native"]["stop_reason"]  # one stopping decision
    h = _harness_info(tmp_path, "--sequential")
    assert not h["ootb"]["interleaved"] and not h["native"]["interleaved"]


def test_side_by_side_falls_back_when_all_inputs_do_not_fit(tmp_path, monkeypatch):
    from pydeepbench import runner

    need = registry.get_op("gemm").footprint_bytes(
        {"M": 64, "N": 64, "K": 64, "a_t": False, "b_t": False}, torch.float32
    )
    # room for one impl's inputs, not for two at once
    have = 1.5 * need / runner.system.MEMORY_FRACTION
    monkeypatch.setattr(runner.system, "available_memory_bytes", lambda device: have)
    h = _harness_info(tmp_path)
    assert not h["ootb"]["interleaved"] and not h["native"]["interleaved"]


def test_a_failing_impl_leaves_the_others_side_by_side(tmp_path):
    def boom(a, b):
        raise RuntimeError("kernel exploded")

    with extra_impl("boom", boom):
        j = tmp_path / "r.json"
        args = ["gemm", "--shape", "M=16,N=16,K=16", "--impl", "ootb,boom,native", *FAST]
        assert run([*args, "--json", str(j), "--no-roofline"]) == 1
        rows = {r["impl"]: r for r in json.loads(j.read_text())["results"]}
        assert rows["boom"]["status"] == "failed" and "kernel exploded" in rows["boom"]["reason"]
        assert rows["ootb"]["status"] == rows["native"]["status"] == "ok"
        assert rows["ootb"]["harness"]["interleaved"] and rows["native"]["harness"]["interleaved"]


def test_summary_counts_noisy_rows():
    ok = {"status": "ok", "impl": "native", "dtype": "float32", "speedup_vs_ootb": 2.0}
    rows = [{**ok, "harness": {"noisy": True}}, {**ok, "harness": {"noisy": False}}]
    lines = report.summary(rows)
    assert "native float32: geomean 2.00x vs ootb over 2 cases" in lines
    assert any(line.startswith("1 ok row(s) noisy") for line in lines)


def test_a_sweeps_repeated_skip_reason_prints_once(capsys):
    """The same skip under every case (Triton not here, say) is said once per sweep; a
    different reason is said again."""
    said = set()
    skip = {"impl": "triton", "dtype": "float32", "status": "skipped", "reason": "no Triton"}
    for case, reason in (("a", "no Triton"), ("b", "no Triton"), ("c", "too big")):
        row = {**skip, "case": case, "reason": reason}
        text = _rendered(report.table([row], False, False, 170, said), 170)
        assert (f"{case} triton float32: skipped: {reason}" in text) == (case != "b")
    assert len(said) == 2


EMB = ["embedding_bags", "--shape", "tables=1,rows=500,dim=8,batch=16,pooling=2"]


def _emb_sweep_with_native(tmp_path, fn, sequential):
    """An ootb,native embedding sweep with native's function replaced by fn(real_fn, **kw):
    the exit status and the rows by impl."""
    real = registry.get_impl("embedding_bags", "native")
    fake = dataclasses.replace(real, fn=lambda **kw: fn(real.fn, **kw))
    registry._IMPLS["embedding_bags"]["native"] = fake
    try:
        j = tmp_path / "r.json"
        extra = ["--sequential"] if sequential else []
        rc = run([*EMB, "--impl", "ootb,native", *FAST, *extra, "--json", str(j)])
        return rc, {r["impl"]: r for r in json.loads(j.read_text())["results"]}
    finally:
        registry._IMPLS["embedding_bags"]["native"] = real


@pytest.mark.parametrize("sequential", [False, True])
def test_an_impl_wrong_on_a_later_input_variant_fails_the_gate(tmp_path, sequential):
    # The gate checked the first index batch only, and timing cycles through all 8: an
    # impl that repeated its first output passed and was timed "faster".
    first = []

    def stale(real_fn, **kw):
        if not first:
            first.append(real_fn(**kw))
        return first[0]

    rc, rows = _emb_sweep_with_native(tmp_path, stale, sequential)
    assert rc == 1
    assert rows["native"]["status"] == "failed" and rows["native"]["time_s"] is None
    assert "wrong result (input variant 1)" in rows["native"]["reason"]
    assert rows["ootb"]["status"] == "ok" and rows["ootb"]["check"]["variants"] == 8


@pytest.mark.parametrize("sequential", [False, True])
def test_an_impl_that_raises_while_timed_fails_its_row_and_the_sweep_goes_on(tmp_path, sequential):
    # It passed the gate, then raised on a later call: the exception ended the sweep
    # (a traceback, and the other impls' rows and the later cases lost).
    calls = []

    def flaky(real_fn, **kw):
        calls.append(1)
        if len(calls) > 12:  # past the gate's 8 calls, in warm-up
            raise RuntimeError("device lost")
        return real_fn(**kw)

    rc, rows = _emb_sweep_with_native(tmp_path, flaky, sequential)
    assert rc == 1
    assert rows["native"]["status"] == "failed"
    assert rows["native"]["reason"] == "error while timed: RuntimeError: device lost"
    assert rows["ootb"]["status"] == "ok" and rows["ootb"]["time_s"]["n"] >= 3


def test_an_impl_returning_no_tensor_fails_its_row(tmp_path):
    # The gate's comparison sat outside the error handling: an AttributeError ended the sweep.
    with extra_impl("none", lambda a, b: None):
        j = tmp_path / "r.json"
        args = ["gemm", "--shape", "M=8,N=8,K=8", "--impl", "ootb,none", *FAST]
        assert run([*args, "--json", str(j), "--no-roofline"]) == 1
        rows = {r["impl"]: r for r in json.loads(j.read_text())["results"]}
        assert rows["none"]["status"] == "failed" and "error: " in rows["none"]["reason"]
        assert rows["ootb"]["status"] == "ok"


@pytest.mark.parametrize(
    "var, value", [("PYDEEPBENCH_ISA", "avx3"), ("PYDEEPBENCH_HOST_POOL_MB", "lots")]
)
def test_a_bad_setting_is_refused_not_skipped(monkeypatch, capsys, var, value):
    # Every native row was skipped for it and the run exited 0.
    monkeypatch.setenv(var, value)
    assert run(["gemm", "--shape", "M=8,N=8,K=8", *FAST]) == 2
    assert f"error: {var}={value!r} is not" in capsys.readouterr().out


def _tf32_products(a, b):
    """TF32 on the CPU: operands truncated to 10-bit mantissas (what the tensor cores
    read), fp32 products and sums."""

    def cut(t):
        return (t.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)

    assert a.dtype == b.dtype == torch.float32  # a TF32 row's tensors are fp32
    return cut(a) @ cut(b)


def test_tf32_rows_hold_fp32_tensors_and_meet_tf32_tolerance_and_peak():
    """`--dtype tf32` rows: fp32 inputs, TF32's gate and TF32's peak. No GPU here, so an
    emulated TF32 impl registered on cpu stands in for the CUDA ones."""
    from pydeepbench import harness, roofline, runner
    from pydeepbench.ops._spec import TF32
    from pydeepbench.shapes import parse_shape

    with extra_impl("emul", _tf32_products, dtypes=(torch.float32, TF32)):
        hcfg = harness.HarnessConfig(max_time_s=0.02, min_time_s=0, min_samples=3)
        pk = roofline.Peaks(
            "cpu", {"float32": 1e11, "tf32": 8e11}, {"float32": "fp32", "tf32": "sheet"}, 1e10,
            "bw", {},
        )  # fmt: skip
        case = parse_shape("M=64,N=64,K=4096", "gemm")
        rows = {}
        for dtype in (TF32, torch.float32):
            cfg = runner.SweepConfig(
                op="gemm", impls=["ootb", "emul"], dtypes=[dtype], device="cpu",
                shape_set="custom", harness=hcfg,
            )  # fmt: skip
            rows[dtype] = {r["impl"]: r for r in runner.run_case(cfg, case, dtype, pk, None)}
        tf32 = rows[TF32]
        assert tf32["ootb"]["status"] == "skipped" and "not tf32" in tf32["ootb"]["reason"]
        assert tf32["emul"]["status"] == "ok" and tf32["emul"]["dtype"] == "tf32"
        assert tf32["emul"]["check"]["atol"] == 5e-3
        assert tf32["emul"]["check"]["max_abs_err"] > 1e-4  # really TF32-sized errors
        assert tf32["emul"]["peak_flops"] == 8e11
        # The same products fail an fp32 row's gate.
        assert rows[torch.float32]["emul"]["status"] == "failed"


def test_matmul_precision_sets_torchs_switch_per_row_and_restores_it():
    from pydeepbench.ops._spec import TF32, matmul_precision, tf32_matmul

    switch = torch.backends.cuda.matmul
    before = switch.fp32_precision
    try:
        switch.fp32_precision = "tf32"  # set outside, e.g. by the user's environment
        with matmul_precision("cuda", torch.float32):
            assert not tf32_matmul()  # an fp32 row is IEEE fp32
        assert switch.fp32_precision == "tf32"
        switch.fp32_precision = "ieee"
        with matmul_precision("cuda", TF32):
            assert tf32_matmul()
        assert switch.fp32_precision == "ieee"
        for device, dtype in (("cpu", TF32), ("cuda", torch.bfloat16)):
            with matmul_precision(device, dtype):
                assert switch.fp32_precision == "ieee"  # untouched
    finally:
        switch.fp32_precision = before


def test_tf32_is_refused_on_the_cpu_with_the_reason(capsys):
    assert run(["gemm", "--shape", "M=8,N=8,K=8", "--dtype", "tf32"]) == 2
    out = capsys.readouterr().out
    assert "--dtype tf32: no implementation of gemm" in out and "(a CUDA tensor-core mode)" in out


def test_a_gpu_case_must_fit_in_host_and_device_memory(monkeypatch):
    """The memory check had read host memory only for --device cuda; a case is now checked
    against the host (its footprint: references and copies) and the GPU (device_bytes).
    No GPU here: both skip paths end before any input is made."""
    from pydeepbench import harness, runner

    with extra_impl("gpu", lambda a, b: a @ b, devices=("cuda",)):
        case = shapes.parse_shape("M=4096,N=4096,K=4096", "gemm")
        spec = registry.get_op("gemm")
        host_need = spec.footprint_bytes(case.shape, torch.float32)
        dev_need = spec.device_bytes(case.shape, torch.float32)
        assert dev_need == 2 * 3 * 4096**2 * 4 < host_need  # the GPU's share only
        cfg = runner.SweepConfig(
            op="gemm", impls=["gpu"], dtypes=[torch.float32], device="cuda",
            shape_set="custom", harness=harness.HarnessConfig(),
        )  # fmt: skip
        for host, dev, on_gpu in ((10 * host_need, dev_need, True), (host_need, 10**15, False)):
            mem = {"cpu": host, "cuda": dev}
            monkeypatch.setattr(runner.system, "available_memory_bytes", lambda d, mem=mem: mem[d])
            (row,) = runner.run_case(cfg, case, torch.float32, None, None)
            assert row["status"] == "skipped" and row["reason"].startswith("needs ~")
            assert row["reason"].endswith(" on cuda") == on_gpu

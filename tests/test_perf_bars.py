"""benchmarks/perf_bars.py: one small bar, repeated, gives the median of its runs."""

import dataclasses
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

from pydeepbench import registry

pytest.importorskip("pydeepbench._C")
PATH = Path(__file__).parents[1] / "benchmarks" / "perf_bars.py"


def load():
    spec = importlib.util.spec_from_file_location("perf_bars", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


def run_tiny(pb, monkeypatch, tmp_path, bar_name, cases, *argv):
    """Runs bar `bar_name` on one small case and returns the JSON document."""
    bar = next(b for b in pb.BARS if b.name == bar_name)
    monkeypatch.setattr(pb, "BARS", [pb.Bar(**{**bar.__dict__, "cases": cases})])
    out = tmp_path / "bars.json"
    pb.main(["--max-time", "0.02", *argv, "--json", str(out)])
    return json.loads(out.read_text())


def test_repeat_reports_the_median_of_its_runs(tmp_path, monkeypatch):
    pb = load()
    doc = run_tiny(
        pb, monkeypatch, tmp_path, "gemm-dlrm-fp32", "shape:M=64,N=48,K=32", "--repeat", "3"
    )
    (b,) = doc["bars"]
    assert len(b["runs"]) == 3 and all(v > 0 for v in b["runs"])
    assert b["value"] == statistics.median(b["runs"])
    assert b["at_roofline"] >= b["value"]  # the median of three runs' ratios at the roofline
    assert b["pass"] == (b["value"] >= b["target"])
    assert {r["impl"] for r in doc["results"]} == {"ootb", "native"}
    assert len(doc["results"]) == 6  # 2 impls x 3 runs, every row kept


def test_gather_bars_place_rows_against_the_higher_roof_measured_around_the_run(
    tmp_path, monkeypatch
):
    pb = load()
    # Two measurements around the sweep: STREAM falls, the gather rate doubles.
    rates = iter([(50e9, 10e9), (40e9, 20e9)])

    def fake(pk, max_time_s=2.0):
        bw, g = next(rates)
        return pb.dataclasses.replace(
            pk, bandwidth=bw, gather_bandwidth=g, detail={**pk.detail, "gather": {"fake": g}}
        )

    monkeypatch.setattr(pb.roofline, "remeasure_memory", fake)
    cases = "shape:tables=2,rows=1000,dim=16,batch=64,pooling=4"
    doc = run_tiny(pb, monkeypatch, tmp_path, "emb-mlperf", cases)
    (b,) = doc["bars"]
    assert b["memory_roofs"] == [
        {"stream_before": 50e9, "stream_after": 40e9, "gather_before": 10e9, "gather_after": 20e9}
    ]
    assert b["unstable"] == ["run 1: stream 50.0->40.0, gather 10.0->20.0"]
    rows = doc["results"]
    assert {r["impl"] for r in rows} == {"ootb", "native"}
    for r in rows:
        gbps = r["gbps"]
        assert r["peak_bw"] == 50e9
        assert r["pct_peak_bw"] == pytest.approx(100 * gbps / 50)
        assert r["pct_peak_gather"] == pytest.approx(100 * gbps / 20)


def test_flops_bars_place_rows_against_the_higher_fma_peak_measured_around_the_run(
    tmp_path, monkeypatch
):
    pb = load()
    assert next(b for b in pb.BARS if b.name == "gemm-2048-peak").flops_roof
    # Two measurements around the sweep: the second is the higher.
    rates = iter([100e9, 200e9])

    def fake(pk, dtype, max_time_s=2.0):
        return pb.dataclasses.replace(pk, flops={**pk.flops, "float32": next(rates)})

    monkeypatch.setattr(pb.roofline, "remeasure_flops", fake)
    doc = run_tiny(pb, monkeypatch, tmp_path, "gemm-2048-peak", "shape:M=64,N=48,K=32")
    (b,) = doc["bars"]
    (roofs,) = b["flops_roofs"]
    assert (roofs["flops_before"], roofs["flops_after"]) == (100e9, 200e9)
    assert roofs["flops_cached"] == doc["peaks"]["flops"]["float32"]
    by = {r["impl"]: r for r in doc["results"]}
    assert set(by) == {"ootb", "native"}  # torch.matmul timed beside the kernel
    for r in by.values():
        assert r["peak_flops"] == 200e9
        assert r["pct_peak_flops"] == pytest.approx(100 * r["tflops"] * 1e12 / 200e9)
    assert b["value"] == pytest.approx(by["native"]["pct_peak_flops"])
    assert b["beside"] == {
        "impl": "ootb",
        "value": pytest.approx(by["ootb"]["pct_peak_flops"]),
        "runs": [pytest.approx(by["ootb"]["pct_peak_flops"])],
    }
    assert b["unstable"] == ["run 1: flops 100.0->200.0"]
    assert b["at_roofline"] is None  # a % bar


def test_pct_bars_take_the_best_row_of_the_impl_asked_for():
    pb = load()

    def row(impl, v, status="ok"):
        return {"impl": impl, "status": status, "pct_peak_bw": v}

    rows = [row("native", 40.0), row("native", 55.0), row("functional", 30.0)]
    rows += [row("functional", 90.0, "failed"), row("native", None)]
    p = pb.Pct("pct_peak_bw", "native")
    assert p(rows) == 55.0
    assert p(rows, "functional") == 30.0  # failed rows never count
    assert p([row("native", 1.0, "skipped")]) is None
    bases = {b.name: pb.baseline(b) for b in pb.BARS if isinstance(b.measure, pb.Pct)}
    assert bases == {"gemm-2048-peak": "ootb", "emb-A-bandwidth": "functional"}
    assert pb.baseline(next(b for b in pb.BARS if b.name == "gemm-dlrm-fp32")) is None


def test_a_failing_baseline_leaves_the_pct_bar_standing(tmp_path, monkeypatch, capsys):
    pb = load()
    monkeypatch.setattr(pb.roofline, "remeasure_flops", lambda pk, dtype, max_time_s=2.0: pk)
    ootb = registry.get_impl("gemm", "ootb")

    def broken(a, b):
        raise RuntimeError("baseline broke")

    monkeypatch.setitem(registry._IMPLS["gemm"], "ootb", dataclasses.replace(ootb, fn=broken))
    doc = run_tiny(pb, monkeypatch, tmp_path, "gemm-2048-peak", "shape:M=64,N=48,K=32")
    (b,) = doc["bars"]
    assert b["value"] > 0
    assert b["beside"] == {"impl": "ootb", "value": None, "runs": [None]}
    assert "[ootb beside it: no ok row]" in capsys.readouterr().out
    by = {r["impl"]: r["status"] for r in doc["results"]}
    assert by == {"ootb": "failed", "native": "ok"}


def test_remeasure_flops_replaces_only_that_dtype():
    from pydeepbench import roofline

    pk = roofline.peaks("cpu")
    new = roofline.remeasure_flops(pk, torch.float32, max_time_s=0.05)
    assert new.flops["float32"] > 0 and new.flops_source["float32"].startswith("measured")
    assert {k: v for k, v in new.flops.items() if k != "float32"} == {
        k: v for k, v in pk.flops.items() if k != "float32"
    }
    assert new.bandwidth == pk.bandwidth


def test_drifted_names_the_roofs_that_moved_past_the_threshold():
    pb = load()
    steady = {"flops_before": 230e9, "flops_after": 200e9, "flops_cached": 1.0}  # 13%
    assert pb.drifted(steady) == []
    assert pb.drifted({"flops_before": 235.4e9, "flops_after": 116.4e9}) == ["flops 235.4->116.4"]
    mem = {"stream_before": 36.9e9, "stream_after": 57.6e9, "gather_before": 21.5e9}
    assert pb.drifted({**mem, "gather_after": None}) == ["stream 36.9->57.6"]


def test_at_roofline_is_the_ratio_of_a_kernel_at_the_roofs():
    pb = load()

    def row(case, impl, t, flops=0.0, nbytes=0.0, peak_flops=100e9, peak_bw=10e9):
        return {
            "case": case,
            "impl": impl,
            "status": "ok",
            "time_s": {"median": t},
            "flops": flops,
            "bytes": nbytes,
            "peak_flops": peak_flops,
            "peak_bw": peak_bw,
        }

    # Only the num row's work and roofs count (the baseline rows carry none here).
    rows = [
        # compute bound: at the roof 1e9 / 100e9 = 10 ms, ootb 20 ms -> 2x
        row("a", "ootb", 20e-3),
        row("a", "native", 25e-3, 1e9, 1e6),
        # memory bound: 1e8 / 10e9 = 10 ms, ootb 80 ms -> 8x
        row("b", "ootb", 80e-3),
        row("b", "native", 40e-3, 1e6, 1e8),
        # already past its roof (10 ms) at 5 ms, data in cache: counted as measured, 4x
        row("c", "ootb", 20e-3),
        row("c", "native", 5e-3, 1e6, 1e8),
        row("d", "native", 1e-3, 1e6, 1e8),  # no ootb row: not a case of the ratio
        {**row("e", "ootb", 1.0), "status": "failed"},
        row("e", "native", 1e-3, 1e6, 1e8),  # its baseline failed: not a case either
    ]
    r = pb.Ratio("native", "ootb")
    assert r(rows) == pytest.approx((20 / 25 * 80 / 40 * 20 / 5) ** (1 / 3))
    assert r.at_roofline(rows) == pytest.approx((2 * 8 * 4) ** (1 / 3))
    # A case without a peak: no value rather than one over fewer cases.
    assert (
        r.at_roofline([*rows, row("f", "ootb", 1.0), row("f", "native", 1.0, 1, 1, None)]) is None
    )


def test_ratio_bars_report_their_value_at_the_roofline(tmp_path, monkeypatch):
    pb = load()
    doc = run_tiny(pb, monkeypatch, tmp_path, "linear-dlrm-fused", "shape:M=64,N=48,K=32")
    (b,) = doc["bars"]
    by = {r["impl"]: r for r in doc["results"]}
    nat = by["native"]
    roof_t = max(nat["flops"] / nat["peak_flops"], nat["bytes"] / nat["peak_bw"])
    t = min(roof_t, nat["time_s"]["median"])
    assert b["at_roofline"] == pytest.approx(by["ootb"]["time_s"]["median"] / t)
    assert b["at_roofline"] >= b["value"]


def test_only_refuses_unknown_bar_names_before_measuring(monkeypatch, capsys):
    pb = load()

    def measured(*a, **kw):
        raise AssertionError("measured before checking --only")

    monkeypatch.setattr(pb.system, "collect", measured)
    names = ", ".join(b.name for b in pb.BARS)
    for only, named in (("bogus", "bogus"), ("gemm-dlrm-fp32,bogus", "bogus"), (",", "','")):
        with pytest.raises(SystemExit) as e:
            pb.main(["--only", only])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"--only: unknown bar(s) {named}; the bars: {names}" in err


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--repeat", "0"], "--repeat must be >= 1, got 0"),
        (["--max-time", "0"], "--max-time (max_time_s) must be > 0, got 0.0"),
        (["--json", "."], "--json . is a directory"),
    ],
)
def test_bad_flags_are_refused_before_measuring(monkeypatch, capsys, argv, said):
    # --max-time 0 was a traceback, --repeat 0 ran once, and a directory for --json
    # failed after the whole run.
    pb = load()

    def measured(*a, **kw):
        raise AssertionError("measured before checking the flags")

    monkeypatch.setattr(pb.system, "collect", measured)
    with pytest.raises(SystemExit) as e:
        pb.main(argv)
    assert e.value.code == 2 and said in capsys.readouterr().err


def test_only_accepts_the_bar_names_and_help_lists_them(monkeypatch, capsys):
    pb = load()

    class Measuring(Exception):
        pass

    def collect():
        raise Measuring

    monkeypatch.setattr(pb.system, "collect", collect)
    with pytest.raises(Measuring):  # past the check, on to the measurements
        pb.main(["--only", "gemm-dlrm-fp32, emb-mlperf,"])
    with pytest.raises(SystemExit) as e:
        pb.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for b in pb.BARS:
        assert b.name in out and b.what in out


def test_rows_out_of_time_below_min_samples_are_counted_and_said(tmp_path, monkeypatch, capsys):
    pb = load()
    cfg = pb.harness.HarnessConfig
    # the bar sweep's own config: a sample count it cannot reach (explicit ones win)
    monkeypatch.setattr(
        pb.harness,
        "HarnessConfig",
        lambda **kw: cfg(**{"min_samples": 10**5, "max_samples": 10**5, **kw}),
    )
    doc = run_tiny(pb, monkeypatch, tmp_path, "gemm-dlrm-fp32", "shape:M=64,N=48,K=32")
    (b,) = doc["bars"]
    assert b["short_rows"] == len(doc["results"]) == 2
    assert all(r["harness"]["noisy"] for r in doc["results"])
    assert "2 row(s) ran out of time below the minimum sample count" in capsys.readouterr().out


def _doctored_sweep(pb, monkeypatch, change):
    """pb.sweep with `change(row)` applied to every row it returns."""
    real = pb.sweep

    def sweep(*a, **kw):
        rows = real(*a, **kw)
        for r in rows:
            change(r)
        return rows

    monkeypatch.setattr(pb, "sweep", sweep)


def test_noisy_rows_are_counted_and_said(tmp_path, monkeypatch, capsys):
    pb = load()

    def noisy_ootb(r):  # both set: a 0.02 s sweep may be noisy, or short, by itself
        noisy = r["impl"] == "ootb"
        r["harness"] = {**r["harness"], "noisy": noisy, "stop_reason": "max_time"}

    _doctored_sweep(pb, monkeypatch, noisy_ootb)
    doc = run_tiny(pb, monkeypatch, tmp_path, "gemm-dlrm-fp32", "shape:M=64,N=48,K=32")
    (b,) = doc["bars"]
    assert b["noisy_rows"] == 1 and b["short_rows"] == 0 and b["cases"] == [1]
    assert "1 other row(s) noisy (IQR above 10% of the median)" in capsys.readouterr().out


def test_a_case_a_needed_impl_skipped_is_named_and_the_bar_has_no_value(
    tmp_path, monkeypatch, capsys
):
    # Skipped rows used to leave the geomean without a word: a bar over fewer cases than
    # its set read like one over all of them.
    pb = load()

    def skip_native(r):
        if r["impl"] == "native":
            r.update(status="skipped", reason="not enough memory")

    _doctored_sweep(pb, monkeypatch, skip_native)
    doc = run_tiny(
        pb, monkeypatch, tmp_path, "gemm-dlrm-fp32", "shape:M=64,N=48,K=32", "--repeat", "2"
    )
    (b,) = doc["bars"]
    assert b["value"] is None and b["pass"] is False and b["cases"] == [0, 0]
    assert b["left_out"] == ["M=64,N=48,K=32,NN (native: not enough memory)"]
    out = capsys.readouterr().out
    assert "MISS  gemm-dlrm-fp32" in out and "[0 cases]" in out and "runs -, -" in out
    assert "1 case(s) left out of the value, their rows not run: M=64,N=48,K=32,NN" in out


def test_a_failed_bar_says_so_and_the_other_bars_still_run(tmp_path, monkeypatch, capsys):
    # A failed row used to end the whole script before the JSON was written, losing the
    # bars measured before it.
    pb = load()

    def fail_fp32_native(r):
        if r["impl"] == "native" and r["dtype"] == "float32":
            r.update(status="failed", reason="check: max error 1.0")

    _doctored_sweep(pb, monkeypatch, fail_fp32_native)
    bars = {b.name: b for b in pb.BARS}
    tiny = "shape:M=16,N=16,K=16"
    monkeypatch.setattr(
        pb,
        "BARS",
        [
            pb.Bar(**{**bars["gemm-dlrm-fp32"].__dict__, "cases": tiny}),
            pb.Bar(**{**bars["gemm-dlrm-bf16"].__dict__, "cases": tiny}),
        ],
    )
    out_file = tmp_path / "bars.json"
    assert pb.main(["--max-time", "0.02", "--json", str(out_file)]) == 1
    failed, bf16 = json.loads(out_file.read_text())["bars"]
    assert failed["value"] is None and failed["pass"] is False
    assert failed["failed"] == "1 failed row(s): check: max error 1.0"
    assert bf16["value"] > 0 and bf16["runs"] == [bf16["value"]]
    out = capsys.readouterr().out
    assert "FAIL  gemm-dlrm-fp32" in out and "failed: 1 failed row(s)" in out


def test_a_stale_installed_copy_is_named(tmp_path, monkeypatch):
    """`python benchmarks/perf_bars.py` imports whichever pydeepbench is on sys.path, which
    after a change to a non-editable checkout is the copy it was built from."""
    pb = load()
    (tmp_path / "pydeepbench").mkdir()
    note = pb.stale_copy_note(tmp_path)
    assert "measuring the installed pydeepbench" in note and f"PYTHONPATH={tmp_path}" in note
    here = Path(pb.pydeepbench.__file__).resolve().parent
    assert pb.stale_copy_note(here.parent) is None  # the copy measured is this one

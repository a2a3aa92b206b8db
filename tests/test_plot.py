"""The roofline chart: which rows become points and where, which peaks become ceilings,
the figure's contents, and the `plot` subcommand's output and refusals."""

import json
import sys
from pathlib import Path

import matplotlib.colors
import pytest

from pydeepbench import cli, plot

FIX = Path(__file__).parent / "fixtures"
SYSTEM = json.loads((FIX / "results-micro.json").read_text())["system"]
OTHER = FIX / "results-other-machine.json"


def row(op="gemm", impl="native", dtype="float32", ai=10.0, tflops=0.2, status="ok", **kw):
    r = {
        "op": op,
        "impl": impl,
        "device": "cpu",
        "dtype": dtype,
        "status": status,
        "arithmetic_intensity": ai,
        "tflops": tflops,
        "peak_flops": 4e11,  # the roofs the runner placed the row against
        "peak_bw": 2.5e10,
    }
    return {**r, **kw}


def doc(rows, flops=4e11, bw=2.5e10, gather=2.0e10):
    return {
        "schema": "pydeepbench.results/3",
        "system": SYSTEM,
        "peaks": {
            "device": "cpu",
            "flops": {"float32": flops},
            "bandwidth": bw,
            "gather_bandwidth": gather,
        },
        "results": rows,
    }


def test_points_are_ok_op_rows_with_flops_and_bytes():
    rows = [
        row(ai=100.0, tflops=0.3),
        row(op="embedding_bags", impl="ootb", ai=0.25, tflops=0.004),
        row(status="skipped"),
        row(ai=None),  # an op without a bytes model has no intensity
        row(ai=float("inf")),  # a row of zero bytes (roofline.place)
        row(ai=float("nan")),  # only a file from elsewhere (ours write null): NaN axes
        row(tflops=float("nan")),
        {"kind": "model", "model": "dlrm", "status": "ok"},
    ]
    pts = plot.points([doc(rows)])
    assert [(p["op"], p["impl"], p["intensity"], p["flop_s"]) for p in pts] == [
        ("gemm", "native", 100.0, pytest.approx(3e11)),
        ("embedding_bags", "ootb", 0.25, pytest.approx(4e9)),
    ]
    assert [p["op"] for p in plot.points([doc(rows)], ops={"embedding_bags"})] == ["embedding_bags"]
    assert [p["peak_gather"] for p in pts] == [None, None]
    # A gathering row keeps the rate it was placed against as a percentage: 8 GB/s at 40%.
    (g,) = plot.points([doc([row(op="embedding_bags", gbps=8.0, pct_peak_gather=40.0)])])
    assert g["peak_gather"] == pytest.approx(2e10)


def test_ceilings_are_the_highest_roofs_the_rows_were_placed_against():
    docs = [
        doc([row(peak_flops=3e11, peak_bw=3e10)], gather=1e10),
        doc([row(), row(dtype="bfloat16")], gather=2e10),  # bf16 placed against fp32's roof
    ]
    roofs = plot.ceilings(docs, plot.points(docs))
    assert roofs == {
        "flops": {("cpu", "float32"): 4e11, ("cpu", "bfloat16"): 4e11},
        "bandwidth": {"cpu": 3e10},
        "gather": {},  # GEMMs read no random rows: no gather roof under them
    }
    docs.append(doc([row(op="embedding_bags", ai=0.2)], gather=1.5e10))
    assert plot.ceilings(docs, plot.points(docs))["gather"] == {"cpu": 2e10}  # the files' top
    # perf_bars places gathering rows against the rate it measured around the bar, not
    # the file's cached peaks: the rows' rate is the line.
    bars = [doc([row(op="embedding_bags", gbps=3.0, pct_peak_gather=20.0)], gather=2e10)]
    assert plot.ceilings(bars, plot.points(bars))["gather"] == {"cpu": pytest.approx(1.5e10)}
    bare = doc([row(peak_flops=None, peak_bw=None)])
    bare["peaks"] = None  # a run with --no-roofline
    assert plot.ceilings([bare], plot.points([bare])) == {
        "flops": {},
        "bandwidth": {},
        "gather": {},
    }


def test_figure_places_every_point_under_its_ceilings():
    rows = [row(ai=100.0, tflops=0.3), row(impl="ootb", ai=2.0, tflops=0.04)]
    rows.append(row(dtype="bfloat16", ai=50.0, tflops=0.1))
    rows.append(row(dtype="float16", ai=60.0, tflops=0.1, peak_flops=8e11))
    fig = plot.roofline_figure([doc(rows)], "Test CPU")
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    scattered = sorted(tuple(xy) for c in ax.collections for xy in c.get_offsets())
    assert scattered == [
        (2.0, pytest.approx(4e10)),
        (50.0, 1e11),
        (60.0, 1e11),
        (100.0, pytest.approx(3e11)),
    ]
    labels = ax.get_legend_handles_labels()[1]
    # bf16 and fp32 rows met one roof: one line for both; fp16's own roof its own line.
    assert "FMA peak (cpu) 400.0 GFLOP/s: roof of bfloat16/float32 rows" in labels
    assert "FMA peak (cpu) 800.0 GFLOP/s: roof of float16 rows" in labels
    assert "STREAM (cpu) 25.0 GB/s" in labels
    assert not any("gather" in label for label in labels)  # GEMMs only
    # Each impl keeps its colour from chart to chart.
    native = [c for c in ax.collections if c.get_label().endswith("[native]")]
    want = matplotlib.colors.to_rgb(plot.IMPL_COLORS["native"])
    assert {tuple(c.get_facecolor()[0][:3]) for c in native} == {want}
    # Two dtypes among the points: the dtype is in each series' label.
    assert {"gemm float32 [native]", "gemm float32 [ootb]", "gemm bfloat16 [native]"} <= set(labels)
    peak = next(ln for ln in ax.lines if ln.get_label().endswith("bfloat16/float32 rows"))
    assert set(peak.get_ydata()) == {4e11}
    stream = next(ln for ln in ax.lines if ln.get_label().startswith("STREAM"))
    (x0, x1), (y0, y1) = stream.get_xdata(), stream.get_ydata()
    assert y0 == pytest.approx(2.5e10 * x0)
    assert x1 == pytest.approx(8e11 / 2.5e10) and y1 == pytest.approx(8e11)  # the top roof
    assert x0 < 2.0 and ax.get_xlim()[1] > 100.0


def test_each_device_s_bandwidth_stops_at_its_own_fma_roof():
    rows = [row(), row(device="cuda", peak_flops=5e13, peak_bw=3e12, ai=200.0, tflops=20.0)]
    ax = plot.roofline_figure([doc(rows)], "Test host").axes[0]
    cpu = next(ln for ln in ax.lines if ln.get_label().startswith("STREAM (cpu)"))
    gpu = next(ln for ln in ax.lines if ln.get_label().startswith("STREAM (cuda)"))
    assert cpu.get_ydata()[1] == pytest.approx(4e11)
    assert gpu.get_ydata()[1] == pytest.approx(5e13)


def test_plot_command_writes_png_and_svg(tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc([row(), row(op="linear", ai=30.0)])))
    png, svg = tmp_path / "roof.png", tmp_path / "roof.svg"
    assert cli.main(["plot", str(f), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(2 points)" in capsys.readouterr().out
    assert cli.main(["plot", str(f), "--out", str(svg), "--op", "linear"]) == 0
    assert b"<svg" in svg.read_bytes()[:500]
    assert "(1 points)" in capsys.readouterr().out  # the gemm row left out
    assert cli.main(["plot", str(f), "--out", str(svg), "--op", " linear, gemm,"]) == 0
    assert "(2 points)" in capsys.readouterr().out
    bare = doc([row(peak_flops=None, peak_bw=None)])
    bare["peaks"] = None  # rows placed without any roof: points only
    f.write_text(json.dumps(bare))
    assert cli.main(["plot", str(f), "--out", str(png)]) == 0
    # A missing output folder is made, as for the op commands' --json; brackets in the
    # path are not rich markup.
    deep = tmp_path / "nodir" / "[sub]" / "x.png"
    assert cli.main(["plot", str(f), "--out", str(deep)]) == 0
    assert deep.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {deep} (1 points)" in capsys.readouterr().out


def test_plot_command_refusals(tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc([row()])))
    assert cli.main(["plot", str(f), "--out", str(tmp_path / "roof.jpg")]) == 2
    assert "must end in .png, .svg or .pdf" in capsys.readouterr().out
    assert cli.main(["plot", str(f), "--out", str(tmp_path / "x.png"), "--op", "linear"]) == 2
    assert "no ok rows of op(s) linear" in capsys.readouterr().out
    assert cli.main(["plot", str(f), "--out", str(tmp_path / "x.png"), "--op", "gemm,lstm"]) == 2
    assert "unknown op(s) lstm; known: " in capsys.readouterr().out
    assert cli.main(["plot", str(f), "--out", str(tmp_path / "x.png"), "--op", ","]) == 2
    assert "--op: no names in ','" in capsys.readouterr().out  # it plotted every op
    assert cli.main(["plot", str(f), str(OTHER), "--out", str(tmp_path / "x.png")]) == 2
    assert "refusing to mix results from 2 different machines" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists()


def test_plot_refuses_a_no_roofline_file_for_its_missing_peaks(tmp_path, capsys):
    # What a run with --no-roofline writes: FLOPs, bytes and FLOP/s, but no peaks, so no
    # intensity or roofs on the rows.
    unplaced = row(ai=None, peak_flops=None, peak_bw=None, flops=2e6, bytes=2e5)
    bare = doc([unplaced])
    bare["peaks"] = None
    f = tmp_path / "r.json"
    f.write_text(json.dumps(bare))
    assert cli.main(["plot", str(f), "--out", str(tmp_path / "x.png")]) == 2
    out = capsys.readouterr().out
    assert "measured with --no-roofline" in out and "rerun without --no-roofline" in out
    assert "with FLOPs and bytes" not in out
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_names_the_plot_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc([row()])))
    assert cli.main(["plot", str(f), "--out", str(tmp_path / "x.png")]) == 2
    out = capsys.readouterr().out
    assert "error: plot needs matplotlib: pip install 'pydeepbench[plot]'" in out  # not markup

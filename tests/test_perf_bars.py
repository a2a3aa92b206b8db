"""benchmarks/perf_bars.py: one small bar, repeated, gives the median of its runs."""

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

pytest.importorskip("pydeepbench._C")
PATH = Path(__file__).parents[1] / "benchmarks" / "perf_bars.py"


def load():
    spec = importlib.util.spec_from_file_location("perf_bars", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


def test_repeat_reports_the_median_of_its_runs(tmp_path, monkeypatch):
    pb = load()
    bar = next(b for b in pb.BARS if b.name == "gemm-dlrm-fp32")
    small = pb.Bar(**{**bar.__dict__, "name": "tiny", "cases": "shape:M=64,N=48,K=32"})
    monkeypatch.setattr(pb, "BARS", [small])
    out = tmp_path / "bars.json"
    pb.main(["--max-time", "0.02", "--repeat", "3", "--json", str(out)])
    doc = json.loads(out.read_text())
    (b,) = doc["bars"]
    assert len(b["runs"]) == 3 and all(v > 0 for v in b["runs"])
    assert b["value"] == statistics.median(b["runs"])
    assert b["pass"] == (b["value"] >= b["target"])
    assert {r["impl"] for r in doc["results"]} == {"ootb", "native"}
    assert len(doc["results"]) == 6  # 2 impls x 3 runs, every row kept

"""The model benchmark driver: step timing through the harness, latency fields and the
target marker, model rows in the results schema, and the `model` subcommand end to end."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydeepbench.models import dlrm

from pydeepbench import cli, proxy, report, workload

TINY = str(Path(__file__).parent / "fixtures" / "tiny-dot.toml")


def test_percentiles_interpolate_like_numpy():
    s = [float(i) for i in range(1, 101)]
    assert workload.percentile(s, 50) == pytest.approx(50.5)
    assert workload.percentile(s, 99) == pytest.approx(99.01)
    assert workload.percentile([3.0], 99) == 3.0


@pytest.mark.parametrize(
    "p99_ms,target_ms,met,marker",
    [
        (59.0, 60.0, True, ""),
        (60.0, 60.0, True, ""),
        (61.0, 60.0, False, "*"),
        (61, None, None, ""),
    ],
)
def test_latency_target_and_marker(p99_ms, target_ms, met, marker):
    samples = [0.001] * 98 + [p99_ms / 1e3] * 2  # p99 falls on the slow tail
    f = workload.latency_fields(samples, target_ms, None if target_ms is None else 99)
    assert f["latency_s"]["p99"] == pytest.approx(p99_ms / 1e3)
    assert f["latency_s"]["p50"] == pytest.approx(0.001)
    assert f["latency_met"] is met
    assert workload.latency_marker(f) == marker


def test_interleaved_steps_run_exact_warmup_and_steps_in_alternating_order():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("a", "b")}
    measured, errors = workload.time_steps_interleaved(fns, steps=4, warmup=2)
    assert errors == {}
    assert calls == ["a", "a", "b", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    for m in measured.values():
        assert m.stats.n == 4 == len(m.samples_s) and m.warmup_iters == 2
        assert all(t >= 0 for t in m.samples_s)
    for steps, warmup in ((0, 1), (1, 0)):
        with pytest.raises(ValueError):
            workload.time_steps_interleaved(fns, steps=steps, warmup=warmup)


@pytest.mark.parametrize("fail_at", [2, 3, 5])  # a warm-up step, the first and the third timed
def test_an_impl_that_raises_leaves_the_rotation_and_the_others_finish(fail_at):
    n = {"ok": 0, "bad": 0}

    def bad():
        n["bad"] += 1
        if n["bad"] == fail_at:
            raise RuntimeError("boom")

    fns = {"ok": lambda: n.__setitem__("ok", n["ok"] + 1), "bad": bad}
    measured, errors = workload.time_steps_interleaved(fns, steps=5, warmup=2)
    assert list(measured) == ["ok"] and measured["ok"].stats.n == 5 and n["ok"] == 7
    assert errors == {"bad": "RuntimeError: boom"} and n["bad"] == fail_at
    assert list(fns) == ["ok"]  # the failed step (and what it holds) is dropped


def test_when_every_impl_raises_nothing_is_measured():
    def bad():
        raise OSError("down")

    measured, errors = workload.time_steps_interleaved({"a": bad, "b": bad}, 3, 1)
    assert measured == {} and errors == {"a": "OSError: down", "b": "OSError: down"}


def test_run_mode_rows_fit_the_schema_and_record_the_check():
    cfg = dlrm.load_config(TINY)
    seen = []
    rows = workload.run_mode(
        cfg, "infer", ["optimized", "ootb"], steps=3, warmup=1, on_row=seen.append
    )
    assert [r["impl"] for r in rows] == ["ootb", "optimized"] == [r["impl"] for r in seen]
    for r in rows:
        n = report.normalize(r)
        assert set(n) == set(report.MODEL_ROW_FIELDS) and n["kind"] == "model"
        assert r["status"] == "ok", r["reason"]
        assert r["time_s"]["n"] == 3 == len(r["samples_s"])
        assert r["score"] == pytest.approx(cfg.batch_size / r["time_s"]["median"])
        assert r["latency_target_s"] == 0.06 and r["latency_percentile"] == 99
        assert r["latency_met"] in (True, False)
        assert r["check"]["reference"] == "ootb" and r["check"]["ok"] is True
        assert r["row_cap"] == 100 and r["tables_capped"] == 1 and r["units"] == "ex/s"
    opt = rows[1]
    assert opt["check"]["max_abs_diff"] < 1e-5
    assert opt["speedup_vs_ootb"] == pytest.approx(opt["score"] / rows[0]["score"])
    assert (opt["fallback"] is None) == (opt["emb_impl"] == "native")


def test_run_mode_with_uint8_tables():
    cfg = dlrm.load_config(TINY)
    rows = workload.run_mode(
        cfg, "infer", ["ootb", "optimized"], steps=2, warmup=1, emb_dtype="uint8"
    )
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["reason"] for r in rows]
    assert all(r["emb_dtype"] == "uint8" and r["check"]["ok"] for r in rows)
    assert proxy.entry(rows[1])["Config"].endswith(", uint8 emb")
    rows = workload.run_mode(cfg, "train", ["ootb"], steps=2, warmup=1, emb_dtype="uint8")
    assert rows[0]["status"] == "skipped" and "for inference" in rows[0]["reason"]
    with pytest.raises(ValueError, match="unknown embedding dtype"):
        workload.run_mode(cfg, "infer", ["ootb"], steps=2, warmup=1, emb_dtype="int4")


@pytest.mark.parametrize("ok_calls", [2, 4])  # check + 1 warm-up step; check + 2 + 1 timed
def test_run_mode_records_an_impl_that_fails_in_warmup_or_timing(monkeypatch, ok_calls):
    real = dlrm.DLRMOptimized.infer
    calls = []

    def flaky(self, b):
        calls.append(1)
        if len(calls) > ok_calls:
            raise RuntimeError("kernel fault")
        return real(self, b)

    monkeypatch.setattr(dlrm.DLRMOptimized, "infer", flaky)
    seen = []
    rows = workload.run_mode(
        dlrm.load_config(TINY),
        "infer",
        ["ootb", "optimized"],
        steps=3,
        warmup=2,
        on_row=seen.append,
    )
    ootb, opt = rows
    assert seen == rows
    assert ootb["status"] == "ok" and ootb["time_s"]["n"] == 3
    assert opt["status"] == "failed" and opt["reason"] == "error: RuntimeError: kernel fault"
    assert opt["check"]["ok"] is True
    assert not {"score", "time_s", "samples_s"} & set(opt)
    report.normalize(opt)  # a failed row still fits the schema


def test_train_rows_have_no_latency_target():
    cfg = dlrm.load_config(TINY)
    (row,) = workload.run_mode(cfg, "train", ["optimized"], steps=2, warmup=1)
    assert row["status"] == "ok" and row["latency_met"] is None
    assert row["latency_target_s"] is None and row["speedup_vs_ootb"] is None
    # checked against OOTB's training step although OOTB is not timed
    assert row["check"]["train_step"] is True and row["check"]["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("broken", ["no_update", "loss_off"])
def test_training_is_checked_beyond_the_forward(monkeypatch, broken):
    # Only the forward on batch 0 was compared: an optimized step that skipped its backward
    # and update passed the check, and was timed and reported faster than OOTB.
    real = dlrm.DLRMOptimized.train_step

    def step(self, b, opt=None):
        if broken == "no_update":
            z = self.logits(b, self._embed(b))
            return F.binary_cross_entropy_with_logits(z, b.labels).detach()
        return real(self, b, opt) * 1.01

    monkeypatch.setattr(dlrm.DLRMOptimized, "train_step", step)
    cfg = dlrm.load_config(TINY)
    rows = workload.run_mode(cfg, "train", ["ootb", "optimized"], steps=2, warmup=1)
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed" and rows[1]["check"]["ok"] is False
    assert "loss or post-step output differs from OOTB" in rows[1]["reason"]
    assert "time_s" not in rows[1] or rows[1]["time_s"] is None


def test_memory_check_counts_the_ootb_model_an_optimized_run_builds():
    # The optimized model is built from OOTB's, so both are alive at once even when only
    # the optimized one is timed.
    cfg = dlrm.load_config(TINY)
    for mode in ("infer", "train"):
        alone = workload._footprint(cfg, ["optimized"], mode)
        assert alone == workload._footprint(cfg, ["ootb"], "infer") + cfg.table_bytes()


def test_too_big_for_memory_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(workload.system, "available_memory_bytes", lambda: 1000)
    rows = workload.run_mode(dlrm.load_config(TINY), "infer", ["ootb"], steps=1, warmup=1)
    assert rows[0]["status"] == "skipped" and "lower --row-cap" in rows[0]["reason"]


def test_model_rows_reject_unknown_fields():
    with pytest.raises(ValueError, match="outside the schema"):
        report.normalize({"kind": "model", "status": "ok", "tflops": 1.0})


def test_model_cli_end_to_end(tmp_path, capsys):
    j = tmp_path / "m.json"
    rc = cli.main(
        [
            "model",
            "dlrm",
            "--config",
            TINY,
            "--mode",
            "train,infer",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch-size",
            "8",
            "--row-cap",
            "50",
            "--json",
            str(j),
        ]
    )
    assert rc == 0
    doc = json.loads(j.read_text())
    assert doc["schema"] == report.SCHEMA and doc["complete"] is True
    assert doc["run"]["command"] == "model" and doc["system"]["cpu"]["model"]
    rows = doc["results"]
    assert {(r["impl"], r["mode"]) for r in rows} == {
        (i, m) for i in ("ootb", "optimized") for m in ("train", "infer")
    }
    assert all(r["batch_size"] == 8 and r["row_cap"] == 50 for r in rows)
    out = capsys.readouterr().out
    assert "examples/s = batch_size / median" in out and "ex/s" in out


def test_model_cli_bad_input(capsys):
    assert cli.main(["model", "dlrm", "--config", "nope"]) == 2
    assert "unknown model config" in capsys.readouterr().out
    assert cli.main(["model", "dlrm", "--config", TINY, "--impl", "fast"]) == 2
    assert cli.main(["model", "bert", "--config", TINY]) == 2


@pytest.mark.parametrize("flag", ["--steps", "--warmup", "--batch-size", "--row-cap"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_model_cli_refuses_a_flag_below_1_by_its_name(flag, value, tmp_path, capsys):
    """0 is not taken for "not given" (the config's default), and the error names the
    flag, not the config file's field."""
    j = tmp_path / "m.json"
    assert cli.main(["model", "dlrm", "--config", TINY, flag, value, "--json", str(j)]) == 2
    out = capsys.readouterr().out
    assert f"{flag} must be >= 1, got {value}" in out and "field" not in out
    assert not j.exists()


@pytest.mark.parametrize("weighted", [False, True])
def test_memory_check_counts_the_batches_as_built(weighted):
    cfg = dataclasses.replace(dlrm.load_config(TINY), weighted=weighted)
    tensors = [
        t
        for b in dlrm.make_batches(cfg)
        for t in (
            b.dense,
            b.labels,
            *b.lS_i,
            *b.lS_o,
            *b.lS_w,
            b.indices,
            b.offsets,
            b.per_sample_weights,
        )  # fmt: skip
        if t is not None
    ]
    built = sum(t.nbytes for t in tensors)
    counted = workload._footprint(cfg, ["ootb"], "infer") - cfg.table_bytes()
    assert abs(counted - built) <= 8 * cfg.rotations  # the packed offsets' last entry


def test_the_check_sees_errors_a_deep_top_mlp_hides(monkeypatch):
    # A.1dev-embed4's 36-layer top MLP maps every input to one output (std ~4e-8 at batch
    # 64): zeroed embedding tables moved the output by 1e-7 and passed. The check also
    # compares the top MLP's input.
    cfg = dlrm.load_config("A.1dev-embed4-fp32").with_overrides(row_cap=50, batch_size=16)
    real = dlrm.DLRMOptimized.from_ootb

    def zeroed_tables(*a, **kw):
        m = real(*a, **kw)
        with torch.no_grad():
            m.weight.zero_()
        return m

    monkeypatch.setattr(dlrm.DLRMOptimized, "from_ootb", zeroed_tables)
    rows = workload.run_mode(cfg, "infer", ["ootb", "optimized"], steps=1, warmup=1)
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "failed"
    assert rows[1]["check"]["max_abs_diff"] > 1e-2

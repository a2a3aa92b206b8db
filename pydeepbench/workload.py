"""Model benchmarks: whole training or inference steps of a model, timed step by step.

Protocol for one (config, mode):
1. Build the OOTB model from the config's seed and pre-generate `rotations` (>= 8) synthetic
   batches; every timed step takes the next one, never the same batch twice in a row.
2. Equivalence: each impl's output on batch 0 (inference, before any training) is compared
   with OOTB's, and so is the top MLP's input (the interaction's output, relative to 1 +
   its magnitude: a deep top MLP can map every input to nearly one output, as
   A.1dev-embed4's does); the larger difference is recorded, and a row above MODEL_ATOL
   fails without being timed. The optimized model is built from OOTB's weights. In training,
   each model then takes one step on batch 0 and its loss and its output on batch 1 after
   the step are compared with OOTB's the same way (so the backward and the update are
   checked, not only the forward).
3. Warm-up: `warmup` untimed steps of each impl.
4. Timed: exactly `steps` rounds; in each, every impl runs one step, timed by itself (no
   blocking), so the samples are per-step latencies. The impls take turns within a round
   (the order alternates from round to round): on a shared machine the load drifts
   within seconds, and timing one impl after the other would put that drift into the
   ratio of their scores. The price: each step starts with caches holding what the other
   impl's step left (for OOTB training, a table-sized dense gradient), not its own data.
   An impl that raises in warm-up or timing leaves the rotation and its row fails; rows
   are reported (on_row) once every impl of the mode is done.

Score convention: examples/s = batch_size / median step time. Latency: p50/p95/p99 of the
per-step times (linear interpolation between order statistics). Inference rows compare the
config's latency percentile (MLPerf Server p99, 60 ms for DLRM) with its target and mark a
miss with `*` (`latency_met` false). Training rows have no target.

Model row fields (report.MODEL_ROW_FIELDS; `kind` is always "model"):
  model, impl (ootb|optimized), mode (train|infer), config, config_version, config_source,
  device, dtype, batch_size, row_cap (rows a table keeps here), tables_capped (tables the
  cap shortened), table_bytes (one copy of the capped tables, in emb_dtype), seed, data (how the
  synthetic batches are drawn), steps, warmup, status (ok|skipped|failed), reason,
  score, units ("ex/s"), score_convention, time_s (median/min/max/mean/stdev/q1/q3/iqr/
  rel_iqr/n of the step times), samples_s, latency_s {p50, p95, p99}, latency_percentile,
  latency_target_s, latency_met (None when there is no target), emb_impl, dense_impl,
  emb_dtype (float32, or uint8: 8-bit rowwise tables), fallback (what stood in for
  missing native kernels, or None), check {reference, max_abs_diff, atol, ok, batch},
  speedup_vs_ootb, harness.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable

from rich.markup import escape

from pydeepbench import _native, harness, system

MODEL_ATOL = 1e-4  # outputs are probabilities in (0, 1); fp32 reorderings stay ~1e-6
UNITS = "ex/s"
SCORE_CONVENTION = "examples/s = batch_size / median per-step time"
MODELS = ("dlrm",)


def percentile(samples: list[float], q: float) -> float:
    return harness._quantile(sorted(samples), q / 100.0)


def latency_marker(row: dict) -> str:
    """'*' when an inference row missed its latency target, '' otherwise."""
    return "*" if row.get("latency_met") is False else ""


def latency_fields(samples: list[float], target_ms: float | None, pct: int | None) -> dict:
    lat = {f"p{p}": percentile(samples, p) for p in (50, 95, 99)}
    out = {"latency_s": lat, "latency_percentile": pct, "latency_target_s": None}
    out["latency_met"] = None
    if target_ms is not None and pct is not None:
        out["latency_target_s"] = target_ms / 1e3
        out["latency_met"] = percentile(samples, pct) <= target_ms / 1e3
    return out


def _check_steps(steps: int, warmup: int) -> None:
    # Warm-up cannot be 0: an impl's first step pays one-time costs that would land in
    # the latency percentiles.
    if steps < 1 or warmup < 1:
        raise ValueError(f"need steps >= 1 and warmup >= 1, got {steps} and {warmup}")


def time_steps_interleaved(
    steps_by_impl: dict[str, Callable[[], object]], steps: int, warmup: int
) -> tuple[dict[str, harness.Measurement], dict[str, str]]:
    """`warmup` untimed steps of each impl, then `steps` rounds of one individually timed
    step per impl, the order reversed every other round. An impl whose step raises leaves
    the rotation and is removed from `steps_by_impl` (freeing what its step holds); the
    others go on. Returns the measurements and, per failed impl, "Type: message"."""
    _check_steps(steps, warmup)
    timer = harness.timer_for("cpu")
    live = steps_by_impl
    samples: dict[str, list[float]] = {k: [] for k in live}
    errors: dict[str, str] = {}

    def run(impl: str, timed: bool) -> None:
        try:
            t = timer.time(live[impl])
        except Exception as e:  # an impl bug is recorded, and the others still run
            # only the text: the traceback would keep the failed model alive
            errors[impl] = f"{type(e).__name__}: {e}"
            del live[impl]
            return
        if timed:
            samples[impl].append(t)

    for impl in list(live):
        for _ in range(warmup):
            if impl in live:
                run(impl, timed=False)
    for i in range(steps):
        for impl in list(live) if i % 2 == 0 else list(reversed(live)):
            run(impl, timed=True)
    # exactly `steps` samples: stop_reason "max_samples", as the harness names it
    cfg = harness.HarnessConfig()
    out = {
        impl: harness.Measurement.of(samples[impl], cfg, "max_samples", warmup, 1, timer.name)
        for impl in live
    }
    return out, errors


def _footprint(cfg, impls: list[str], mode: str) -> int:
    """A model's tables per impl (fp32 even for uint8 runs, which quantize fp32 tables;
    training OOTB's dense gradient is one more), plus the rotated batches as
    dlrm.make_batches builds them: fp32 dense features and label; each lookup's int64
    index in its table's list and in the concatenation, with two fp32 weights when
    weighted; two int64 offsets per bag (per table, and packed)."""
    # OOTB is always built (the reference and the optimized model's source of weights).
    copies = len(set(impls) | {"ootb"}) + (1 if mode == "train" and "ootb" in impls else 0)
    per_example = (
        4 * (cfg.dense_features + 1)
        + sum(cfg.pooling) * (16 + (8 if cfg.weighted else 0))
        + 16 * len(cfg.pooling)
    )
    return copies * cfg.table_bytes() + cfg.rotations * cfg.batch_size * per_example


def _relative_diff(got, want) -> float:
    """max |got - want| / (1 + |want|): absolute near zero, relative for the interaction's
    larger values."""
    return float(((got - want).abs() / (1 + want.abs())).max())


def _train_reference(ootb, batches) -> tuple:
    """OOTB's loss for one training step on batch 0, and its output on batch 1 after it."""
    loss = float(ootb.train_step(batches[0], ootb.make_optimizer()))
    return loss, ootb.infer(batches[1 % len(batches)]).clone()


def _train_diff(model, opt, batches, train_ref) -> float:
    """The larger of |loss - OOTB's| and the max abs difference of the post-step output on
    batch 1, for one training step of `model` on batch 0 (the step is one of its warm-up
    steps in effect: the timed steps start from the weights it leaves)."""
    loss = float(model.train_step(batches[0], opt))
    after = model.infer(batches[1 % len(batches)])
    return max(abs(loss - train_ref[0]), float((after - train_ref[1]).abs().max()))


def _base_row(cfg, impl: str, mode: str, steps: int, warmup: int, emb_dtype: str) -> dict:
    return {
        "kind": "model",
        "model": cfg.model,
        "impl": impl,
        "mode": mode,
        "config": cfg.name,
        "config_version": cfg.version,
        "config_source": cfg.source,
        "device": "cpu",
        "dtype": "float32",
        "emb_dtype": emb_dtype,
        "batch_size": cfg.batch_size,
        "row_cap": cfg.row_cap,
        "tables_capped": cfg.tables_capped,
        "table_bytes": cfg.table_bytes(emb_dtype),
        "seed": cfg.seed,
        "data": (
            f"synthetic, drawn before timing: dense ~ N(0,1), indices {cfg.distribution} "
            f"per capped table, labels ~ Bernoulli(0.5)"
            + (", per-sample weights ~ U(0,1)" if cfg.weighted else "")
            + f"; {cfg.rotations} batches rotated, a fresh one each step"
        ),
        "steps": steps,
        "warmup": warmup,
        "units": UNITS,
        "score_convention": SCORE_CONVENTION,
        "latency_percentile": cfg.latency_percentile if mode == "infer" else None,
    }


def run_mode(
    cfg,
    mode: str,
    impls: list[str],
    *,
    steps: int,
    warmup: int,
    dense_impl: str = "native",
    emb_dtype: str = "float32",
    on_row: Callable[[dict], None] = lambda r: None,
) -> list[dict]:
    """Every impl of one config in one mode, OOTB first; returns the rows. emb_dtype
    "uint8": both models look up 8-bit rowwise tables (inference only)."""
    from pydeepbench.models import dlrm

    _check_steps(steps, warmup)
    if emb_dtype not in dlrm.EMB_DTYPES:
        raise ValueError(f"unknown embedding dtype {emb_dtype!r}; use {', '.join(dlrm.EMB_DTYPES)}")

    impls = sorted(impls, key=lambda i: i != "ootb")
    rows = [_base_row(cfg, impl, mode, steps, warmup, emb_dtype) for impl in impls]
    if emb_dtype == "uint8" and mode == "train":
        for r in rows:
            r.update(status="skipped", reason="8-bit rowwise (uint8) tables are for inference")
            on_row(r)
        return rows
    _native.release_pool_cache()
    if why := system.memory_shortfall(_footprint(cfg, impls, mode)):
        reason = f"{why} (tables at row cap {cfg.row_cap}); lower --row-cap"
        for r in rows:
            r.update(status="skipped", reason=reason)
            on_row(r)
        return rows

    ootb = dlrm.DLRMOOTB(cfg)
    if emb_dtype == "uint8":
        ootb.quantize_embeddings()
    batches = dlrm.make_batches(cfg)
    ref = ootb.infer(batches[0]).clone()
    ref_features = ootb.features(batches[0])
    models = {}
    for impl in impls:
        models[impl] = (
            ootb if impl == "ootb" else dlrm.DLRMOptimized.from_ootb(ootb, dense_impl=dense_impl)
        )
    # Training: OOTB's loss on batch 0 and its output on batch 1 after that one step (the
    # optimized models were built from its weights before it).
    train_ref = train_err = None
    if mode == "train":
        try:
            train_ref = _train_reference(ootb, batches)
        except Exception as e:  # every row fails: there is nothing to check against
            train_err = f"error in OOTB's training step: {type(e).__name__}: {e}"
    ootb = None  # from here each model lives in `models`, then only in its step closure
    steps_by_impl = {}
    for impl, row in zip(impls, rows, strict=True):
        model = models.pop(impl)
        row.update(
            emb_impl=getattr(model, "emb_impl", "ootb"),
            dense_impl=getattr(model, "dense_impl", "ootb"),
            fallback=getattr(model, "fallback", None),
        )
        if train_err:
            row.update(status="failed", reason=train_err)
            continue
        try:
            # OOTB is the reference (in training it has taken its reference step already).
            diff = 0.0
            if impl != "ootb":
                diff = max(
                    float((model.infer(batches[0]) - ref).abs().max()),
                    _relative_diff(model.features(batches[0]), ref_features),
                )
            opt = model.make_optimizer() if mode == "train" else None
            if train_ref is not None and impl != "ootb" and diff <= MODEL_ATOL:
                diff = max(diff, _train_diff(model, opt, batches, train_ref))
        except Exception as e:  # an impl bug is recorded, and the others still run
            row.update(status="failed", reason=f"error: {type(e).__name__}: {e}")
            continue
        row["check"] = {
            "reference": "ootb",
            "max_abs_diff": diff,
            "atol": MODEL_ATOL,
            "ok": diff <= MODEL_ATOL,
            "batch": 0,
            **({"train_step": True} if train_ref is not None else {}),
        }
        if not row["check"]["ok"]:
            what = "output or top-MLP input" + (", loss or post-step output" if train_ref else "")
            row.update(status="failed", reason=f"{what} differs from OOTB by {diff:.3g}")
            continue
        cycle = itertools.cycle(batches)
        if mode == "train":

            def step(model=model, opt=opt, cycle=cycle):
                return model.train_step(next(cycle), opt)
        else:

            def step(model=model, cycle=cycle):
                return model.infer(next(cycle))

        steps_by_impl[impl] = step
    model = opt = step = cycle = None
    measured, errors = time_steps_interleaved(steps_by_impl, steps, warmup)
    steps_by_impl.clear()
    gc.collect()

    base_score = None
    for impl, row in zip(impls, rows, strict=True):
        if impl in errors:
            row.update(status="failed", reason=f"error: {errors[impl]}")
        if impl not in measured:
            on_row(row)
            continue
        m = measured[impl]
        score = cfg.batch_size / m.stats.median
        if impl == "ootb":
            base_score = score
        row.update(
            status="ok",
            reason=None,
            score=score,
            speedup_vs_ootb=None if base_score is None else score / base_score,
            **m.row_fields(),
            **latency_fields(
                m.samples_s,
                cfg.latency_target_ms if mode == "infer" else None,
                cfg.latency_percentile if mode == "infer" else None,
            ),
        )
        on_row(row)
    return rows


def cli_model(args, con) -> int:
    """`python -m pydeepbench model MODEL --config NAME ...` (parser in cli.py)."""

    from pydeepbench import proxy, report
    from pydeepbench.cli import csv_list
    from pydeepbench.models import dlrm

    if args.model not in MODELS:
        raise ValueError(f"unknown model {args.model!r}; models: {', '.join(MODELS)}")
    # Flags are checked here, so that a bad value names its flag (not the config file's
    # field) and 0 is refused rather than taken for "not given" (see _check_steps).
    for flag, v in (
        ("--batch-size", args.batch_size),
        ("--row-cap", args.row_cap),
        ("--steps", args.steps),
        ("--warmup", args.warmup),
    ):
        if v is not None and v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    cfg = dlrm.load_config(args.config).with_overrides(
        batch_size=args.batch_size, row_cap=args.row_cap
    )
    impls = csv_list(args.impl, "--impl")
    modes = csv_list(args.mode, "--mode") if args.mode is not None else list(cfg.modes)
    for i in impls:
        if i not in dlrm.IMPLS:
            raise ValueError(f"unknown implementation {i!r}; use {', '.join(dlrm.IMPLS)}")
    for m in modes:
        if m not in dlrm.MODES:
            raise ValueError(f"unknown mode {m!r}; use {', '.join(dlrm.MODES)}")
    steps = cfg.steps if args.steps is None else args.steps
    warmup = cfg.warmup if args.warmup is None else args.warmup
    path = args.json or report.default_json_path(f"model-{args.model}-{cfg.name}")
    report.refuse_directory("--json", path)
    run_info = {
        "command": "model",
        "model": args.model,
        "config": cfg.name,
        "config_path": cfg.path,
        "impls": impls,
        "modes": modes,
        "batch_size": cfg.batch_size,
        "row_cap": cfg.row_cap,
        "steps": steps,
        "warmup": warmup,
        "dense_impl": args.dense_impl,
        "emb_dtype": args.emb_dtype,
    }
    writer = report.JsonWriter(path, system.collect(), None, run_info)
    con.print(
        f"{args.model} {cfg.name} v{cfg.version}: batch {cfg.batch_size}, row cap "
        f"{cfg.row_cap} ({cfg.tables_capped} of {cfg.tables} tables capped, "
        f"{cfg.table_bytes() / 2**30:.2f} GiB per copy), {warmup} warm-up + {steps} timed steps"
    )
    rows = []
    for mode in modes:
        rows += run_mode(
            cfg,
            mode,
            impls,
            steps=steps,
            warmup=warmup,
            dense_impl=args.dense_impl,
            emb_dtype=args.emb_dtype,
            on_row=lambda r: writer.add([r]),
        )
    writer.close()
    con.print(proxy.detail_table(rows))
    con.print(proxy.text_table(proxy.entries(rows)))
    for line in proxy.notes(rows) + [f"score: {SCORE_CONVENTION}", f"results: {path}"]:
        con.print(escape(line))
    return 1 if any(r["status"] == "failed" for r in rows) else 0

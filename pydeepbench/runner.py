"""One benchmark sweep: for each case and implementation, make seeded inputs, run once,
check against the reference, time with the harness, and emit a result row."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from pydeepbench import _native, harness, registry, roofline, system
from pydeepbench.check import compare
from pydeepbench.ops._spec import dtype_name, matmul_precision, storage_dtype
from pydeepbench.shapes import Case


@dataclass
class SweepConfig:
    op: str
    impls: list[str]
    dtypes: list[torch.dtype | str]  # torch dtypes, or _spec.TF32
    device: str
    harness: harness.HarnessConfig
    shape_set: str
    # Time a case's impls side by side (harness.measure_interleaved), not one after another.
    interleave: bool = True


def _base_row(cfg: SweepConfig, impl: str, dtype: torch.dtype, case: Case) -> dict:
    return {
        "op": cfg.op,
        "impl": impl,
        "device": cfg.device,
        "dtype": dtype_name(dtype),
        "set": cfg.shape_set,
        "case": case.name,
        "shape": dict(case.shape),
        "seed": case.seed,
        "mode": cfg.harness.mode,
    }


def _extra(inputs: dict, variant: dict) -> dict:
    """Inputs the reference needs beyond what an impl is called with (e.g. rows to observe)."""
    return {k: v for k, v in inputs.items() if k not in variant and k != "batches"}


def _skip(row: dict, reason: str, status: str = "skipped") -> dict:
    row.update(status=status, reason=reason)
    return row


def run_case(
    cfg: SweepConfig,
    case: Case,
    dtype: torch.dtype | str,
    peaks: roofline.Peaks | None,
    flusher: harness.CacheFlusher | None,
) -> list[dict]:
    """All implementations on one (case, dtype); one reference shared by all of them.
    `dtype` is the row's precision: a torch dtype, or TF32 (fp32 tensors)."""
    with matmul_precision(cfg.device, dtype):
        return _run_case(cfg, case, dtype, peaks, flusher)


def _run_case(
    cfg: SweepConfig,
    case: Case,
    dtype: torch.dtype | str,
    peaks: roofline.Peaks | None,
    flusher: harness.CacheFlusher | None,
) -> list[dict]:
    spec = registry.get_op(cfg.op)
    store = storage_dtype(dtype)  # what the tensors are; `dtype` names the row's precision
    rows = []
    runnable = []
    for name in cfg.impls:
        impl = registry.get_impl(cfg.op, name)
        row = _base_row(cfg, name, dtype, case)
        why = impl.why_not(cfg.device, dtype) or impl.supports(case.shape, store, cfg.device)
        if why:
            rows.append(_skip(row, why))
        else:
            runnable.append((impl, row))
    if not runnable:
        return rows

    # Host memory holds the footprint (on a GPU, an upper bound for the host's share: the
    # float64 reference and the gate's copies); a GPU also its device_bytes.
    needs = {"cpu": spec.footprint_bytes(case.shape, store)}
    if cfg.device != "cpu":
        needs[cfg.device] = spec.device_bytes(case.shape, store)
    _native.release_pool_cache()
    haves = {d: system.available_memory_bytes(d) for d in needs}  # before the inputs exist

    def shortfall(copies: int) -> str | None:
        for d, need in needs.items():
            if why := system.memory_shortfall(copies * need, haves[d]):
                return why if d == "cpu" else f"{why} on {d}"
        return None

    if reason := shortfall(1):
        return rows + [_skip(row, reason) for _, row in runnable]

    inputs = spec.make_inputs(case.shape, store, cfg.device, case.seed)
    variants = spec.variants(inputs)
    checked_variants = len(variants) if spec.check_every_variant else 1
    refs = {}  # variant -> reference, made when first needed and shared by the impls

    def ref(i: int) -> torch.Tensor:
        if i not in refs:
            refs[i] = spec.reference(**variants[i], **_extra(inputs, variants[i]))
        return refs[i]

    ref(0)  # before any impl runs (a training impl updates its own copy of the state)
    tol = spec.tolerance(dtype)
    flops, nbytes = spec.flops(case.shape), spec.bytes(case.shape, store)

    def checked(impl, row) -> list[dict] | None:
        """The impl's prepared inputs once its output passed the gate on every variant it
        will be timed on; else a failed row."""
        row.update(flops=flops, bytes=nbytes)
        worst = None
        try:
            own = impl.prepare(variants) if impl.prepare else variants
            for i in range(checked_variants):
                out = impl.fn(**own[i])
                if cfg.device.startswith("cuda"):
                    torch.cuda.synchronize()
                chk = compare(spec.observe(out, inputs), ref(i), tol)
                if worst is None or not chk.ok or chk.max_abs_err > worst.max_abs_err:
                    worst = chk
                if not chk.ok:
                    break
        except Exception as e:  # an impl bug must not end the sweep; it is recorded
            rows.append(_skip(row, f"error: {type(e).__name__}: {e}", "failed"))
            return None
        row["check"] = {
            "ok": worst.ok,
            "max_abs_err": worst.max_abs_err,
            "max_rel_err": worst.max_rel_err,
            "atol": worst.atol,
            "rtol": worst.rtol,
            "mismatched": worst.mismatched,
            "variants": i + 1,
        }
        if not worst.ok:
            where = f" (input variant {i})" if checked_variants > 1 else ""
            rows.append(_skip(row, f"wrong result{where}: {worst.message}", "failed"))
            return None
        return own

    def timed(impl, own) -> Callable[[], object]:
        cycle = itertools.cycle(own)  # fresh data per call where the op provides variants
        return lambda fn=impl.fn, cycle=cycle: fn(**next(cycle))

    # Side by side when every impl's inputs fit in memory at once (the footprint counted
    # once per impl, a safe upper bound); otherwise one after the other.
    together = cfg.interleave and len(runnable) > 1
    together = together and shortfall(len(runnable)) is None
    if together:
        ready = [(i, r, own) for i, r in runnable if (own := checked(i, r)) is not None]
        refs.clear()  # every impl is checked: the references need not be held while timed
        while ready:  # until a timing round ends without an impl raising
            errors: dict[int, Exception] = {}
            fns = [_guarded(timed(impl, own), errors, k) for k, (impl, _, own) in enumerate(ready)]
            try:
                ms = harness.measure_interleaved(fns, cfg.harness, flush=flusher, device=cfg.device)
            except Exception:
                if not errors:  # not an impl's: ours
                    raise
                for k in sorted(errors, reverse=True):
                    _, row, _ = ready.pop(k)
                    rows.append(_timed_failure(row, errors[k]))
                continue
            finally:
                del fns
            for (_, row, _), m in zip(ready, ms, strict=True):
                rows.append(_timed_row(row, m, flops, nbytes, dtype, peaks, cfg, len(ms) > 1))
            break
        del ready
    else:
        for impl, row in runnable:
            own = checked(impl, row)
            if own is None:
                continue
            errors = {}
            fn = _guarded(timed(impl, own), errors, 0)
            try:
                m = harness.measure(fn, cfg.harness, flush=flusher, device=cfg.device)
            except Exception:
                if not errors:
                    raise
                rows.append(_timed_failure(row, errors[0]))
                continue
            finally:
                del own, fn
            rows.append(_timed_row(row, m, flops, nbytes, dtype, peaks, cfg, False))
    _add_speedups(rows)
    return rows


def _guarded(fn: Callable[[], object], errors: dict, key) -> Callable[[], object]:
    """fn, recording its first exception under `key` before it propagates: which impl
    raised while being timed (it passed the gate, on other calls or inputs)."""

    def call():
        try:
            return fn()
        except Exception as e:
            errors.setdefault(key, e)
            raise

    return call


def _timed_failure(row: dict, e: Exception) -> dict:
    return _skip(row, f"error while timed: {type(e).__name__}: {e}", "failed")


def _timed_row(row, m, flops, nbytes, dtype, peaks, cfg, interleaved: bool) -> dict:
    st = m.stats
    row.update(status="ok", reason=None, **m.row_fields())
    row["harness"]["interleaved"] = interleaved
    if cfg.device.startswith("cuda"):  # clocks, power, throttle reasons after timing
        row["telemetry"] = system.gpu_telemetry(torch.cuda.current_device())
    if peaks is not None:
        gathers = registry.get_op(cfg.op).gathers
        row.update(roofline.place(flops, nbytes, st.median, dtype, peaks, gathers))
    else:
        row.update(
            tflops=flops / st.median / 1e12,
            gbps=nbytes / st.median / 1e9,
            pct_peak_flops=None,
            pct_peak_bw=None,
            pct_peak_gather=None,
        )
    return row


def _add_speedups(rows: list[dict]) -> None:
    base = next((r for r in rows if r["impl"] == "ootb" and r["status"] == "ok"), None)
    for r in rows:
        if r["status"] == "ok" and base is not None:
            r["speedup_vs_ootb"] = base["time_s"]["median"] / r["time_s"]["median"]
        else:
            r["speedup_vs_ootb"] = None


def sweep(
    cfg: SweepConfig,
    cases: Iterable[Case],
    peaks: roofline.Peaks | None,
    on_rows: Callable[[list[dict]], None],
) -> list[dict]:
    flusher = harness.CacheFlusher(cfg.device) if cfg.harness.mode == "cold" else None
    all_rows = []
    for case in cases:
        for dtype in cfg.dtypes:
            rows = run_case(cfg, case, dtype, peaks, flusher)
            gc.collect()  # the case's inputs and prepared tables, before the next case
            all_rows.extend(rows)
            on_rows(rows)
    return all_rows

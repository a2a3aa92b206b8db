"""The correctness gate: compare an implementation's output with the op's reference.

Tolerances are (atol, rtol) per dtype in one table per op (see each op's TOLERANCES);
an element passes when |out - ref| <= atol + rtol * |ref|, as torch.testing.assert_close
does. NaN or Inf where the reference is finite fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


@dataclass
class CheckResult:
    ok: bool
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    mismatched: int
    message: str = ""


def tolerance_for(table: dict[torch.dtype, Tolerance], dtype: torch.dtype) -> Tolerance:
    if dtype not in table:
        raise ValueError(f"no tolerance for {dtype} in this op's table")
    return table[dtype]


def compare(out: torch.Tensor, ref: torch.Tensor, tol: Tolerance) -> CheckResult:
    """Compare in float64; `ref` is the high-precision reference."""
    if tuple(out.shape) != tuple(ref.shape):
        return CheckResult(
            False,
            float("inf"),
            float("inf"),
            tol.atol,
            tol.rtol,
            ref.numel(),
            f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}",
        )
    if out.is_complex() or ref.is_complex():  # float64 would drop the imaginary part
        raise TypeError("compare: complex tensors are not supported")
    o = out.detach().to("cpu", torch.float64)
    r = ref.detach().to("cpu", torch.float64)
    if o.numel() == 0:
        return CheckResult(True, 0.0, 0.0, tol.atol, tol.rtol, 0)
    # Equal values (an infinity of the reference's sign included) and NaN where the
    # reference has NaN match exactly. Elsewhere the tolerance applies where the reference
    # is finite only: rtol * inf had passed any output against an infinite reference, and
    # inf - inf (a NaN) had failed an equal infinity.
    inf = float("inf")
    same = (o == r) | (torch.isnan(o) & torch.isnan(r))
    diff = torch.where(same, 0.0, (o - r).abs().nan_to_num(nan=inf, posinf=inf))
    close = torch.isfinite(r) & (diff <= tol.atol + tol.rtol * r.abs())
    bad = ~(same | close)
    mismatched = int(bad.sum())
    max_abs = float(diff.max())  # infinite when an infinity or NaN is off
    rel = torch.where(same, 0.0, diff / r.abs().clamp_min(1e-30))
    max_rel = float(rel.nan_to_num(nan=inf, posinf=inf).max())
    msg = ""
    if mismatched:
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        msg = (
            f"{mismatched}/{o.numel()} elements outside atol={tol.atol:g} rtol={tol.rtol:g}; "
            f"first at {idx}: got {float(o[idx]):.6g}, expected {float(r[idx]):.6g}"
        )
    return CheckResult(mismatched == 0, max_abs, max_rel, tol.atol, tol.rtol, mismatched, msg)

"""EmbeddingBag: pooled lookups into one or many tables (DLRM's sparse features).

Layout of the batched multi-table form (`embedding_bags`), TorchRec's KJT layout: T tables
packed in one `weight` (R_total, D); `table_offsets` (T+1,) int64, table t owning rows
[table_offsets[t], table_offsets[t+1]); `indices` (N,) int32/int64 holding each table's
local row ids; `offsets` (T*B+1,) of the same dtype, bag b of table t spanning
indices[offsets[t*B+b] : offsets[t*B+b+1]] (all of table 0's bags first). Output: fp32
(B, T*D), out[b, t*D:(t+1)*D] the pooled vector of bag (t, b), the layout DLRM's
interaction concatenates. Modes sum/mean/max with torch semantics (empty bags give zeros);
per_sample_weights with sum only. Accumulation is fp32 for every weight dtype.

Weight dtypes: fp32, bf16, fp16, and uint8 for inference: 8-bit rowwise-quantized rows in
FBGEMM's fused layout (what `torch.ops.quantized.embedding_bag_byte_prepack` makes and
DLRM's quantized inference reads): each row is D uint8 codes followed by that row's fp32
scale and fp32 bias, so the weight is (R_total, D + 8) and a row's values are
scale * code + bias. `quantize_rows` and `dequantize_rows` convert. Such rows pool to fp32
(also in the single-table `embedding_bag`, as FBGEMM's op returns), take fp32
per_sample_weights, and have no gradient (their per_sample_weights do, through impl native).

Counting (per call):
  FLOPs = N*D adds (2*N*D when weighted) + B*T*D divisions for mean (uint8 rows' one
          dequantizing FMA per element is not counted: the op is memory bound).
  Bytes = rows gathered (N*D*element size, duplicates counted: each lookup reads its row;
          N*(D+8) for uint8 rows, whose scale and bias are read too)
          + indices (N*index size) + offsets ((T*B+1)*index size)
          + per_sample_weights (N*element size: the weight's dtype, as torch takes
          them; 4 bytes for uint8 rows) + output written (B*T*D*4: the fp32 output of
          the optimized impls; OOTB writes bf16/fp16 outputs for such weights, half that).
Data: each timed call uses the next of `ROTATIONS` index batches drawn before timing from
the case's distribution (uniform, or Zipf over a seeded permutation of rows, so hot rows are
scattered), never the same indices on consecutive calls. Tables larger than the case's
`row_cap` are capped to it; results record the cap in the shape.
"""

from __future__ import annotations

import numbers

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from pydeepbench import _native
from pydeepbench.check import Tolerance
from pydeepbench.ops import _triton
from pydeepbench.ops._spec import (
    STRIDED,
    OpSpec,
    explain_unaddressable,
    refuse_tangents,
    unaddressable,
)
from pydeepbench.registry import get_impl, register_impl, register_op

MODES = ("sum", "mean", "max")
STEP_MODES = ("sum", "mean")  # the sparse optimizer steps' (max has no fused update)
MODE_CODES = {"sum": 0, "mean": 1, "max": 2}
INDEX_DTYPES = {"int32": torch.int32, "int64": torch.int64}
ROTATIONS = 8

# The reference sums the same (rounded) weights in float64; fp32 accumulation of up to a
# few hundred O(1) rows stays within 1e-4. OOTB returns bf16/fp16 outputs for bf16/fp16
# weights, so those tolerances cover one final rounding of an O(10) sum.
TOLERANCES = {
    torch.float32: Tolerance(atol=1e-4, rtol=1e-4),
    torch.bfloat16: Tolerance(atol=2e-2, rtol=1.6e-2),
    torch.float16: Tolerance(atol=1e-2, rtol=2e-3),
    # The reference pools the same dequantized rows: only the fp32 accumulation differs.
    torch.uint8: Tolerance(atol=1e-4, rtol=1e-4),
}
Q8_EXTRA = 8  # bytes after a uint8 row's D codes: its fp32 scale and fp32 bias


def quantize_rows(weight: torch.Tensor) -> torch.Tensor:
    """fp32 (R, D) -> uint8 (R, D + 8) 8-bit rowwise rows (FBGEMM's fused layout: codes,
    fp32 scale, fp32 bias), as DLRM's quantized inference prepares its tables. Takes any
    floating-point (R, D) table with D >= 1 (converted to fp32 first)."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(
            f"quantize_rows: weight must be a torch.Tensor, got {type(weight).__name__}"
        )
    if not weight.is_floating_point() or weight.dim() != 2 or weight.shape[1] < 1:
        raise ValueError(
            f"quantize_rows: needs a 2-D floating-point table (R, D) with D >= 1, got a "
            f"{weight.dim()}-D {weight.dtype} tensor of shape {tuple(weight.shape)}"
        )
    if weight.is_meta:  # torch's meta kernel for the prepack returns float32, not uint8
        raise ValueError("quantize_rows: takes a table with data, not a meta tensor")
    return torch.ops.quantized.embedding_bag_byte_prepack(weight.float().contiguous())


def dequantize_rows(rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (R, D + 8) rowwise rows -> (R, D) values scale * code + bias, in `dtype` (a
    floating-point dtype). `rows` must be 2-D uint8 with more than 8 columns: D >= 1 codes,
    then the row's 4-byte fp32 scale and 4-byte fp32 bias."""
    if not isinstance(rows, torch.Tensor):
        raise TypeError(f"dequantize_rows: rows must be a torch.Tensor, got {type(rows).__name__}")
    if rows.dtype != torch.uint8 or rows.dim() != 2 or rows.shape[1] <= Q8_EXTRA:
        raise ValueError(
            f"dequantize_rows: needs 2-D uint8 rows (R, D + 8) with more than {Q8_EXTRA} "
            f"columns (D codes, then a 4-byte fp32 scale and a 4-byte fp32 bias), got a "
            f"{rows.dim()}-D {rows.dtype} tensor of shape {tuple(rows.shape)}"
        )
    if not dtype.is_floating_point:
        raise ValueError(f"dequantize_rows: dtype must be a floating-point dtype, got {dtype}")
    D = rows.shape[1] - Q8_EXTRA
    # Copied into a fresh buffer: a view of the parameters starts D bytes into its storage
    # (and .contiguous() keeps a single row's view), which view(float32) cannot take.
    params = torch.empty(rows.shape[0], Q8_EXTRA, dtype=torch.uint8, device=rows.device)
    params.copy_(rows[:, D:])
    # In fp32 (fp64 for fp64), rounded once to `dtype`: bf16 arithmetic rounded the scale,
    # the bias and the product each (1 ulp off the rounded fp32 value).
    calc = torch.float64 if dtype == torch.float64 else torch.float32
    params = params.view(torch.float32).to(calc)  # (R, 2): scale, bias
    return (rows[:, :D].to(calc) * params[:, :1] + params[:, 1:]).to(dtype)


def row_dim(weight: torch.Tensor) -> int:
    """D of a table: its columns, less the scale and bias of uint8 rows."""
    return weight.shape[1] - (Q8_EXTRA if weight.dtype == torch.uint8 else 0)


def _row_bytes(D: int, dtype: torch.dtype) -> int:
    return D + Q8_EXTRA if dtype == torch.uint8 else D * dtype.itemsize


def _psw_bytes(dtype: torch.dtype) -> int:
    return 4 if dtype == torch.uint8 else dtype.itemsize


def capped_rows(s: dict) -> list[int]:
    rows = s["rows"] * s["tables"] if len(s["rows"]) == 1 else s["rows"]
    return [min(r, s["row_cap"]) if s["row_cap"] else r for r in rows]


def poolings(s: dict) -> list[int]:
    return s["pooling"] * s["tables"] if len(s["pooling"]) == 1 else s["pooling"]


@register_op("embedding_bags")
class EmbeddingBags(OpSpec):
    gathers = True
    fields = {
        "tables": (int, None, 1),
        "rows": (list, None, 1),
        "dim": (int, None, 1),
        "batch": (int, None, 1),
        "pooling": (list, None, 0),
        "row_cap": (int, 0, 0),
        "distribution": (str, "uniform", ("uniform", "zipf")),
        "alpha": (float, 1.05, 0.0),
        "weighted": (bool, False, 0),
        "mode": (str, "sum", MODES),
        "index_dtype": (str, "int64", tuple(INDEX_DTYPES)),
    }
    tolerances = TOLERANCES

    def validate_shape(self, raw: dict) -> dict:
        s = super().validate_shape(raw)
        for key in ("rows", "pooling"):
            if len(s[key]) not in (1, s["tables"]):
                raise ValueError(
                    f"shape field {key!r} needs 1 or {s['tables']} (tables) "
                    f"entries, got {len(s[key])}"
                )
        if s["weighted"] and s["mode"] != "sum":
            raise ValueError("weighted (per_sample_weights) needs mode 'sum'")
        return s

    def describe(self, s: dict) -> str:
        pool = poolings(s)
        lookups = sum(pool)
        # Fields off their defaults too: a --shape case's name is its key in comparisons.
        default = {k: f[1] for k, f in self.fields.items()}
        extra = [
            f"alpha={s['alpha']:g}"
            if s["distribution"] == "zipf" and s["alpha"] != default["alpha"]
            else "",
            "weighted" if s["weighted"] else "",
            s["mode"] if s["mode"] != default["mode"] else "",
            s["index_dtype"] if s["index_dtype"] != default["index_dtype"] else "",
        ]
        return ",".join(
            [f"T={s['tables']},D={s['dim']},B={s['batch']},L={lookups / len(pool):.3g}",
             s["distribution"], *filter(None, extra)]
        )  # fmt: skip

    def lookups(self, s: dict) -> int:
        return s["batch"] * sum(poolings(s))

    def flops(self, s: dict) -> float:
        n, D = self.lookups(s), s["dim"]
        return float(
            n * D * (2 if s["weighted"] else 1)
            + (s["batch"] * s["tables"] * D if s["mode"] == "mean" else 0)
        )

    def bytes(self, s: dict, dtype: torch.dtype) -> float:
        n, D, B, T = self.lookups(s), s["dim"], s["batch"], s["tables"]
        isz = INDEX_DTYPES[s["index_dtype"]].itemsize
        return float(
            n * _row_bytes(D, dtype)
            + n * isz
            + (T * B + 1) * isz
            + (n * _psw_bytes(dtype) if s["weighted"] else 0)
            + B * T * D * 4
        )

    def footprint_bytes(self, s: dict, dtype: torch.dtype) -> int:
        n, D, B, T = self.lookups(s), s["dim"], s["batch"], s["tables"]
        tables = sum(capped_rows(s)) * _row_bytes(D, dtype)
        # Beside the tables, the larger of: the fp32 tables make_inputs draws and converts
        # (other dtypes), and the native impls' own copy of the tables (`_own_tables`).
        drawn = sum(capped_rows(s)) * D * 4 if dtype != torch.float32 else 0
        weights = tables + max(drawn, tables)
        per_batch = n * (8 + 8 + 4) + (T * B + 1) * 8
        gathered = n * D * 8  # float64 rows gathered by the reference
        return weights + ROTATIONS * 2 * per_batch + gathered + 8 * B * T * D * 8

    def make_inputs(self, s: dict, dtype: torch.dtype, device: str, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        rows, pool = capped_rows(s), poolings(s)
        table_offsets = torch.tensor([0] + rows, dtype=torch.int64).cumsum(0)
        weight = torch.randn(int(table_offsets[-1]), s["dim"], generator=g)
        weight = quantize_rows(weight) if dtype == torch.uint8 else weight.to(dtype)
        psw_dtype = torch.float32 if dtype == torch.uint8 else dtype
        samplers = [_sampler(r, s["distribution"], s["alpha"], g) for r in rows]
        batches = []
        for _ in range(ROTATIONS):
            idx, lengths = [], []
            for t in range(s["tables"]):
                idx.append(samplers[t](s["batch"] * pool[t]))
                lengths.append(torch.full((s["batch"],), pool[t], dtype=torch.int64))
            itype = INDEX_DTYPES[s["index_dtype"]]
            offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(lengths).cumsum(0)])
            indices = torch.cat(idx)
            # In the weight's dtype, as torch's EmbeddingBag takes them (fp32 for uint8 rows,
            # as FBGEMM's op takes them).
            psw = torch.rand(indices.numel(), generator=g).to(psw_dtype) if s["weighted"] else None
            batches.append(
                {
                    "indices": indices.to(device=device, dtype=itype),
                    "offsets": offsets.to(device=device, dtype=itype),
                    "per_sample_weights": None if psw is None else psw.to(device),
                }
            )
        return {
            "weight": weight.to(device),
            "table_offsets": table_offsets.to(device),
            "mode": s["mode"],
            "batches": batches,
        }

    def variants(self, inputs: dict) -> list[dict]:
        common = {k: v for k, v in inputs.items() if k != "batches"}
        return [{**common, **b} for b in inputs["batches"]]

    def reference(self, weight, table_offsets, indices, offsets, mode, per_sample_weights):
        """float64 pooling of the same rows, table by table (only gathered rows are
        upcast, so the reference needs no float64 copy of the tables)."""
        T = table_offsets.numel() - 1
        B = (offsets.numel() - 1) // T
        offsets, indices = offsets.cpu().long(), indices.cpu().long()
        outs = []
        for t in range(T):
            lo, hi = int(offsets[t * B]), int(offsets[(t + 1) * B])
            rows = weight[int(table_offsets[t]) + indices[lo:hi]].cpu()
            rows = (
                dequantize_rows(rows, torch.float64) if rows.dtype == torch.uint8 else rows.double()
            )
            psw = None if per_sample_weights is None else per_sample_weights[lo:hi].cpu().double()
            outs.append(
                F.embedding_bag(
                    torch.arange(hi - lo),
                    rows,
                    offsets[t * B : (t + 1) * B] - lo,
                    mode=mode,
                    per_sample_weights=psw,
                )
            )
        return torch.cat(outs, dim=1)


def _sampler(rows: int, distribution: str, alpha: float, g: torch.Generator):
    if distribution == "uniform":
        return lambda n: torch.randint(rows, (n,), generator=g)
    # Zipf over ranks 1..rows (P(k) ~ k^-alpha), ranks mapped to rows by a fixed permutation.
    k = torch.arange(1, rows + 1, dtype=torch.float64)
    cdf = (k**-alpha).cumsum(0)
    cdf /= cdf[-1].clone()
    perm = torch.randperm(rows, generator=g)

    def draw(n):
        ranks = torch.searchsorted(cdf, torch.rand(n, generator=g, dtype=torch.float64))
        return perm[ranks.clamp_max(rows - 1)]

    return draw


# ---- public API ------------------------------------------------------------------------


def _require_tensors(fn: str, names: tuple, values: tuple, optional=()) -> None:
    """TypeError naming the first of `values` that is not a tensor (or None, for a name in
    `optional`)."""
    for name, t in zip(names, values, strict=True):
        if not (isinstance(t, torch.Tensor) or (t is None and name in optional)):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")


def _require_dense(fn: str, names: tuple, values: tuple) -> None:
    """ValueError naming the first of `values` in a sparse (or other non-strided) layout,
    which every impl here would otherwise fail on inside torch or the binding."""
    for name, t in zip(names, values, strict=True):
        if t is not None and t.layout is not torch.strided:
            raise ValueError(f"{fn}: {name} is a {t.layout} tensor; dense (strided) ones only")


def _mode_code(fn: str, mode: str, modes: tuple = MODES) -> int:
    if mode not in modes:
        raise ValueError(f"{fn}: mode must be one of {modes}, got {mode!r}")
    return MODE_CODES[mode]


_BATCHED_ARGS = ("weight", "table_offsets", "indices", "offsets", "per_sample_weights")


def _check_batched(weight, table_offsets, indices, offsets, mode, per_sample_weights):
    if not (
        isinstance(weight, torch.Tensor)
        and isinstance(table_offsets, torch.Tensor)
        and isinstance(indices, torch.Tensor)
        and isinstance(offsets, torch.Tensor)
        and (per_sample_weights is None or isinstance(per_sample_weights, torch.Tensor))
    ):
        _require_tensors(
            "embedding_bags",
            _BATCHED_ARGS,
            (weight, table_offsets, indices, offsets, per_sample_weights),
            optional=("per_sample_weights",),
        )
    tensors = (weight, table_offsets, indices, offsets, per_sample_weights)
    _require_dense("embedding_bags", _BATCHED_ARGS, tensors)
    if mode not in MODES:
        _mode_code("embedding_bags", mode)
    if weight.dim() != 2:
        raise ValueError(f"embedding_bags: weight must be 2-D (rows, dim), got {weight.dim()}-D")
    q8 = weight.dtype == torch.uint8
    if q8 and weight.shape[1] <= Q8_EXTRA:
        raise ValueError(
            f"embedding_bags: a uint8 (8-bit rowwise) weight needs D + 8 columns (D codes, "
            f"then the fp32 scale and bias), got {weight.shape[1]}"
        )
    if indices.dtype not in (torch.int32, torch.int64) or offsets.dtype != indices.dtype:
        raise ValueError(
            f"embedding_bags: indices and offsets must both be int32 or both "
            f"int64, got {indices.dtype} and {offsets.dtype}"
        )
    if table_offsets.dtype != torch.int64:
        raise ValueError(
            f"embedding_bags: table_offsets must be torch.int64, got {table_offsets.dtype}"
        )
    if indices.dim() != 1 or offsets.dim() != 1:
        raise ValueError("embedding_bags: indices and offsets must be 1-D")
    if table_offsets.dim() != 1 or table_offsets.numel() < 2:
        raise ValueError("embedding_bags: table_offsets must be 1-D with T+1 >= 2 entries")
    T = table_offsets.numel() - 1
    if offsets.numel() == 0 or (offsets.numel() - 1) % T:
        raise ValueError(
            f"embedding_bags: offsets has {offsets.numel()} entries, not T*B+1 for T={T} tables"
        )
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError("embedding_bags: per_sample_weights needs mode='sum'")
        if per_sample_weights.shape != indices.shape:
            raise ValueError(
                f"embedding_bags: per_sample_weights has shape "
                f"{tuple(per_sample_weights.shape)}, indices {tuple(indices.shape)}"
            )
        if q8 and per_sample_weights.dtype != torch.float32:
            raise ValueError(
                f"embedding_bags: per_sample_weights for uint8 rows must be float32, got "
                f"{per_sample_weights.dtype}"
            )
        if per_sample_weights.dtype not in (weight.dtype, torch.float32):
            raise ValueError(
                f"embedding_bags: per_sample_weights must be in the weight's dtype "
                f"({weight.dtype}, as torch takes them) or float32, got "
                f"{per_sample_weights.dtype}"
            )
    devices = {
        t.device
        for t in (weight, table_offsets, indices, offsets, per_sample_weights)
        if t is not None
    }
    if len(devices) != 1:
        raise ValueError(f"embedding_bags: tensors are on different devices: {devices}")


def _check_values(weight, table_offsets, indices, offsets):
    """Host-side range checks for impls that cannot check on the device (triton, CUDA)."""
    to = table_offsets.cpu()
    T = to.numel() - 1
    if int(to[0]) != 0 or int(to[-1]) != weight.shape[0] or bool((to[1:] < to[:-1]).any()):
        raise ValueError(f"embedding_bags: table_offsets must rise from 0 to {weight.shape[0]}")
    off = offsets.cpu().long()
    # The native binding's messages: which condition failed, and where.
    if int(off[0]) != 0:
        raise ValueError(f"embedding_bags: offsets[0] must be 0, got {int(off[0])}")
    if int(off[-1]) != indices.numel():
        raise ValueError(
            f"embedding_bags: offsets[-1] = {int(off[-1])} must equal the number of indices "
            f"{indices.numel()}"
        )
    drops = (off[1:] < off[:-1]).nonzero()
    if drops.numel():
        i = int(drops[0])
        raise ValueError(
            f"embedding_bags: offsets must be non-decreasing: offsets[{i + 1}] = "
            f"{int(off[i + 1])} < offsets[{i}] = {int(off[i])}"
        )
    B = (off.numel() - 1) // T
    idx = indices.cpu().long()
    for t in range(T):
        seg = idx[int(off[t * B]) : int(off[(t + 1) * B])]
        n_rows = int(to[t + 1] - to[t])
        bad = (seg < 0) | (seg >= n_rows)
        if bool(bad.any()):
            pos = int(off[t * B]) + int(bad.nonzero()[0])
            raise ValueError(
                f"embedding_bags: indices[{pos}] = {int(idx[pos])} is out of range "
                f"for table {t} with {n_rows} rows"
            )


def embedding_bags(
    weight: torch.Tensor,
    table_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    impl: str = "native",
) -> torch.Tensor:
    """Pooled lookups into T packed tables in one call; returns fp32 (B, T*D)."""
    _check_batched(weight, table_offsets, indices, offsets, mode, per_sample_weights)
    chosen = get_impl("embedding_bags", impl)
    why = chosen.why_not(weight.device.type, weight.dtype)
    if why:
        raise ValueError(f"embedding_bags impl {impl!r} cannot run here: {why}")
    # Here, not in the impls, which the runner times: ours (not torch's per-table ones)
    # read tensors by address, so a weight holding -x in memory (a negative view) is
    # resolved, and a forward-AD tangent, which they would drop, is refused.
    if chosen.prepare is not _per_table:
        if fwAD._current_level >= 0:
            refuse_tangents("embedding_bags", impl, ("weight", weight), ("psw", per_sample_weights))
        if weight.is_neg():
            weight = weight.resolve_neg()
    args = dict(
        weight=weight,
        table_offsets=table_offsets,
        indices=indices,
        offsets=offsets,
        mode=mode,
        per_sample_weights=per_sample_weights,
    )
    if impl != "native" or weight.device.type != "cpu":  # the C++ binding checks by itself
        _check_values(weight, table_offsets, indices, offsets)
    if chosen.prepare is _per_table:  # ootb and functional take per-table tensors
        psw = per_sample_weights
        if psw is not None and weight.dtype != torch.uint8 and psw.dtype != weight.dtype:
            raise ValueError(
                f"embedding_bags impl {impl!r} (torch's op) takes per_sample_weights in the "
                f"weight's dtype ({weight.dtype}), got {psw.dtype}; impl 'native' takes "
                "float32 ones too"
            )
        return chosen.fn(**_per_table([args])[0])
    try:
        return chosen.fn(**args)
    except (RuntimeError, ValueError) as e:
        named = [(k, args[k]) for k in _BATCHED_ARGS]
        explain_unaddressable("embedding_bags", impl, e, *named)
        raise


def embedding_bag(
    weight: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    include_last_offset: bool = False,
    impl: str = "native",
) -> torch.Tensor:
    """torch.nn.functional.embedding_bag semantics for one table (1-D indices with offsets),
    except the default mode: "sum" here, "mean" in torch (pass mode="mean" for torch's
    default). Accumulates in fp32 and returns the weight's dtype, as torch does (fp32 for
    uint8 rows, as FBGEMM's op)."""
    _require_tensors(
        "embedding_bag",
        ("weight", "indices", "offsets", "per_sample_weights"),
        (weight, indices, offsets, per_sample_weights),
        optional=("per_sample_weights",),
    )
    _require_dense(
        "embedding_bag",
        ("weight", "indices", "offsets", "per_sample_weights"),
        (weight, indices, offsets, per_sample_weights),
    )
    if weight.dim() != 2:
        raise ValueError(f"embedding_bag: weight must be 2-D (rows, dim), got {weight.dim()}-D")
    if indices.dim() != 1 or offsets.dim() != 1:
        raise ValueError("embedding_bag: indices and offsets must be 1-D")
    if offsets.dtype != indices.dtype:
        raise ValueError(
            f"embedding_bag: offsets is {offsets.dtype} but indices is {indices.dtype}"
        )
    if not include_last_offset:  # torch's default: offsets holds bag starts only
        if offsets.numel() == 0 and indices.numel():
            # No bags: no index is looked up, and the result is (0, D), as torch returns.
            if per_sample_weights is not None:
                if per_sample_weights.shape != indices.shape:
                    raise ValueError(
                        f"embedding_bag: per_sample_weights has shape "
                        f"{tuple(per_sample_weights.shape)}, indices {tuple(indices.shape)}"
                    )
                per_sample_weights = per_sample_weights[:0]
            indices = indices[:0]
        offsets = torch.cat([offsets, offsets.new_tensor([indices.numel()])])
    elif offsets.numel() == 0:
        raise ValueError("embedding_bag: include_last_offset needs at least one offset")
    table_offsets = torch.tensor([0, weight.shape[0]], device=weight.device)
    try:
        out = embedding_bags(
            weight,
            table_offsets,
            indices,
            offsets,
            mode=mode,
            per_sample_weights=per_sample_weights,
            impl=impl,
        )
    except (RuntimeError, ValueError) as e:
        # The appended end would be reported as out of order: name the caller's offset.
        n = indices.numel()
        if not include_last_offset and offsets.numel() > 1 and int(offsets[-2]) > n:
            raise ValueError(
                f"embedding_bag: offsets[-1] = {int(offsets[-2])} is past the end of indices "
                f"(length {n})"
            ) from e
        raise
    return out if weight.dtype == torch.uint8 else out.to(weight.dtype)


# ---- implementations -------------------------------------------------------------------


def _module(table: torch.Tensor, mode: str) -> torch.nn.EmbeddingBag:
    """The researcher's module over `table`. from_pretrained wraps the rows in a new leaf
    Parameter, where a gradient would stop: for a table that requires grad (a caller's
    tensor, through the public API) the module reads the table itself, so the gradient
    reaches the caller's weight. The forward (nn.EmbeddingBag's) is the same either way."""
    m = torch.nn.EmbeddingBag.from_pretrained(table, freeze=False, mode=mode)
    if table.requires_grad:
        del m.weight  # the Parameter; a plain tensor attribute takes its place
        m.weight = table
    return m


def _per_table(variants: list[dict]) -> list[dict]:
    """OOTB inputs as the DLRM reference's loader hands them: one (indices, offsets) pair
    per table, and one nn.EmbeddingBag module per table sharing the packed weight."""
    v0 = variants[0]
    to = v0["table_offsets"].tolist()
    T = len(to) - 1
    tables = [v0["weight"][to[t] : to[t + 1]] for t in range(T)]
    # uint8 rows have no module: DLRM's quantized inference calls FBGEMM's op per table,
    # which takes contiguous tables only (a column view of the rows was refused there).
    q8 = v0["weight"].dtype == torch.uint8
    if q8:
        tables = [w.contiguous() for w in tables]
    modules = None if q8 else [_module(w, v0["mode"]) for w in tables]
    out = []
    for v in variants:
        off = v["offsets"]
        B = (off.numel() - 1) // T
        lS_i, lS_o, lS_w = [], [], []
        for t in range(T):
            lo, hi = int(off[t * B]), int(off[(t + 1) * B])
            lS_i.append(v["indices"][lo:hi])
            lS_o.append(off[t * B : (t + 1) * B] - lo)
            psw = v["per_sample_weights"]
            lS_w.append(None if psw is None else psw[lo:hi])
        out.append(
            {
                "modules": modules,
                "qtables": tables if q8 else None,
                "weight": v["weight"],
                "table_offsets": to,
                "mode": v["mode"],
                "lS_i": lS_i,
                "lS_o": lS_o,
                "lS_w": lS_w,
            }
        )
    return out


FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _no_gradient(impl: str, what: str, instead: str) -> ValueError:
    """The error of an impl asked for a gradient it cannot make (grad mode on, an input
    requiring grad): rather than an output that silently drops it."""
    return ValueError(
        f"embedding_bags impl {impl!r} computes no gradient for {what}; use {instead}, or "
        f"call it under torch.no_grad()"
    )


def _wants_grad(weight: torch.Tensor, per_sample_weights: torch.Tensor | None) -> bool:
    """Whether autograd would want a gradient of the call's inputs (a few attribute reads:
    false at once for the benchmark's inputs, which never require grad)."""
    return (
        weight.requires_grad
        or (per_sample_weights is not None and per_sample_weights.requires_grad)
    ) and torch.is_grad_enabled()


# torch 2.13's embedding_bag_byte_rowwise_offsets returns sums whatever mode it is given.
Q8_OOTB_MODES = ("sum",)


def _q8_ootb_mode(s: dict, dtype: torch.dtype, device: str) -> str | None:
    if dtype == torch.uint8 and s["mode"] not in Q8_OOTB_MODES:
        return f"FBGEMM's 8-bit rowwise op pools sums only, not {s['mode']!r}"
    return None


@register_impl(
    "embedding_bags",
    "ootb",
    devices=("cpu", "cuda"),
    dtypes={"cpu": (*FLOAT_DTYPES, torch.uint8), "cuda": FLOAT_DTYPES},
    prepare=_per_table,
    supports=_q8_ootb_mode,
)
def embedding_bags_ootb(modules, qtables, mode, lS_i, lS_o, lS_w, **_):
    """One nn.EmbeddingBag per table in a Python loop, then torch.cat (the DLRM reference;
    uint8 rows: FBGEMM's 8-bit rowwise op per table, as its quantized inference does)."""
    if qtables is not None:
        if mode not in Q8_OOTB_MODES:
            raise ValueError(
                f"embedding_bags impl 'ootb': {_q8_ootb_mode({'mode': mode}, torch.uint8, 'cpu')}"
            )
        if lS_w[0] is not None and lS_w[0].requires_grad and torch.is_grad_enabled():
            # FBGEMM's op registers no autograd kernel: backward would leave .grad None.
            raise _no_gradient(
                "ootb", "per_sample_weights of uint8 rows (FBGEMM's op has none)", "impl 'native'"
            )
        return torch.cat(
            [
                torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
                    q, i, o, False, MODE_CODES[mode], False, w, None, False
                )
                for q, i, o, w in zip(qtables, lS_i, lS_o, lS_w, strict=True)
            ],
            dim=1,
        )
    return torch.cat(
        [
            m(i, o, per_sample_weights=w)
            for m, i, o, w in zip(modules, lS_i, lS_o, lS_w, strict=True)
        ],
        dim=1,
    )


@register_impl(
    "embedding_bags",
    "functional",
    devices=("cpu", "cuda"),
    dtypes=FLOAT_DTYPES,
    prepare=_per_table,
)
def embedding_bags_functional(weight, table_offsets, mode, lS_i, lS_o, lS_w, **_):
    """torch.nn.functional.embedding_bag per table on slices of the packed weight, then cat."""
    to = table_offsets
    return torch.cat(
        [
            F.embedding_bag(i, weight[to[t] : to[t + 1]], o, mode=mode, per_sample_weights=w)
            for t, (i, o, w) in enumerate(zip(lS_i, lS_o, lS_w, strict=True))
        ],
        dim=1,
    )


def _native_unavailable(device: str) -> str | None:
    if device == "cuda":
        return _native.cuda_unavailable()
    why = _native.cpu_unavailable()
    if why is None and not hasattr(_native.cpu(), "embedding_bags_forward"):
        why = "this build of pydeepbench._C has no embedding kernels"
    return why


def _cuda_forward(weight, table_offsets, indices, offsets, mode, per_sample_weights):
    """The CUDA kernel pools one table per launch (warp or sub-warp per bag) straight into
    its column block of the (B, T*D) output. Untested here: no GPU on the CI machines."""
    to = table_offsets.tolist()
    T, D = len(to) - 1, row_dim(weight)
    B = (offsets.numel() - 1) // T
    out = torch.empty(B, T * D, dtype=torch.float32, device=weight.device)
    if B == 0:
        return out
    stream = torch.cuda.current_stream(weight.device).cuda_stream
    bounds = offsets[::B].tolist()  # start of each table's indices, and the end
    # The binding reads per_sample_weights by address with unit stride (a negative view
    # resolved, as the CPU path's _fp32 does; .contiguous() alone keeps the neg bit).
    psw_all = None
    if per_sample_weights is not None:
        psw_all = per_sample_weights.resolve_neg().contiguous()
    # The extension launches on the runtime's current device: make it the tensors' one.
    with torch.cuda.device(weight.device):
        for t in range(T):
            lo, hi = bounds[t], bounds[t + 1]
            local = offsets[t * B : (t + 1) * B + 1] - lo
            psw = None if psw_all is None else _native.arg(psw_all[lo:hi])
            _native.cuda().embedding_bag(
                _native.arg(weight[to[t] : to[t + 1]]),
                _native.arg(indices[lo:hi]),
                _native.arg(local),
                _native.arg(out[:, t * D : (t + 1) * D]),
                MODE_CODES[mode],
                psw,
                True,
                stream,
            )
    return out


def _fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """`t` as the C++ kernels read it: fp32 and contiguous (`t` itself when it already is;
    per_sample_weights come in the weight's dtype, as torch takes them). Callers bind the
    result to a name before the call: `_native.arg` keeps only the address, so a temporary
    passed inline is freed, a large one unmapped, before the kernel reads it."""
    if t is None:
        return None
    # A negative view (z.conj().imag) read by address alone would have the wrong sign.
    return (t.resolve_neg() if t.is_neg() else t).float().contiguous()


def _opt_arg(t: torch.Tensor | None):
    return None if t is None else _native.arg(t)


_GRADIENT_INPUTS = ("grad_out", "per_sample_weights", "table_offsets", "indices", "offsets")
_WRITTEN = ("weight", "momentum")  # what the sparse steps update in place, in this order
_WRITTEN_DTYPES = ((torch.float32, torch.bfloat16), (torch.float32,))
F32, BF16 = torch.float32, torch.bfloat16  # module globals: identity tests on the hot path


def _gradient_inputs(
    fn, grad_out, per_sample_weights, table_offsets, indices, offsets, written=(), argmax=None
):
    """What the backward and the sparse steps (C++ CPU kernels) read: fp32 contiguous grad_out
    and per_sample_weights, contiguous index arrays. A device tensor, which would hand them a
    device pointer, is refused (`written`: the step's weight, and Adagrad's momentum), and so
    is a negative view among `written`: updated through its address, it would move the
    wrong way, and resolving it would update a copy."""
    # is_cpu: 0.3 us a tensor less than .device.type, on every (microsecond) step. One flat
    # test per tensor; the messages are built only on a failure.
    for t in (grad_out, table_offsets, indices, offsets, *written):
        if not (isinstance(t, torch.Tensor) and t.is_cpu and t.layout is STRIDED):
            _refuse_inputs(fn, (grad_out, per_sample_weights, table_offsets, indices, offsets),
                           written, argmax)  # fmt: skip
    for t in (per_sample_weights, argmax):
        if t is not None and not (isinstance(t, torch.Tensor) and t.is_cpu and t.layout is STRIDED):
            _refuse_inputs(fn, (grad_out, per_sample_weights, table_offsets, indices, offsets),
                           written, argmax)  # fmt: skip
    for t in written:
        dt = t.dtype
        if (
            (dt is not F32 and dt is not BF16)
            or t.is_neg()
            or (t.requires_grad and torch.is_grad_enabled())
        ):
            _refuse_written(fn, written)
    if grad_out.dtype is not F32 or (
        per_sample_weights is not None and per_sample_weights.dtype is not F32
    ):
        for name, t in (("grad_out", grad_out), ("per_sample_weights", per_sample_weights)):
            if t is not None and not t.is_floating_point():  # complex would lose its imag
                raise ValueError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")
    # Shared memory between what a step reads and updates is refused by the binding.
    return (
        _fp32(grad_out),
        _fp32(per_sample_weights),
        *_contiguous(table_offsets, indices, offsets),
    )


def _refuse_written(fn: str, written: tuple) -> None:
    """ValueError naming the first tensor a step cannot update in place: a dtype the kernels
    do not update, a negative view (updated through its address it would move the wrong
    way; resolving it would update a copy), or a tensor autograd tracks."""
    for name, t, dtypes in zip(_WRITTEN, written, _WRITTEN_DTYPES, strict=False):
        if t.dtype not in dtypes:
            raise ValueError(f"{fn}: {name} must be {' or '.join(map(str, dtypes))}, got {t.dtype}")
        if t.is_neg():
            raise ValueError(
                f"{fn}: {name} is a negative view (e.g. z.conj().imag), which the step cannot "
                f"update in place; pass a tensor without the negative bit ({name}.resolve_neg() "
                "is a copy)"
            )
        if t.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                f"{fn}: {name} requires grad; autograd cannot record an in-place step on it: "
                "run the step under torch.no_grad(), as optimizers do"
            )


def _number(fn: str, name: str, v) -> float:
    """A step's lr or eps as a float: a real number or a one-element tensor (as torch's
    optimizers take), not a string or a bool."""
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_complex():
        return float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__}")
    return float(v)


def _refuse_inputs(fn, inputs, written, argmax):
    """TypeError naming an argument that is not a tensor, else ValueError for a sparse one or
    one off the CPU (`inputs`: grad_out, per_sample_weights, table_offsets, indices, offsets)."""
    names = (*_GRADIENT_INPUTS, *_WRITTEN[: len(written)], "argmax")
    values = (*inputs, *written, argmax)
    _require_tensors(fn, names, values, optional=("per_sample_weights", "argmax"))
    _require_dense(fn, names, values)
    for t in values:
        if t is not None and not t.is_cpu:
            raise ValueError(f"{fn}: runs on the CPU only; got a tensor on {t.device}")


# What the backward and the steps' index arrays must be (the forward's checks say the same).
_INDEX_DTYPES = {
    "table_offsets": "int64",
    "indices": "int32 or int64",
    "offsets": "int32 or int64, as indices",
    "argmax": "int64",
}


def _explain_native_failure(fn: str, error: Exception, **named) -> None:
    """On the error path of the backward's or a step's C++ call only (_call_native): a
    ValueError naming the tensor the kernels cannot read (one with no memory of its own, or
    an index array of a dtype they take none of), as the forward's errors name theirs; else
    return so the caller re-raises `error`."""
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            continue
        if kind := unaddressable(t):
            raise ValueError(f"{fn} reads tensors by address and {name} is {kind}") from error
        if name in _INDEX_DTYPES and t.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"{fn}: {name} must be {_INDEX_DTYPES[name]}, got {t.dtype}"
            ) from error


def _call_native(fn: str, call, **named) -> None:
    """call(), the backward's or a step's C++ call; on its error, _explain_native_failure
    over the `named` tensors, else the error itself."""
    try:
        call()
    except (TypeError, RuntimeError, ValueError) as e:
        _explain_native_failure(fn, e, **named)
        raise


def _contiguous(table_offsets, indices, offsets):
    """The index arrays as the C++ kernels read them: contiguous (torch takes strided views;
    those are copied, and they are small next to the rows they select). The common case
    returns them as they are, checked without a generator (0.6 us on a tiny call)."""
    if table_offsets.is_contiguous() and indices.is_contiguous() and offsets.is_contiguous():
        return table_offsets, indices, offsets
    return table_offsets.contiguous(), indices.contiguous(), offsets.contiguous()


def _native_forward(weight, table_offsets, indices, offsets, mode, per_sample_weights, argmax=None):
    T = table_offsets.numel() - 1
    B = (offsets.numel() - 1) // T
    out = _native.empty((B, T * row_dim(weight)), torch.float32)
    psw = _fp32(per_sample_weights)
    _native.cpu().embedding_bags_forward(
        _native.arg(weight),
        _native.arg(table_offsets),
        _native.arg(indices),
        _native.arg(offsets),
        _native.arg(out),
        MODE_CODES[mode],
        _opt_arg(psw),
        _opt_arg(argmax),
    )
    return out


class _NativeEmbeddingBags(torch.autograd.Function):
    """Autograd for the native kernels. The weight's gradient is the dense fp32 one the C++
    backward makes (duplicates accumulated; mean divides by bag length; max routes to the
    argmax rows); per_sample_weights' (sum mode) is each lookup's row dotted with its bag's
    output gradient, as torch computes it (any weight dtype, uint8 rows dequantized)."""

    @staticmethod
    def forward(ctx, weight, table_offsets, indices, offsets, mode, per_sample_weights):
        argmax = None
        if mode == "max" and weight.requires_grad:
            T = table_offsets.numel() - 1
            argmax = torch.empty((offsets.numel() - 1) // T, T * weight.shape[1], dtype=torch.int64)
        out = _native_forward(
            weight, table_offsets, indices, offsets, mode, per_sample_weights, argmax
        )
        psw_grad = per_sample_weights is not None and per_sample_weights.requires_grad
        ctx.save_for_backward(
            table_offsets,
            indices,
            offsets,
            per_sample_weights,
            argmax,
            weight if psw_grad else None,
        )
        ctx.mode, ctx.weight_shape = mode, weight.shape
        return out

    @staticmethod
    @once_differentiable  # the C++ backward is not differentiable: no silent zero 2nd order
    def backward(ctx, grad_out):
        table_offsets, indices, offsets, psw, argmax, weight = ctx.saved_tensors
        grad_weight = grad_psw = None
        if ctx.needs_input_grad[0]:
            grad_weight = embedding_bags_backward(
                grad_out,
                ctx.weight_shape,
                table_offsets,
                indices,
                offsets,
                mode=ctx.mode,
                per_sample_weights=psw,
                argmax=argmax,
            )
        if ctx.needs_input_grad[5]:
            grad_psw = _per_sample_weights_grad(
                grad_out, weight, table_offsets, indices, offsets
            ).to(psw.dtype)
        return grad_weight, None, None, None, None, grad_psw


# Values per chunk of lookups in the per_sample_weights gradient: whole, the gathered rows
# and their bags' gradients are N x D fp32 each (~10 GB for a FAMBench A.1dev batch).
PSW_GRAD_CHUNK = 16 << 20


def _per_sample_weights_grad(grad_out, weight, table_offsets, indices, offsets):
    """fp32 (N,): d out / d per_sample_weights[i] = <weight row of lookup i, grad_out of its
    bag> (sum mode, the only one that takes per_sample_weights)."""
    T = table_offsets.numel() - 1
    B = (offsets.numel() - 1) // T
    N, D = indices.numel(), row_dim(weight)
    bag = torch.arange(T * B).repeat_interleave(torch.diff(offsets.long()))  # t*B + b
    g3 = grad_out.float().reshape(B, T, D)
    out = torch.empty(N, dtype=torch.float32)
    step = max(1, PSW_GRAD_CHUNK // max(D, 1))
    for s in range(0, N, step):
        bs = bag[s : s + step]
        table = bs // B
        rows = weight[table_offsets[table] + indices[s : s + step].long()]
        rows = dequantize_rows(rows) if weight.dtype == torch.uint8 else rows.float()
        out[s : s + step] = (rows * g3[bs % B, table]).sum(1)
    return out


def _own_tables(variants: list[dict]) -> list[dict]:
    """The native impl owns its packed tables, as a table-batched embedding module does:
    one copy in host-pool memory (huge pages: a random row gather then rarely misses the
    TLB), shared by every index batch."""
    if variants[0]["weight"].device.type != "cpu":
        return variants
    weight = _native.host_copy(variants[0]["weight"])
    return [{**v, "weight": weight} for v in variants]


@register_impl(
    "embedding_bags",
    "native",
    devices=("cpu", "cuda"),
    dtypes=(*FLOAT_DTYPES, torch.uint8),
    available=_native_unavailable,
    prepare=_own_tables,
)
def embedding_bags_native(weight, table_offsets, indices, offsets, mode, per_sample_weights):
    """C++: parallel over (table, bag), vectorized row accumulation, software prefetch;
    CUDA: one launch per table, warp (or sub-warp for small D) per bag."""
    table_offsets, indices, offsets = _contiguous(table_offsets, indices, offsets)
    # The kernels read rows with unit column stride, rows apart by at least a row.
    if not weight.is_contiguous() and (
        weight.stride(1) != 1 or (weight.shape[0] > 1 and weight.stride(0) < weight.shape[1])
    ):
        weight = weight.contiguous()
    if (
        weight.requires_grad
        or (per_sample_weights is not None and per_sample_weights.requires_grad)
    ) and torch.is_grad_enabled():  # _wants_grad, inline: attribute reads on the timed path
        if weight.device.type == "cuda":
            what = "weight" if weight.requires_grad else "per_sample_weights"
            raise _no_gradient("native", f"{what} on CUDA (CPU only)", "impl 'functional'")
        if weight.requires_grad and weight.dtype != torch.float32:
            raise _no_gradient(
                "native", f"a {weight.dtype} weight (float32 only)", "impl 'functional'"
            )
        return _NativeEmbeddingBags.apply(
            weight, table_offsets, indices, offsets, mode, per_sample_weights
        )
    if weight.device.type == "cuda":
        return _cuda_forward(weight, table_offsets, indices, offsets, mode, per_sample_weights)
    return _native_forward(weight, table_offsets, indices, offsets, mode, per_sample_weights)


def embedding_bags_backward(
    grad_out: torch.Tensor,
    weight_shape,
    table_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    argmax: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense fp32 gradient of the packed weight (R_total, D) for `grad_out` (B, T*D).
    Max mode needs the argmax the forward recorded."""
    code = _mode_code("embedding_bags_backward", mode)
    if mode == "max" and argmax is None:
        raise ValueError("embedding_bags_backward: mode 'max' needs the forward's argmax")
    grad, psw, table_offsets, indices, offsets = _gradient_inputs(
        "embedding_bags_backward", grad_out, per_sample_weights, table_offsets, indices, offsets,
        argmax=argmax,
    )  # fmt: skip
    grad_weight = torch.zeros(tuple(weight_shape), dtype=torch.float32)
    _call_native(
        "embedding_bags_backward",
        lambda: _native.cpu().embedding_bags_backward_dense(
            _native.arg(grad),
            _native.arg(table_offsets),
            _native.arg(indices),
            _native.arg(offsets),
            _native.arg(grad_weight),
            code,
            _opt_arg(psw),
            _opt_arg(argmax),
        ),
        grad_out=grad, per_sample_weights=psw, table_offsets=table_offsets, indices=indices,
        offsets=offsets, argmax=argmax,
    )  # fmt: skip
    return grad_weight


def embedding_bags_sgd_step(
    weight: torch.Tensor,
    table_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    grad_out: torch.Tensor,
    lr: float,
    *,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
) -> None:
    """In place: weight[r] -= lr * (gradient of row r) for the rows that occur; no other row
    is read or written (no dense gradient). Deterministic with duplicates. grad_out and
    per_sample_weights must not share memory with the weight (ValueError)."""
    code = _mode_code("embedding_bags_sgd_step", mode, STEP_MODES)
    grad, psw, table_offsets, indices, offsets = _gradient_inputs(
        "embedding_bags_sgd_step", grad_out, per_sample_weights, table_offsets, indices, offsets,
        (weight,),
    )  # fmt: skip
    _call_native(
        "embedding_bags_sgd_step",
        lambda: _native.cpu().embedding_bags_sgd_step(
            _native.arg(weight),
            _native.arg(table_offsets),
            _native.arg(indices),
            _native.arg(offsets),
            _native.arg(grad),
            lr if type(lr) is float else _number("embedding_bags_sgd_step", "lr", lr),
            code,
            _opt_arg(psw),
        ),
        weight=weight, grad_out=grad, per_sample_weights=psw, table_offsets=table_offsets,
        indices=indices, offsets=offsets,
    )  # fmt: skip
    torch.autograd.graph.increment_version(weight)  # an in-place update, to autograd


def embedding_bags_adagrad_step(
    weight: torch.Tensor,
    momentum: torch.Tensor,
    table_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    grad_out: torch.Tensor,
    lr: float,
    eps: float = 1e-8,
    *,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
) -> None:
    """In place, row-wise Adagrad (as FBGEMM's table-batched embeddings): for each touched
    row r with aggregated gradient g, momentum[r] += mean(g^2); weight[r] -= lr * g /
    (sqrt(momentum[r]) + eps). weight, momentum, grad_out and per_sample_weights must not
    share memory (ValueError)."""
    code = _mode_code("embedding_bags_adagrad_step", mode, STEP_MODES)
    grad, psw, table_offsets, indices, offsets = _gradient_inputs(
        "embedding_bags_adagrad_step", grad_out, per_sample_weights, table_offsets, indices,
        offsets, (weight, momentum),
    )  # fmt: skip
    _call_native(
        "embedding_bags_adagrad_step",
        lambda: _native.cpu().embedding_bags_adagrad_step(
            _native.arg(weight),
            _native.arg(momentum),
            _native.arg(table_offsets),
            _native.arg(indices),
            _native.arg(offsets),
            _native.arg(grad),
            lr if type(lr) is float else _number("embedding_bags_adagrad_step", "lr", lr),
            eps if type(eps) is float else _number("embedding_bags_adagrad_step", "eps", eps),
            code,
            _opt_arg(psw),
        ),
        weight=weight, momentum=momentum, grad_out=grad, per_sample_weights=psw,
        table_offsets=table_offsets, indices=indices, offsets=offsets,
    )  # fmt: skip
    torch.autograd.graph.increment_version((weight, momentum))  # in-place, to autograd


def _triton_interpreter_limit(s: dict, dtype: torch.dtype, device: str) -> str | None:
    # The interpreter's cost follows the elements moved, not the FLOPs: a lookup's one add
    # per element counts as 20 against the GEMM-sized cap.
    return _triton.too_big_for_interpreter(EmbeddingBags().flops(s) * 20, device)


@register_impl(
    "embedding_bags",
    "triton",
    devices=("cpu", "cuda"),
    dtypes=(*FLOAT_DTYPES, torch.uint8),
    available=_triton.unavailable,
    supports=_triton_interpreter_limit,
)
def embedding_bags_triton(weight, table_offsets, indices, offsets, mode, per_sample_weights):
    """Triton: one program per (bag, table), masked loop over the bag's indices."""
    if _wants_grad(weight, per_sample_weights):
        what = "weight" if weight.requires_grad else "per_sample_weights"
        raise _no_gradient("triton", what, "impl 'functional' (or 'native' on the CPU)")
    from pydeepbench.kernels import embedding_bag as kernel

    T = table_offsets.numel() - 1
    out = kernel.embedding_bags(
        weight,
        table_offsets[:-1],
        indices,
        offsets,
        mode=mode,
        per_sample_weights=per_sample_weights,
    )
    return out.reshape(out.shape[0], T * row_dim(weight))


__all__ = ["dequantize_rows", "embedding_bag", "embedding_bags", "quantize_rows"]

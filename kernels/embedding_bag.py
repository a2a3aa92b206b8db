"""
Embedding bags (pooled embedding lookups), in Triton
====================================================

An embedding bag gathers rows of a weight table ``W`` (R rows, D columns) and
pools them. Bag ``b`` owns the index positions ``offsets[b] <= i < end_b`` of the
flat ``indices`` array, where ``end_b`` is ``offsets[b + 1]`` (or ``len(indices)``
for the last bag when ``include_last_offset=False``). With ``n_b = end_b - offsets[b]``:

.. math::

    \\text{sum:}\\quad  O_{b,d} = \\sum_{i} s_i \\, W_{\\text{indices}[i],\\, d}
    \\qquad (s_i = \\text{per\\_sample\\_weights}[i], \\text{ or } 1)

    \\text{mean:}\\quad O_{b,d} = \\frac{1}{n_b} \\sum_{i} W_{\\text{indices}[i],\\, d}

    \\text{max:}\\quad  O_{b,d} = \\max_{i} W_{\\text{indices}[i],\\, d}

An empty bag (``n_b = 0``) yields a row of zeros in every mode, as in
``torch.nn.functional.embedding_bag``.

Kernel structure
----------------
The grid is (bags, column blocks): each program owns one bag and ``BLOCK_D``
consecutive columns. It walks the bag's index range ``BLOCK_I`` positions at a
time: it loads ``BLOCK_I`` indices, gathers the ``BLOCK_I x BLOCK_D`` tile of rows
they name, and reduces the tile over its rows into an fp32 accumulator of
``BLOCK_D`` values. Lanes past the end of the bag (ragged bags) and past D (D
not a power of two) are masked, so bags of any length, including 0 and 1, and
any D work. Duplicate indices in a bag are simply gathered twice.

Weights may be fp32, bf16 or fp16; they are widened to fp32 right after the
load, all arithmetic is fp32, and the output is fp32. uint8 weights are 8-bit
rowwise-quantized rows in FBGEMM's fused layout: each row holds D uint8 codes, then
that row's fp32 scale and fp32 bias (so the tensor is (R, D + 8) and a row's values
are ``scale * code + bias``). The kernel assembles each scale and bias from its four
bytes (rows of D + 8 bytes leave them unaligned) and dequantizes every gathered row
before pooling it.

Several tables in one launch
----------------------------
:func:`embedding_bags` runs T tables of the same width D in one launch: the
program for global bag ``g`` serves table ``t = g // B`` and sample
``b = g % B``. See its docstring for the packed layout. :func:`embedding_bag` is
the same kernel with T = 1.

Index validation
----------------
The kernels trust their indices and offsets: out-of-range indices, offsets that
decrease, start past 0 or run past ``len(indices)`` are not checked on the device
(checking would need a host sync). The caller (the ops layer) checks them on the
host before launching; an unchecked bad index reads out of bounds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gemm import interpreted, on_device

__all__ = ["embedding_bag", "embedding_bags"]

_MODES = ("sum", "mean", "max")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_WEIGHT_DTYPES = (*_FLOAT_DTYPES, torch.uint8)  # uint8: 8-bit rowwise rows (see above)
_Q8_EXTRA = 8  # bytes after a uint8 row's D codes: its fp32 scale and fp32 bias
_INDEX_DTYPES = (torch.int32, torch.int64)


@triton.jit
def _embedding_bag_kernel(
    weight_ptr, table_row_offsets_ptr, indices_ptr, offsets_ptr, psw_ptr, out_ptr,
    B, n_offsets, n_indices, D, q8_param_off,
    stride_wr, stride_wd,
    stride_ob, stride_ot, stride_od,
    MODE: tl.constexpr,
    HAS_PSW: tl.constexpr,
    MULTI_TABLE: tl.constexpr,
    Q8: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    bag = tl.program_id(axis=0)  # global bag id in [0, T * B)
    pid_d = tl.program_id(axis=1)
    table = bag // B
    sample = bag % B

    # -- this bag's index range [start, end) ----------------------------------
    # Without include_last_offset the last bag has no closing offset: it runs to
    # the end of `indices`.
    # (n_indices is not the load's `other`: that takes the offsets' dtype, and int32
    # offsets would cut 2^31 or more indices short.)
    start = tl.load(offsets_ptr + bag).to(tl.int64)
    has_end = bag + 1 < n_offsets
    end = tl.load(offsets_ptr + bag + 1, mask=has_end, other=0).to(tl.int64)
    end = tl.where(has_end, end, n_indices)

    # -- this table's rows inside the packed weight ----------------------------
    if MULTI_TABLE:
        row_base = tl.load(table_row_offsets_ptr + table).to(tl.int64)
        weight_ptr += row_base * stride_wr

    # int64: offs_d * stride_wd overflows int32 for a column-major view of a big table.
    offs_d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D

    if MODE == "max":
        acc = tl.full((BLOCK_D,), float("-inf"), dtype=tl.float32)
        # torch's max starts from the bag's first row and takes a later row only when it
        # is strictly greater, so a NaN wins only as the first row: NaNs are left out of
        # the reduction, and a column whose first row is NaN comes out NaN.
        nan_first = tl.zeros((BLOCK_D,), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    if Q8:  # byte steps in int64: 4 * stride_wd wraps int32 from a column stride of 2^29
        step = tl.cast(stride_wd, tl.int64)

    # -- gather BLOCK_I rows at a time and reduce them over the bag axis -------
    for i0 in range(start, end, BLOCK_I):
        # int64 lanes: the interpreter runs i0 as int32 whenever its value fits.
        offs_i = tl.arange(0, BLOCK_I).to(tl.int64) + i0
        mask_i = offs_i < end
        idx = tl.load(indices_ptr + offs_i, mask=mask_i, other=0).to(tl.int64)
        mask = mask_i[:, None] & mask_d[None, :]
        w_ptrs = weight_ptr + idx[:, None] * stride_wr + offs_d[None, :] * stride_wd
        # Widen to fp32 straight away: all arithmetic is fp32 (and the interpreter
        # has no bf16 arithmetic).
        rows = tl.load(w_ptrs, mask=mask, other=0.0).to(tl.float32)
        if Q8:
            row_ptrs = weight_ptr + idx * stride_wr + q8_param_off
            scale = _f32_from_bytes(row_ptrs, step, mask_i)
            bias = _f32_from_bytes(row_ptrs + 4 * step, step, mask_i)
            rows = tl.where(mask, rows * scale[:, None] + bias[:, None], 0.0)
        if MODE == "max":
            is_nan = mask & (rows != rows)
            first = (offs_i == start)[:, None]
            nan_first = tl.maximum(nan_first, tl.max(tl.where(first & is_nan, 1, 0), axis=0))
            rows = tl.where(mask & ~is_nan, rows, float("-inf"))
            acc = tl.maximum(acc, tl.max(rows, axis=0))
        else:
            if HAS_PSW:
                s = tl.load(psw_ptr + offs_i, mask=mask_i, other=0.0).to(tl.float32)
                rows = rows * s[:, None]
            acc += tl.sum(rows, axis=0)

    # -- finish the pooling; empty bags give zeros ----------------------------
    count = end - start
    if MODE == "mean":
        acc = acc / tl.maximum(count, 1).to(tl.float32)
    if MODE == "max":
        acc = tl.where(nan_first > 0, float("nan"), acc)
        acc = tl.where(count > 0, acc, 0.0)

    # int64: B * T * D reaches 2^31 for big batches of many tables (an 8 GiB output).
    out_ptrs = (
        out_ptr
        + sample.to(tl.int64) * stride_ob
        + table.to(tl.int64) * stride_ot
        + offs_d * stride_od
    )
    tl.store(out_ptrs, acc, mask=mask_d)


@triton.jit
def _f32_from_bytes(ptrs, stride, mask):
    """The little-endian fp32 at each of `ptrs` (uint8 pointers, bytes `stride` apart; an
    int64 stride), from four byte loads: a uint8 row's scale and bias need not be 4-byte
    aligned."""
    bits = tl.load(ptrs, mask=mask, other=0).to(tl.uint32)
    bits |= tl.load(ptrs + stride, mask=mask, other=0).to(tl.uint32) << 8
    bits |= tl.load(ptrs + 2 * stride, mask=mask, other=0).to(tl.uint32) << 16
    bits |= tl.load(ptrs + 3 * stride, mask=mask, other=0).to(tl.uint32) << 24
    return bits.to(tl.float32, bitcast=True)


def _check_tensor(fn: str, name: str, t, rank: int, dtypes, device) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{fn}: {name} must be {rank}-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{fn}: {name} has dtype {t.dtype}; supported: {names}")
    if device is not None and t.device != device:
        raise ValueError(f"{fn}: {name} is on {t.device}, but weight is on {device}")


def _check_common(fn, weight, indices, offsets, mode, per_sample_weights):
    """Validation shared by both launchers (everything but the offsets' length)."""
    _check_tensor(fn, "weight", weight, 2, _WEIGHT_DTYPES, None)
    if weight.dtype == torch.uint8 and weight.shape[1] <= _Q8_EXTRA:
        raise ValueError(
            f"{fn}: a uint8 (8-bit rowwise) weight needs D + 8 columns (D codes, then the "
            f"fp32 scale and bias), got {weight.shape[1]}"
        )
    device = weight.device
    _check_tensor(fn, "indices", indices, 1, _INDEX_DTYPES, device)
    _check_tensor(fn, "offsets", offsets, 1, _INDEX_DTYPES, device)
    if mode not in _MODES:
        raise ValueError(f"{fn}: mode must be one of {_MODES}, got {mode!r}")
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(f"{fn}: per_sample_weights is only supported with mode='sum'")
        _check_tensor(fn, "per_sample_weights", per_sample_weights, 1, _FLOAT_DTYPES, device)
        if per_sample_weights.shape != indices.shape:
            raise ValueError(
                f"{fn}: per_sample_weights has shape {tuple(per_sample_weights.shape)}, "
                f"it must match indices {tuple(indices.shape)}"
            )
    if device.type != "cuda" and not interpreted():
        raise ValueError(
            f"{fn}: tensors are on {device}; Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1 for the CPU interpreter)"
        )


def _tiles(D: int, q8: bool) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_I, num_warps) for rows of D columns (tests/test_triton_build.py
    compiles what this returns)."""
    BLOCK_D = max(16, min(triton.next_power_of_2(D), 256))
    # A tile of <= 4096 gathered values; 2048 for uint8 rows, whose byte-assembled scales
    # and biases otherwise spill (ptxas, sm_80/sm_90, int32 indices: 255 registers and
    # 64-184 B of stack a thread; none at 2048). Compiled without a GPU; untimed.
    BLOCK_I = max(1, min(64, (2048 if q8 else 4096) // BLOCK_D))
    return BLOCK_D, BLOCK_I, 4 if BLOCK_D >= 128 else 2


def _launch(weight, table_row_offsets, indices, offsets, per_sample_weights, mode, B, T):
    """Allocate the (B, T, D) fp32 output and run one program per (bag, column block)."""
    q8 = weight.dtype == torch.uint8
    D = _dim(weight)
    out = torch.empty((B, T, D), device=weight.device, dtype=torch.float32)
    if B == 0 or T == 0 or D == 0:
        return out

    # The kernel reads memory: a negative view (torch._neg_view, z.conj().imag) holds -x
    # there, so it is resolved first. Negated indices had read rows before the table.
    weight = weight.resolve_neg()
    indices = indices.resolve_neg().contiguous()
    offsets = offsets.resolve_neg().contiguous()
    if table_row_offsets is not None:
        table_row_offsets = table_row_offsets.resolve_neg()
    if per_sample_weights is not None:
        per_sample_weights = per_sample_weights.resolve_neg().contiguous()

    BLOCK_D, BLOCK_I, num_warps = _tiles(D, q8)

    grid = (T * B, triton.cdiv(D, BLOCK_D))
    with on_device(weight):
        _embedding_bag_kernel[grid](
            weight,
            table_row_offsets if table_row_offsets is not None else offsets,  # unused if T == 1
            indices, offsets,
            per_sample_weights if per_sample_weights is not None else weight,  # unused if None
            out,
            # a uint8 row's scale and bias start D elements in: computed here, where the
            # product cannot overflow (Triton passes it as int64 when it needs to)
            B, offsets.shape[0], indices.shape[0], D, D * weight.stride(1),
            weight.stride(0), weight.stride(1),
            out.stride(0), out.stride(1), out.stride(2),
            MODE=mode,
            HAS_PSW=per_sample_weights is not None,
            MULTI_TABLE=table_row_offsets is not None,
            Q8=q8,
            BLOCK_I=BLOCK_I,
            BLOCK_D=BLOCK_D,
            num_warps=num_warps,
        )  # fmt: skip
    return out


def _dim(weight: torch.Tensor) -> int:
    return weight.shape[1] - (_Q8_EXTRA if weight.dtype == torch.uint8 else 0)


def embedding_bag(
    weight: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    include_last_offset: bool = False,
) -> torch.Tensor:
    """Pooled lookups into one table, like ``torch.nn.functional.embedding_bag``.

    Args:
        weight: (R, D) fp32, bf16 or fp16 table, any strides; or (R, D + 8) uint8
            8-bit rowwise rows (module docstring).
        indices: (L,) int32 or int64 row ids, flat over all bags.
        offsets: int32 or int64 start of each bag in ``indices``: (B,) entries, or
            (B + 1,) with ``include_last_offset=True`` (the last entry closes the
            last bag). ``offsets[0]`` must be 0 and the offsets non-decreasing.
        mode: ``"sum"``, ``"mean"`` or ``"max"``.
        per_sample_weights: optional (L,) float weights scaling each looked-up
            row; only with ``mode="sum"``.
        include_last_offset: as in torch.

    Returns:
        (B, D) fp32 tensor (always fp32, unlike torch, which returns
        ``weight.dtype``). Empty bags give zeros.

    Index and offset values are not checked here (see the module docstring): the
    caller must ensure ``0 <= indices < R`` and valid offsets. ``padding_idx``,
    ``max_norm`` and 2-D ``indices`` are not supported.

    Raises:
        ValueError: on wrong rank, dtype or device, an unknown mode, or
            per_sample_weights with a mode other than sum or of the wrong shape.
    """
    fn = "embedding_bag"
    _check_common(fn, weight, indices, offsets, mode, per_sample_weights)
    if include_last_offset and offsets.shape[0] == 0:
        raise ValueError(f"{fn}: include_last_offset=True needs at least one offset")
    B = offsets.shape[0] - 1 if include_last_offset else offsets.shape[0]
    out = _launch(weight, None, indices, offsets, per_sample_weights, mode, B, 1)
    return out.view(B, _dim(weight))


def embedding_bags(
    weights_packed: torch.Tensor,
    table_row_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pooled lookups into T tables of width D in one launch.

    Packed layout:
        * ``weights_packed`` is (sum of the tables' rows, D): the tables stacked
          along rows; table ``t`` occupies rows ``table_row_offsets[t]`` up to
          the next table's start.
        * ``table_row_offsets`` is (T,) int32/int64: the first packed row of each
          table (T entries, no closing total).
        * ``offsets`` is (T * B + 1,) int32/int64, KeyedJaggedTensor style: the
          B bags of table 0 first, then the B bags of table 1, ...; bag ``g``
          (table ``g // B``, sample ``g % B``) is ``indices[offsets[g]:offsets[g+1]]``
          and the last entry closes the last bag (``include_last_offset``-style).
        * ``indices`` are *local* row ids of their bag's table (0 <= id < that
          table's row count); ``per_sample_weights`` (sum only) aligns with them.

    Returns:
        (B, T, D) fp32 tensor: ``out[:, t]`` equals
        ``embedding_bag(table_t, indices_t, offsets_t)``. ``out.view(B, T * D)`` is
        the per-sample concatenation of the tables' pooled rows.

    As with :func:`embedding_bag`, index, offset and row-offset values are the
    caller's to validate; they are not checked on the device.

    Raises:
        ValueError: on wrong rank, dtype or device, an unknown mode, bad
            per_sample_weights, or an ``offsets`` length that is not T * B + 1.
    """
    fn = "embedding_bags"
    _check_common(fn, weights_packed, indices, offsets, mode, per_sample_weights)
    _check_tensor(
        fn, "table_row_offsets", table_row_offsets, 1, _INDEX_DTYPES, weights_packed.device
    )
    T = table_row_offsets.shape[0]
    if T == 0:
        raise ValueError(f"{fn}: table_row_offsets is empty; need at least one table")
    n_bags = offsets.shape[0] - 1
    if n_bags < 0 or n_bags % T != 0:
        raise ValueError(
            f"{fn}: offsets has {offsets.shape[0]} entries; expected T * B + 1 with T = {T}"
        )
    B = n_bags // T
    return _launch(
        weights_packed, table_row_offsets.contiguous(), indices, offsets,
        per_sample_weights, mode, B, T,
    )  # fmt: skip

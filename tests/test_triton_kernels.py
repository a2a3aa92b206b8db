"""Tests of the Triton kernels (kernels/gemm.py, kernels/embedding_bag.py) against torch.

Without a CUDA device the kernels run under Triton's CPU interpreter, which must
be switched on (TRITON_INTERPRET=1) before triton is imported; shapes are kept
small so the whole file stays fast there. References are computed in float64.
"""

from __future__ import annotations

import pytest
import torch
from nan_bags import nan_bags
from overcommit import overcommits
from quantized_rows import q8_rows

pytest.importorskip("triton", reason="Triton kernels need the triton package")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


from pydeepbench.kernels import embedding_bag as _eb_mod  # noqa: E402
from pydeepbench.kernels import gemm as _gemm_mod  # noqa: E402

gemm = _gemm_mod.gemm
embedding_bag = _eb_mod.embedding_bag
embedding_bags = _eb_mod.embedding_bags


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, gen, dtype=torch.float32):
    return torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)


# --------------------------------------------------------------------------------------
# GEMM
# --------------------------------------------------------------------------------------

# Output tolerances against the float64 reference of the (already rounded) inputs.
# fp32: IEEE products, fp32 accumulation of K <= 130 terms of O(1) values.
# bf16/fp16: the fp32 result is rounded once to the output dtype, a relative error of
# at most one unit roundoff (bf16 2^-8 ~ 3.9e-3, fp16 2^-11 ~ 4.9e-4); allow 2u.
GEMM_TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-4),
    torch.float16: dict(rtol=1e-3, atol=1e-4),
}

GEMM_SIZES = [(1, 1, 1), (2, 7, 31), (31, 64, 17), (127, 33, 65), (64, 130, 3)]


def _operands(M, N, K, layout, dtype, gen):
    """a (M, K) and b (K, N) in the requested memory layout (N = row-major, T = transposed)."""
    if layout == "NN":
        a, b = _randn(M, K, gen=gen, dtype=dtype), _randn(K, N, gen=gen, dtype=dtype)
    elif layout == "TN":
        a, b = _randn(K, M, gen=gen, dtype=dtype).t(), _randn(K, N, gen=gen, dtype=dtype)
    elif layout == "NT":
        a, b = _randn(M, K, gen=gen, dtype=dtype), _randn(N, K, gen=gen, dtype=dtype).t()
    elif layout == "slice":  # strided in both dimensions, nonzero storage offset
        a = _randn(2 * M, 3 * K, gen=gen, dtype=dtype)[::2, ::3]
        b = _randn(K + 5, 2 * N, gen=gen, dtype=dtype)[5:, 1::2]
        assert a.stride(1) == 3 and b.stride(1) == 2 and b.storage_offset() == 5 * 2 * N + 1
    else:
        raise AssertionError(layout)
    assert a.shape == (M, K) and b.shape == (K, N)
    return a, b


def _gemm_ref(a, b, bias, activation):
    ref = a.double() @ b.double()
    if bias is not None:
        ref = ref + bias.double()
    if activation == "relu":
        ref = torch.relu(ref)
    return ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("activation", [None, "relu"], ids=["noact", "relu"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "slice"])
@pytest.mark.parametrize("M,N,K", GEMM_SIZES, ids=lambda s: str(s))
def test_gemm_matches_torch(M, N, K, layout, with_bias, activation, dtype):
    gen = _gen(M * 10_000 + N * 100 + K)
    a, b = _operands(M, N, K, layout, dtype, gen)
    bias = None
    if with_bias:
        bias = _randn(N, gen=gen)
        if layout == "slice":  # strided bias in another float dtype than the operands
            bias = _randn(2 * N, gen=gen, dtype=torch.float16)[::2]
    out = gemm(a, b, bias, activation)
    assert out.shape == (M, N) and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out.double(), _gemm_ref(a, b, bias, activation), **GEMM_TOL[dtype])


def test_gemm_bf16_output_rounds_to_nearest_even():
    """The tolerance above would pass a truncating cast (Triton's interpreter truncates
    fp32 -> bf16): the exact sums below pin the rounding, ties, overflow and NaN."""
    bf = torch.bfloat16
    u = 2.0**-7  # bf16's spacing in [1, 2) (8 significant bits)
    # Each row of a times b = [1, 1]^T is an exact fp32 sum; bias and relu also exercised.
    sums = [
        (1.0, 0.75 * u),  # above half an ulp: up to 1 + u (a truncation gives 1)
        (1.0, 0.5 * u),  # a tie to even: 1
        (1.0 + u, 0.5 * u),  # a tie to even: 1 + 2u
        (-1.0, -0.75 * u),  # negative: -(1 + u), then relu below
        (torch.finfo(bf).max, 2.0**119),  # rounds past the bf16 maximum: inf
        (float("nan"), 1.0),
    ]
    a = torch.tensor(sums, dtype=bf, device=DEVICE)
    b = torch.ones(2, 1, dtype=bf, device=DEVICE)
    assert a.double().sum(1).tolist()[:4] == [1 + 0.75 * u, 1 + 0.5 * u, 1 + 1.5 * u, -1 - 0.75 * u]
    want = torch.tensor([[1 + u], [1.0], [1 + 2 * u], [-1 - u], [float("inf")], [float("nan")]])
    torch.testing.assert_close(gemm(a, b).float().cpu(), want, rtol=0, atol=0, equal_nan=True)
    relu = gemm(a, b, torch.zeros(1, device=DEVICE), "relu").float().cpu()
    torch.testing.assert_close(relu, torch.relu(want), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("M,N,K", [(2, 7, 31), (127, 33, 65)], ids=lambda s: str(s))
def test_gemm_fp16(M, N, K):
    gen = _gen(7)
    a, b = _operands(M, N, K, "TN", torch.float16, gen)
    bias = _randn(N, gen=gen)
    out = gemm(a, b, bias, "relu")
    assert out.dtype == torch.float16
    torch.testing.assert_close(
        out.double(), _gemm_ref(a, b, bias, "relu"), **GEMM_TOL[torch.float16]
    )


def test_gemm_allow_tf32():
    gen = _gen(11)
    a, b = _operands(127, 33, 65, "NN", torch.float32, gen)
    out = gemm(a, b, allow_tf32=True)
    # TF32 keeps 10 mantissa bits per operand (u = 2^-11); bound the error by the
    # sum of |a||b| terms rather than |a @ b|, which can cancel.
    scale = (a.double().abs() @ b.double().abs()).max().item()
    torch.testing.assert_close(out.double(), _gemm_ref(a, b, None, None), rtol=0, atol=4e-3 * scale)


def test_gemm_degenerate_shapes():
    gen = _gen(3)
    bias = _randn(5, gen=gen)
    # K == 0: the product is empty, the output is act(bias).
    a = torch.empty(4, 0, device=DEVICE)
    b = torch.empty(0, 5, device=DEVICE)
    torch.testing.assert_close(gemm(a, b, bias, "relu"), torch.relu(bias).expand(4, 5))
    # M == 0 or N == 0: empty outputs, no launch.
    assert gemm(torch.empty(0, 3, device=DEVICE), _randn(3, 5, gen=gen)).shape == (0, 5)
    assert gemm(_randn(4, 3, gen=gen), torch.empty(3, 0, device=DEVICE)).shape == (4, 0)


def test_gemm_rejects_bad_input(monkeypatch):
    gen = _gen(5)
    a, b = _randn(4, 3, gen=gen), _randn(3, 5, gen=gen)
    with pytest.raises(ValueError, match="a must be 2-D"):
        gemm(a[0], b)
    with pytest.raises(ValueError, match="b must be 2-D"):
        gemm(a, b[None])
    with pytest.raises(ValueError, match="inner dimensions differ"):
        gemm(a, _randn(4, 5, gen=gen))
    with pytest.raises(ValueError, match="dtypes differ"):
        gemm(a, b.bfloat16())
    with pytest.raises(ValueError, match="supported: fp32, bf16, fp16"):
        gemm(a.int(), b.int())
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        gemm(a, b, _randn(4, gen=gen))
    with pytest.raises(ValueError, match="bias must be a float tensor"):
        gemm(a, b, torch.ones(5, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        gemm(a, b, activation="gelu")
    with pytest.raises(ValueError, match="b is on meta"):
        gemm(a, torch.empty(3, 5, device="meta"))
    with pytest.raises(ValueError, match="bias is on meta"):
        gemm(a, b, torch.empty(5, device="meta"))
    # Outside the interpreter the kernels need CUDA tensors.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        gemm(a.cpu(), b.cpu())


def test_gemm_relu_keeps_nan_like_torch():
    # The interpreter keeps NaN even through tl.maximum; test_triton_build checks the GPU
    # code has no maxnum.
    a = torch.tensor([[float("nan"), -1.0], [2.0, -3.0]], device=DEVICE)
    eye = torch.eye(2, device=DEVICE)
    out = gemm(a, eye, activation="relu")
    assert out[0].isnan().all()  # NaN * 0 is NaN: the whole first row is NaN
    torch.testing.assert_close(out, torch.relu(a @ eye), equal_nan=True)


def test_gemm_called_directly_keeps_negative_views_sign():
    # kernels.gemm.gemm is public: called without ops.gemm's operand care, a negative
    # view (memory holds -x) came out with the wrong sign (max error 2.5).
    a, bias = (torch.randn(*s, dtype=torch.cfloat).conj().imag for s in ((5, 7), (3,)))
    b = torch._neg_view(torch.randn(7, 3))
    assert a.is_neg() and b.is_neg() and bias.is_neg()
    want = a.resolve_neg() @ b.resolve_neg() + bias.resolve_neg()
    torch.testing.assert_close(gemm(a.to(DEVICE), b.to(DEVICE), bias.to(DEVICE)).cpu(), want)


@pytest.mark.skipif(
    DEVICE == "cuda" and torch.cuda.is_available() and torch.cuda.mem_get_info()[0] < 20 << 30,
    reason="needs two 8.5 GiB strided buffers on the GPU",
)
def test_gemm_copies_operands_whose_k_stride_would_overflow_its_offsets():
    # k * stride along K is 32-bit in the kernel: with 2^27 elements per K step it wrapped
    # from k = 16 and read wild memory (a segfault under the interpreter). Strided views
    # over an untouched buffer: only the pages the copies write become real memory.
    S = 2**27
    b = torch.empty(17 * S + 64, device=DEVICE).as_strided((17, 3), (S, 1))
    b.copy_(torch.randn(17, 3))
    a_t = torch.empty(17 * S + 64, device=DEVICE).as_strided((2, 17), (1, S))  # K stride S
    a_t.copy_(torch.randn(2, 17))
    torch.testing.assert_close(gemm(a_t, b), a_t @ b)


def test_gemm_autotune_key_and_pruning(monkeypatch):
    # The best config also depends on the precision, the epilogue, the layout and the
    # alignment (which decides the configs kept).
    keys = {"INPUT_PRECISION", "HAS_BIAS", "ACTIVATION", "stride_ak", "stride_bn", "ALIGNED"}
    assert keys <= set(_gemm_mod._gemm_kernel.keys)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the GPU config list
    configs = _gemm_mod._autotune_configs()
    assert len(configs) == 10
    assert max(c.kwargs["BLOCK_K"] for c in configs) <= _gemm_mod._MAX_BLOCK_K

    def tiles(kept):
        return [tuple(c.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")) for c in kept]

    def prune(dtype, prec="ieee", aligned=True):
        args = {p: torch.empty(1, dtype=dtype) for p in ("a_ptr", "b_ptr", "c_ptr")}
        return tiles(_gemm_mod._prune(configs, args, INPUT_PRECISION=prec, ALIGNED=aligned))

    assert prune(torch.bfloat16) == tiles(configs)
    # fp32 on CUDA cores: at most 64 rows; tf32: shared memory only.
    assert prune(torch.float32) == [(64, 128, 32), (64, 64, 32), (32, 64, 32), (16, 64, 64)]
    tf32 = prune(torch.float32, "tf32")
    assert tf32 == [t for t in tiles(configs) if t[2] == 32 or t[0] == 16] and len(tf32) == 7
    # An unaligned launch keeps the 64x64 tile only.
    assert prune(torch.bfloat16, aligned=False) == [(64, 64, 32)]


def test_gemm_alignment_is_sizes_strides_and_pointers():
    a = torch.empty(64, 32)
    assert _gemm_mod._aligned((64, 32, 1, 32), (a,))
    assert not _gemm_mod._aligned((64, 13, 1), (a,))  # K = 13
    assert not _gemm_mod._aligned((64, 32, 33, 1), (a,))  # a row stride of 33
    assert not _gemm_mod._aligned((64, 32), (a.view(-1)[1:],))  # 4 bytes off


# --------------------------------------------------------------------------------------
# Embedding bags
# --------------------------------------------------------------------------------------

# Every weight dtype is widened exactly to fp32 and accumulated in fp32, and the output
# is fp32, so the tolerance is fp32-tight for bf16 weights too (the reference uses the
# same bf16-rounded weights in float64).
EB_TOL = dict(rtol=1e-5, atol=1e-5)

# Bags: empty first bag, single-element bag, duplicates in a bag, a bag longer than
# the kernel's BLOCK_I (64) so it spans two index blocks, and an empty last bag.
NUM_ROWS = 40
BAG_LENGTHS = [0, 1, 3, 70, 2, 0]


def _bags(gen, index_dtype, lengths=BAG_LENGTHS, num_rows=NUM_ROWS):
    """Flat indices and torch-style offsets (B + 1 entries, last = len(indices))."""
    idx = [torch.randint(0, num_rows, (n,), generator=gen) for n in lengths]
    idx[2] = torch.tensor([5, 5, 9])  # duplicates in one bag
    indices = torch.cat(idx)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    return indices.to(index_dtype).to(DEVICE), offsets.to(index_dtype).to(DEVICE)


EB_MODES = [("sum", False), ("sum", True), ("mean", False), ("max", False)]


@pytest.mark.parametrize("include_last_offset", [False, True], ids=["torch_offsets", "last_offset"])
@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("D", [1, 3, 16, 33])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("mode,psw", EB_MODES, ids=["sum", "sum_psw", "mean", "max"])
def test_embedding_bag_matches_torch(mode, psw, index_dtype, D, wdtype, include_last_offset):
    gen = _gen(D)
    weight = _randn(NUM_ROWS, D, gen=gen, dtype=wdtype)
    indices, offsets = _bags(gen, index_dtype)
    if not include_last_offset:
        offsets = offsets[:-1]  # the last bag runs to the end of indices
    per_sample_weights = _randn(indices.shape[0], gen=gen) if psw else None

    out = embedding_bag(
        weight, indices, offsets, mode=mode,
        per_sample_weights=per_sample_weights, include_last_offset=include_last_offset,
    )  # fmt: skip
    ref = torch.nn.functional.embedding_bag(
        indices, weight.double(), offsets, mode=mode,
        per_sample_weights=None if per_sample_weights is None else per_sample_weights.double(),
        include_last_offset=include_last_offset,
    )  # fmt: skip
    assert out.shape == (len(BAG_LENGTHS), D) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, **EB_TOL)
    assert (out[0] == 0).all() and (out[-1] == 0).all()  # empty bags


def test_embedding_bag_max_treats_nan_as_torch_does():
    w, idx, off = nan_bags()
    want = torch.nn.functional.embedding_bag(idx, w, off, mode="max")
    got = embedding_bag(w.to(DEVICE), idx.to(DEVICE), off.to(DEVICE), mode="max")
    torch.testing.assert_close(got.cpu(), want, equal_nan=True)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_wide_strided_fp16(mode):
    """D = 300 spans two column blocks; the weight is a strided fp16 view."""
    gen = _gen(300)
    weight = _randn(NUM_ROWS, 600, gen=gen, dtype=torch.float16)[:, ::2]
    indices, offsets = _bags(gen, torch.int64)
    out = embedding_bag(weight, indices, offsets, mode=mode, include_last_offset=True)
    ref = torch.nn.functional.embedding_bag(
        indices, weight.double(), offsets, mode=mode, include_last_offset=True
    )
    torch.testing.assert_close(out.double(), ref, **EB_TOL)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("mode,psw", EB_MODES, ids=["sum", "sum_psw", "mean", "max"])
def test_embedding_bags_multi_table(mode, psw, index_dtype):
    gen = _gen(17)
    T, B, D = 3, 4, 33
    rows = [7, 1, 12]
    tables = [_randn(r, D, gen=gen, dtype=torch.bfloat16) for r in rows]
    packed = torch.cat(tables)
    table_row_offsets = torch.tensor([0, 7, 8], dtype=index_dtype, device=DEVICE)
    lengths = torch.randint(0, 5, (T * B,), generator=gen)
    lengths[0], lengths[B + 1] = 0, 1  # an empty and a single-element bag
    # Local row ids: bag g belongs to table g // B.
    local_ids = [
        torch.randint(0, rows[g // B], (int(n),), generator=gen) for g, n in enumerate(lengths)
    ]
    indices = torch.cat(local_ids).to(index_dtype).to(DEVICE)
    offsets = torch.zeros(T * B + 1, dtype=torch.int64)
    offsets[1:] = lengths.cumsum(0)
    offsets = offsets.to(index_dtype).to(DEVICE)
    per_sample_weights = _randn(indices.shape[0], gen=gen) if psw else None

    out = embedding_bags(
        packed, table_row_offsets, indices, offsets, mode=mode,
        per_sample_weights=per_sample_weights,
    )  # fmt: skip
    assert out.shape == (B, T, D) and out.dtype == torch.float32
    for t in range(T):
        lo, hi = int(offsets[t * B]), int(offsets[(t + 1) * B])
        ref = torch.nn.functional.embedding_bag(
            indices[lo:hi], tables[t].double(), offsets[t * B : (t + 1) * B + 1] - lo,
            mode=mode, include_last_offset=True,
            per_sample_weights=None if not psw else per_sample_weights[lo:hi].double(),
        )  # fmt: skip
        torch.testing.assert_close(out[:, t].double(), ref, **EB_TOL)


@pytest.mark.parametrize("D", [1, 3, 16, 33])  # D % 4 != 0: unaligned scales and biases
@pytest.mark.parametrize("mode,psw", EB_MODES, ids=["sum", "sum_psw", "mean", "max"])
def test_embedding_bag_uint8_rows(mode, psw, D):
    gen = _gen(100 + D)
    full = torch.zeros(NUM_ROWS, D + 8 + D % 3, dtype=torch.uint8, device=DEVICE)
    weight, values, _ = q8_rows(NUM_ROWS, D, gen, out=full)  # built in place: the stride stays
    values = values.to(DEVICE)
    indices, offsets = _bags(gen, torch.int64)
    per_sample_weights = _randn(indices.shape[0], gen=gen) if psw else None
    out = embedding_bag(
        weight, indices, offsets, mode=mode, per_sample_weights=per_sample_weights,
        include_last_offset=True,
    )  # fmt: skip
    ref = torch.nn.functional.embedding_bag(
        indices, values, offsets, mode=mode, include_last_offset=True,
        per_sample_weights=None if per_sample_weights is None else per_sample_weights.double(),
    )  # fmt: skip
    assert out.shape == (len(BAG_LENGTHS), D) and out.dtype == torch.float32
    # fp32 dequantization (values up to ~16) and accumulation of up to 70 rows
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    assert (out[0] == 0).all() and (out[-1] == 0).all()  # empty bags


@pytest.mark.skipif(
    DEVICE == "cpu" and not overcommits(5 << 30),
    reason="needs 4 GiB of untouched memory, past this machine's overcommit limit",
)
def test_embedding_bag_uint8_rows_with_a_column_stride_of_2_29():
    # A row's scale and bias are read bytes stride_wd apart, and 4 * stride_wd (the step
    # to the bias) wrapped int32 from a column stride of 2^29: a segfault, or zeros at
    # 2^31 - 1. Only a few bytes of the 4 GiB buffer are written.
    rows, values, _ = q8_rows(4, 1, _gen(29))
    S = 2**29
    buf = torch.empty(8 * S + 4, dtype=torch.uint8, device=DEVICE)
    weight = buf.as_strided((4, 9), (1, S))
    weight.copy_(rows)
    indices, offsets = torch.tensor([0, 3, 1], device=DEVICE), torch.tensor([0, 1], device=DEVICE)
    out = embedding_bag(weight, indices, offsets)
    ref = torch.nn.functional.embedding_bag(indices, values.to(DEVICE), offsets, mode="sum")
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(
    DEVICE == "cpu" and not overcommits(9 << 30),
    reason="needs 8 GiB of untouched index memory, past this machine's overcommit limit",
)
def test_embedding_bag_last_bag_runs_past_2_31_indices_with_int32_offsets():
    # The last bag (no closing offset) ends at n_indices, which the load of the closing
    # offset had taken as `other`, in the offsets' dtype: int32 cut it short to nothing.
    n = 2**31 + 5
    indices = torch.empty(n, dtype=torch.int32, device=DEVICE)  # untouched but the tail
    indices[-6:] = torch.tensor([1, 2, 3, 1, 2, 3], dtype=torch.int32)
    w = torch.arange(8, dtype=torch.float32, device=DEVICE).view(4, 2)
    # One bag of the last 6 lookups: a bag of 2^31 would take the interpreter hours.
    out = embedding_bag(w, indices, torch.tensor([n - 6], dtype=torch.int32, device=DEVICE))
    assert out.tolist() == [[24.0, 30.0]]


def test_embedding_bag_rejects_bad_input():
    gen = _gen(23)
    w = _randn(10, 4, gen=gen)
    idx = torch.tensor([1, 2, 3], device=DEVICE)
    offs = torch.tensor([0, 1], device=DEVICE)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        embedding_bag(w[0], idx, offs)
    with pytest.raises(ValueError, match="weight has dtype torch.int64"):
        embedding_bag(w.long(), idx, offs)
    with pytest.raises(ValueError, match="indices must be 1-D"):
        embedding_bag(w, idx[None], offs)
    with pytest.raises(ValueError, match="indices has dtype torch.float32"):
        embedding_bag(w, idx.float(), offs)
    with pytest.raises(ValueError, match="offsets has dtype torch.int16"):
        embedding_bag(w, idx, offs.short())
    with pytest.raises(ValueError, match="mode must be one of"):
        embedding_bag(w, idx, offs, mode="median")
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        embedding_bag(w, idx, offs, mode="mean", per_sample_weights=_randn(3, gen=gen))
    with pytest.raises(ValueError, match="must match indices"):
        embedding_bag(w, idx, offs, per_sample_weights=_randn(4, gen=gen))
    with pytest.raises(ValueError, match="indices is on meta"):
        embedding_bag(w, idx.to("meta"), offs)
    with pytest.raises(ValueError, match="needs at least one offset"):
        embedding_bag(w, idx, offs[:0], include_last_offset=True)
    with pytest.raises(ValueError, match="needs D \\+ 8 columns"):
        embedding_bag(torch.zeros(4, 8, dtype=torch.uint8, device=DEVICE), idx, offs)
    tro = torch.tensor([0, 5], device=DEVICE)
    with pytest.raises(ValueError, match="expected T \\* B \\+ 1 with T = 2"):
        embedding_bags(w, tro, idx, torch.tensor([0, 1, 2, 3], device=DEVICE))
    with pytest.raises(ValueError, match="table_row_offsets is empty"):
        embedding_bags(w, tro[:0], idx, offs)
    with pytest.raises(ValueError, match="table_row_offsets has dtype torch.float32"):
        embedding_bags(w, tro.float(), idx, offs)

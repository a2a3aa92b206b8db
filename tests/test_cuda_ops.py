"""pydeepbench._C_cuda ops against torch (float64 references).

GPU tests carry the `gpu` marker and skip with a reason when torch sees no CUDA device
or the extension was not built. Argument-validation tests only need the extension: the
binding rejects bad arguments before touching the device.
"""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
from nan_bags import nan_bags
from quantized_rows import q8_rows

try:
    _C_cuda = importlib.import_module("pydeepbench._C_cuda")
    _MISSING = ""
except ImportError as e:  # not built (no nvcc, or PYDEEPBENCH_CUDA=OFF)
    _C_cuda = None
    try:
        where = list(importlib.import_module("pydeepbench").__path__)
    except ImportError:
        where = "nowhere"
    _MISSING = f"pydeepbench._C_cuda is not available ({e}; pydeepbench from {where})"

needs_module = pytest.mark.skipif(_C_cuda is None, reason=_MISSING or "n/a")


def _gpu_skip_reason() -> str:
    if _C_cuda is None:
        return _MISSING
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False (no CUDA device or driver)"
    return ""


_GPU_SKIP = _gpu_skip_reason()
requires_gpu = pytest.mark.skipif(bool(_GPU_SKIP), reason=_GPU_SKIP or "n/a")

_CODES = {
    torch.float32: 0,
    torch.bfloat16: 1,
    torch.float16: 2,
    torch.int32: 3,
    torch.int64: 4,
    torch.uint8: 5,
}


def targ(t: torch.Tensor) -> tuple:
    """The (data_ptr, sizes, strides, dtype_code) tuple the bindings take."""
    return (t.data_ptr(), list(t.shape), list(t.stride()), _CODES[t.dtype])


def stream() -> int:
    return torch.cuda.current_stream().cuda_stream


# ---- GEMM ------------------------------------------------------------------------

SIZES = (1, 2, 7, 31, 64, 127, 257)
# name -> (torch dtype, allow_tf32)
GEMM_DTYPES = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}


def gemm_tol(name: str, k: int) -> dict:
    """Tolerances against a float64 reference computed from the same (rounded) inputs."""
    s = math.sqrt(max(k, 1))
    if name == "fp32":  # fp32 FMA accumulation
        return {"rtol": 1e-5, "atol": 1e-5 * s}
    if name == "tf32":  # inputs rounded to 10-bit mantissas inside the kernel
        return {"rtol": 2e-3, "atol": 3e-3 * s}
    if name == "bf16":  # fp32 accumulation, output rounded to bf16 (8-bit mantissa)
        return {"rtol": 1.6e-2, "atol": 1e-2}
    return {"rtol": 2e-3, "atol": 2e-3}  # fp16: output rounded to an 11-bit mantissa


def make_operand(rows: int, cols: int, layout: str, dtype, device, misalign: bool = False):
    """A rows x cols view: 'N' row-major, 'T' a transposed view (unit stride along rows).

    misalign: the view starts one element into its storage and its leading stride is
    odd, so neither the base pointer nor the rows are 16-byte aligned.
    """
    inner, outer = (cols, rows) if layout == "N" else (rows, cols)
    ld = inner + 1 if misalign else inner
    off = 1 if misalign else 0
    flat = torch.randn(outer * ld + off, device=device).to(dtype)
    store = flat[off:].as_strided((outer, inner), (ld, 1))
    return store if layout == "N" else store.t()


def ref_gemm(a, b, bias, relu):
    r = a.double() @ b.double()
    if bias is not None:
        r = r + bias.double()
    return torch.relu(r) if relu else r


def run_gemm(a, b, bias, relu, allow_tf32, out=None):
    m, n = a.shape[0], b.shape[1]
    if out is None:
        out = torch.empty(m, n, device=a.device, dtype=a.dtype)
    _C_cuda.gemm(
        targ(a),
        targ(b),
        targ(out),
        None if bias is None else targ(bias),
        relu,
        stream(),
        allow_tf32,
    )
    return out


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("epilogue", ["none", "bias", "relu", "bias_relu"])
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("name", list(GEMM_DTYPES))
def test_gemm_grid(name, layout, epilogue):
    dtype, tf32 = GEMM_DTYPES[name]
    use_bias, relu = "bias" in epilogue, "relu" in epilogue
    torch.manual_seed(0)
    for m, n, k in itertools.product(SIZES, SIZES, SIZES):
        a = make_operand(m, k, layout[0], dtype, "cuda")
        b = make_operand(k, n, layout[1], dtype, "cuda")
        bias = torch.randn(n, device="cuda") if use_bias else None
        out = run_gemm(a, b, bias, relu, tf32)
        torch.testing.assert_close(
            out.double(),
            ref_gemm(a, b, bias, relu),
            **gemm_tol(name, k),
            msg=lambda s, m=m, n=n, k=k: f"{name} {layout} {epilogue} M={m} N={n} K={k}: {s}",
        )


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("name", list(GEMM_DTYPES))
def test_gemm_misaligned_and_padded(name, layout):
    """Unaligned base pointers / odd leading strides take the element-wise tile loads;
    out with a leading dimension larger than N."""
    dtype, tf32 = GEMM_DTYPES[name]
    torch.manual_seed(1)
    for m, n, k in [(1, 1, 1), (7, 31, 9), (127, 65, 257), (130, 257, 33), (64, 64, 64)]:
        a = make_operand(m, k, layout[0], dtype, "cuda", misalign=True)
        b = make_operand(k, n, layout[1], dtype, "cuda", misalign=True)
        bias = torch.randn(n, device="cuda")
        full = torch.full((m, n + 5), 7.0, device="cuda", dtype=dtype)
        out = run_gemm(a, b, bias, True, tf32, out=full[:, :n])
        torch.testing.assert_close(out.double(), ref_gemm(a, b, bias, True), **gemm_tol(name, k))
        assert bool((full[:, n:] == 7.0).all()), "wrote outside out's columns"


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("name", list(GEMM_DTYPES))
def test_gemm_large_and_k_tail(name):
    dtype, tf32 = GEMM_DTYPES[name]
    torch.manual_seed(2)
    for m, n, k in [(1024, 1024, 1024), (515, 1031, 777), (3, 4099, 1001), (2049, 5, 4096)]:
        for layout in ("NN", "TN", "NT"):
            a = make_operand(m, k, layout[0], dtype, "cuda")
            b = make_operand(k, n, layout[1], dtype, "cuda")
            bias = torch.randn(n, device="cuda")
            out = run_gemm(a, b, bias, False, tf32)
            torch.testing.assert_close(
                out.double(), ref_gemm(a, b, bias, False), **gemm_tol(name, k)
            )


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("layout", ["NN", "TN"])
@pytest.mark.parametrize("name", list(GEMM_DTYPES))
def test_gemm_taller_than_one_grid(name, layout):
    """M's tiles sit on gridDim.y (<= 65535): 2^22 + 131 rows run as two slices, the second
    starting 2^22 rows into A and C (A row-major, or contiguous along M when transposed)."""
    dtype, tf32 = GEMM_DTYPES[name]
    torch.manual_seed(4)
    m, n, k = (1 << 22) + 131, 24, 40
    a = make_operand(m, k, layout[0], dtype, "cuda")
    b = make_operand(k, n, "N", dtype, "cuda")
    bias = torch.randn(n, device="cuda")
    out = run_gemm(a, b, bias, True, tf32)
    for rows in (slice(0, 256), slice((1 << 22) - 256, m)):  # both sides of the seam
        want = ref_gemm(a[rows], b, bias, True)
        torch.testing.assert_close(out[rows].double(), want, **gemm_tol(name, k))


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("name", list(GEMM_DTYPES))
def test_gemm_relu_keeps_nan(name):
    dtype, tf32 = GEMM_DTYPES[name]
    a = torch.tensor([[float("nan"), -1.0], [2.0, -3.0]], device="cuda").to(dtype)
    out = run_gemm(a, torch.eye(2, device="cuda", dtype=dtype), None, True, tf32)
    assert out[0].isnan().all()  # NaN * 0 is NaN: the whole first row, as torch.relu
    assert out[1].tolist() == [2.0, 0.0]


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("name", list(GEMM_DTYPES))
def test_gemm_empty(name):
    dtype, tf32 = GEMM_DTYPES[name]
    bias = torch.randn(5, device="cuda")
    a = torch.empty(3, 0, device="cuda", dtype=dtype)
    b = torch.empty(0, 5, device="cuda", dtype=dtype)
    out = run_gemm(a, b, bias, True, tf32)  # K = 0: out = relu(bias)
    torch.testing.assert_close(
        out.double(), torch.relu(bias.double()).expand(3, 5), **gemm_tol(name, 1)
    )
    run_gemm(
        torch.empty(0, 4, device="cuda", dtype=dtype),
        torch.randn(4, 5, device="cuda").to(dtype),
        None,
        False,
        tf32,
    )  # M = 0: no-op


@pytest.mark.gpu
@requires_gpu
def test_gemm_side_stream():
    s = torch.cuda.Stream()
    a = torch.randn(300, 200, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(200, 100, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(300, 100, device="cuda", dtype=torch.bfloat16)
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        _C_cuda.gemm(targ(a), targ(b), targ(out), None, False, s.cuda_stream)
    s.synchronize()
    torch.testing.assert_close(out.double(), ref_gemm(a, b, None, False), **gemm_tol("bf16", 200))


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("op", ["gemm", "linear"])
def test_sweep_runs_tf32_rows_on_every_impl(tmp_path, op):
    """`--dtype tf32`: every impl passes TF32's gate under the TF32 switch, and each row
    is placed against the TF32 peak."""
    import json

    from pydeepbench import cli

    shape = "M=256,N=192,K=1024" + (",bias=1,relu=1" if op == "linear" else "")
    j = tmp_path / "r.json"
    args = [op, "--device", "cuda", "--dtype", "fp32,tf32", "--shape", shape, "--json", str(j)]
    assert cli.main([*args, "--max-time", "0.2", "--min-samples", "3"]) == 0
    rows = json.loads(j.read_text())["results"]
    tf32 = [r for r in rows if r["dtype"] == "tf32"]
    assert {r["impl"] for r in tf32} >= {"ootb", "native"}
    assert all(r["status"] == "ok" or "Triton" in (r["reason"] or "") for r in tf32)
    assert all(r["check"]["atol"] == 5e-3 for r in tf32 if r["status"] == "ok")
    fp32 = [r for r in rows if r["dtype"] == "float32" and r["status"] == "ok"]
    assert fp32 and all(r["check"]["atol"] == 1e-4 for r in fp32)


@needs_module
class TestGemmValidation:
    """Rejected in the binding, before any CUDA call (CPU tensors are fine here)."""

    def call(self, a, b, out, bias=None, relu=False, allow_tf32=False):
        _C_cuda.gemm(
            targ(a), targ(b), targ(out), None if bias is None else targ(bias), relu, 0, allow_tf32
        )

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="gemm: a is 4x5"):
            self.call(torch.randn(4, 5), torch.randn(6, 3), torch.empty(4, 3))
        with pytest.raises(ValueError, match="out must be 4x3"):
            self.call(torch.randn(4, 5), torch.randn(5, 3), torch.empty(4, 4))

    def test_dtypes(self):
        with pytest.raises(ValueError, match="b must be float32"):
            self.call(torch.randn(4, 5), torch.randn(5, 3).bfloat16(), torch.empty(4, 3))
        with pytest.raises(ValueError, match="out must be bfloat16"):
            self.call(torch.randn(4, 5).bfloat16(), torch.randn(5, 3).bfloat16(), torch.empty(4, 3))
        with pytest.raises(ValueError, match="supports float32, bfloat16 and float16"):
            i = torch.zeros(4, 4, dtype=torch.int32)
            self.call(i, i, i)
        with pytest.raises(ValueError, match="bias must be float32"):
            h = torch.randn(4, 4).half()
            self.call(h, h, h, bias=torch.randn(4).half())

    def test_ranks_and_layouts(self):
        with pytest.raises(ValueError, match="a must be 2-D"):
            self.call(torch.randn(4), torch.randn(4, 3), torch.empty(1, 3))
        with pytest.raises(ValueError, match="unit stride"):
            self.call(torch.randn(4, 10)[:, ::2], torch.randn(5, 3), torch.empty(4, 3))
        with pytest.raises(ValueError, match="row-major"):
            self.call(torch.randn(4, 5), torch.randn(5, 3), torch.empty(3, 4).t())
        with pytest.raises(ValueError, match="bias must be contiguous with 3"):
            self.call(torch.randn(4, 5), torch.randn(5, 3), torch.empty(4, 3), bias=torch.randn(4))

    def test_null_pointer(self):
        with pytest.raises(ValueError, match="null data pointer"):
            _C_cuda.gemm(
                (0, [4, 5], [5, 1], 0),
                targ(torch.randn(5, 3)),
                targ(torch.empty(4, 3)),
                None,
                False,
                0,
            )

    def test_keyword_names(self):
        # The Python layer calls gemm(a, b, out, bias, relu, stream, allow_tf32=False).
        with pytest.raises(ValueError, match="gemm: a is 4x5"):
            _C_cuda.gemm(
                a=targ(torch.randn(4, 5)),
                b=targ(torch.randn(6, 3)),
                out=targ(torch.empty(4, 3)),
                bias=None,
                relu=False,
                stream=0,
                allow_tf32=True,
            )


# ---- EmbeddingBag ----------------------------------------------------------------

MODES = {"sum": 0, "mean": 1, "max": 2}


def make_bags(n_bags: int, n_indices: int, gen: torch.Generator) -> torch.Tensor:
    """Non-decreasing offsets starting at 0 (with empty bags), n_bags + 1 entries."""
    cuts = torch.randint(0, n_indices + 1, (n_bags - 1,), generator=gen).sort().values
    offs = torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([n_indices])])
    if n_bags >= 3:  # force an empty bag in the middle
        offs[2] = offs[1]
    return offs


def run_embedding_bag(weight, indices, offsets, mode, psw, include_last_offset, out=None):
    bags = offsets.numel() - 1 if include_last_offset else offsets.numel()
    if out is None:
        out = torch.empty(bags, weight.shape[1], device=weight.device, dtype=torch.float32)
    _C_cuda.embedding_bag(
        targ(weight),
        targ(indices),
        targ(offsets),
        targ(out),
        MODES[mode],
        None if psw is None else targ(psw),
        include_last_offset,
        stream(),
    )
    return out


def ref_embedding_bag(weight, indices, offsets, mode, psw, include_last_offset):
    return torch.nn.functional.embedding_bag(
        indices.long(),
        weight.double(),
        offsets.long(),
        mode=mode,
        per_sample_weights=None if psw is None else psw.double(),
        include_last_offset=include_last_offset,
    )


@pytest.mark.gpu
@requires_gpu
# per_sample_weights ("same": the weight's dtype, "f32") only exist for mode sum.
@pytest.mark.parametrize(
    ("mode", "psw"),
    [("sum", "none"), ("sum", "same"), ("sum", "f32"), ("mean", "none"), ("max", "none")],
)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_embedding_bag_grid(dtype, index_dtype, mode, psw):
    gen = torch.Generator().manual_seed(3)
    for d, rows, n_bags, n_idx in itertools.product(
        (1, 3, 8, 16, 64, 100, 257, 512), (1, 50), (1, 2, 7, 300), (0, 1, 33, 1000)
    ):
        weight = torch.randn(rows, d, generator=gen).to(dtype).cuda()
        indices = torch.randint(0, rows, (n_idx,), generator=gen).to(index_dtype).cuda()
        offs_full = make_bags(n_bags, n_idx, gen).to(index_dtype).cuda()
        w = None
        if psw != "none":
            w = torch.randn(n_idx, generator=gen).to(dtype if psw == "same" else torch.float32)
            w = w.cuda()
        for include_last in (False, True):
            offsets = offs_full if include_last else offs_full[:-1]
            out = run_embedding_bag(weight, indices, offsets, mode, w, include_last)
            ref = ref_embedding_bag(weight, indices, offsets, mode, w, include_last)
            torch.testing.assert_close(
                out.double(),
                ref,
                rtol=1e-5,
                atol=1e-5,
                msg=lambda s, c=(d, rows, n_bags, n_idx, include_last): f"{c}: {s}",
            )


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_embedding_bag_misaligned_and_padded(dtype):
    """Weight rows that are not 16-byte aligned take the scalar path; out is padded."""
    gen = torch.Generator().manual_seed(4)
    for d in (8, 64, 128):
        rows = 40
        flat = torch.randn(rows * (d + 1) + 1, generator=gen).to(dtype).cuda()
        weight = flat[1:].as_strided((rows, d), (d + 1, 1))
        indices = torch.randint(0, rows, (500,), generator=gen).cuda()
        offsets = make_bags(64, 500, gen).cuda()
        full = torch.full((64, d + 3), 7.0, device="cuda")
        for mode in MODES:
            out = run_embedding_bag(weight, indices, offsets, mode, None, True, out=full[:, :d])
            ref = ref_embedding_bag(weight, indices, offsets, mode, None, True)
            torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
            assert bool((full[:, d:] == 7.0).all())


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dim", [5, 64])  # the scalar and the vector loads
def test_embedding_bag_max_treats_nan_as_torch_does(dim):
    w, idx, off = nan_bags(dim)
    want = torch.nn.functional.embedding_bag(idx, w, off, mode="max")
    got = run_embedding_bag(w.cuda(), idx.cuda(), off.cuda(), "max", None, False)
    torch.testing.assert_close(got.cpu(), want, equal_nan=True)


@pytest.mark.gpu
@requires_gpu
def test_embedding_bag_offsets_end_before_indices():
    """include_last_offset with offsets[-1] < len(indices): trailing indices are ignored."""
    weight = torch.randn(10, 16, device="cuda")
    indices = torch.arange(10, device="cuda")
    offsets = torch.tensor([0, 2, 5], device="cuda")
    out = run_embedding_bag(weight, indices, offsets, "sum", None, True)
    ref = ref_embedding_bag(weight, indices, offsets, "sum", None, True)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize(
    ("mode", "psw"), [("sum", False), ("sum", True), ("mean", False), ("max", False)]
)
def test_embedding_bag_uint8_rows(mode, psw):
    """8-bit rowwise rows (unaligned scales and biases when d % 4 != 0) against the
    float64 pooling of their dequantized values."""
    gen = torch.Generator().manual_seed(5)
    # pad 8 at d = 16 and 128: 16-byte rows, the 16-byte code loads; 4-byte loads at
    # d % 4 == 0 otherwise; scalar loads else. Built on the device, so the stride stays.
    for d, pad, n_idx in itertools.product((1, 3, 16, 33, 128), (0, 5, 8), (0, 1, 500)):
        full = torch.zeros(40, d + 8 + pad, dtype=torch.uint8, device="cuda")
        weight, values, _ = q8_rows(40, d, gen, out=full)
        indices = torch.randint(0, 40, (n_idx,), generator=gen)
        offsets = make_bags(64, n_idx, gen)
        w = torch.rand(n_idx, generator=gen) if psw else None
        out = torch.empty(64, d, device="cuda")
        _C_cuda.embedding_bag(
            targ(weight),
            targ(indices.cuda()),
            targ(offsets.cuda()),
            targ(out),
            MODES[mode],
            None if w is None else targ(w.cuda()),
            True,
            stream(),
        )
        ref = ref_embedding_bag(values, indices, offsets, mode, w, True)
        torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("dim", [32, 33])  # uint8 rows: 4-byte and scalar code loads
def test_ops_embedding_bags_native_on_cuda(dtype, dim):
    """The op's native impl on CUDA (one kernel launch per table) against its reference."""
    from pydeepbench import ops, registry

    spec = registry.get_op("embedding_bags")
    s = spec.validate_shape(dict(tables=3, rows=[50, 7, 300], dim=dim, batch=16, pooling=[2, 1, 5]))
    for v in spec.variants(spec.make_inputs(s, dtype, "cuda", 0))[:2]:
        out = ops.embedding_bags(
            v["weight"], v["table_offsets"], v["indices"], v["offsets"], impl="native"
        )
        ref = spec.reference(**v)
        torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-4, atol=1e-4)


@needs_module
class TestEmbeddingBagValidation:
    def call(self, weight, indices, offsets, out, mode=0, psw=None, include_last=False):
        _C_cuda.embedding_bag(
            targ(weight),
            targ(indices),
            targ(offsets),
            targ(out),
            mode,
            None if psw is None else targ(psw),
            include_last,
            0,
        )

    def test_errors(self):
        w, i, o = torch.randn(10, 4), torch.zeros(6, dtype=torch.long), torch.tensor([0, 3])
        out = torch.empty(2, 4)
        with pytest.raises(ValueError, match="offsets must be int64"):
            self.call(w, i, o.int(), out)
        with pytest.raises(ValueError, match="indices must be int32 or int64"):
            self.call(w, i.float(), o.float(), out)
        with pytest.raises(ValueError, match="out must be 1x4"):
            self.call(w, i, o, out, include_last=True)
        with pytest.raises(ValueError, match="out must be float32"):
            self.call(w, i, o, out.half())
        with pytest.raises(ValueError, match="mode must be"):
            self.call(w, i, o, out, mode=3)
        with pytest.raises(ValueError, match="only supported with mode 0"):
            self.call(w, i, o, out, mode=1, psw=torch.ones(6))
        with pytest.raises(ValueError, match="must have 6 elements"):
            self.call(w, i, o, out, psw=torch.ones(5))
        with pytest.raises(ValueError, match="weight must be row-major"):
            self.call(torch.randn(4, 10).t(), i, o, out)
        with pytest.raises(ValueError, match="needs at least one offset"):
            self.call(w, i, o[:0], torch.empty(0, 4), include_last=True)
        q = torch.zeros(10, 12, dtype=torch.uint8)  # uint8 rows: D = 4 codes + scale, bias
        with pytest.raises(ValueError, match="needs D \\+ 8 columns"):
            self.call(q[:, :8], i, o, torch.empty(2, 0))
        with pytest.raises(ValueError, match="per_sample_weights must be float32"):
            self.call(q, i, o, out, psw=torch.ones(6, dtype=torch.uint8))

    def test_no_bags_is_a_no_op(self):
        # Zero bags never reach the device.
        self.call(
            torch.randn(10, 4),
            torch.zeros(6, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            torch.empty(0, 4),
        )

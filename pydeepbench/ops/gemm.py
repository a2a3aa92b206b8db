"""GEMM: out[M,N] = a[M,K] @ b[K,N].

Layouts: a_t makes `a` a transposed view of a contiguous (K, M) tensor, b_t makes `b` a
transposed view of a contiguous (N, K) tensor (nn.Linear's weight); otherwise both are
row-major. col_major reads (M, N, K, a_t, b_t) as DeepBench's tuples do, for cuBLAS's
column-major C[MxN] = op(A) op(B): in row-major memory that is C^T[NxM] = op(B)^T op(A)^T,
which make_inputs builds, so A, B and C have DeepBench's layouts (its NN has A contiguous
along M and B along K, which the row-major reading would store the other way round).
FLOPs = 2*M*N*K (one multiply and one add per term). Bytes = each of A, B and C moved
once: (M*K + K*N + M*N) * element size, the compulsory traffic a perfectly blocked kernel
needs.

Inputs are seeded: a ~ N(0, 1), b ~ N(0, 1/K), so outputs are O(1) for every K and one
(atol, rtol) per dtype serves all shapes. The reference is computed in float64 from the
same (already rounded) inputs.
"""

from __future__ import annotations

import math

import torch

from pydeepbench import _native
from pydeepbench._native import DTYPE_CODES
from pydeepbench.check import Tolerance
from pydeepbench.ops import _triton
from pydeepbench.ops._spec import (
    TF32,
    OpSpec,
    explain_unaddressable,
    kernel_operands,
    needs_operand_care,
    tf32_matmul,
)
from pydeepbench.registry import get_impl, register_impl, register_op

# fp32: accumulation-order differences grow ~sqrt(K)*eps; 1e-4 rejects a bf16-rounded
# "fp32" GEMM (errors ~4e-3). TF32: operands truncated to 10-bit mantissas (the worst
# case; cvt.rna rounds) gave max errors of 3.5e-3 to 4.5e-3 on these inputs, emulated on
# the CPU for 2048x2048x64 up to 1024x1024x16384, needing atol 1.7e-3 beside rtol 5e-3.
# bf16/fp16 outputs are rounded to 8/11 mantissa bits.
TOLERANCES = {
    torch.float32: Tolerance(atol=1e-4, rtol=1e-4),
    TF32: Tolerance(atol=5e-3, rtol=5e-3),
    torch.bfloat16: Tolerance(atol=2e-2, rtol=1.6e-2),
    torch.float16: Tolerance(atol=2e-3, rtol=2e-3),
}


@register_op("gemm")
class Gemm(OpSpec):
    fields = {
        "M": (int, None, 1),
        "N": (int, None, 1),
        "K": (int, None, 1),
        "a_t": (bool, False, 0),
        "b_t": (bool, False, 0),
        "col_major": (bool, False, 0),
    }
    tolerances = TOLERANCES

    def describe(self, s: dict) -> str:
        lay = ("T" if s["a_t"] else "N") + ("T" if s["b_t"] else "N")
        return f"M={s['M']},N={s['N']},K={s['K']},{lay}" + (",col" if s["col_major"] else "")

    def flops(self, s: dict) -> float:
        return 2.0 * s["M"] * s["N"] * s["K"]

    def bytes(self, s: dict, dtype: torch.dtype) -> float:
        return float((s["M"] * s["K"] + s["K"] * s["N"] + s["M"] * s["N"]) * dtype.itemsize)

    def footprint_bytes(self, s: dict, dtype: torch.dtype) -> int:
        """Peak memory of one checked case: inputs, outputs, float64 reference and the
        float64 copies the gate compares."""
        M, N, K = s["M"], s["N"], s["K"]
        return (M * K + K * N) * (dtype.itemsize + 4 + 8) + M * N * (2 * dtype.itemsize + 8 * 4)

    def device_bytes(self, s: dict, dtype: torch.dtype) -> int:
        """On a GPU: the operands and a copy of each (cuda_gemm copies one without a unit
        stride), and two outputs (an impl's, and the next one's before it is freed)."""
        M, N, K = s["M"], s["N"], s["K"]
        return 2 * (M * K + K * N + M * N) * dtype.itemsize

    def make_inputs(self, s: dict, dtype: torch.dtype, device: str, seed: int) -> dict:
        if s.get("col_major"):  # the row-major problem with the same bytes (module doc)
            s = {"M": s["N"], "N": s["M"], "K": s["K"], "a_t": s["b_t"], "b_t": s["a_t"]}
        g = torch.Generator().manual_seed(seed)
        M, N, K = s["M"], s["N"], s["K"]
        a = torch.randn((K, M) if s["a_t"] else (M, K), generator=g)
        b = torch.randn((N, K) if s["b_t"] else (K, N), generator=g) / math.sqrt(K)
        a, b = a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)
        return {"a": a.t() if s["a_t"] else a, "b": b.t() if s["b_t"] else b}

    def reference(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.to("cpu", torch.float64) @ b.to("cpu", torch.float64)


def _validate(a: torch.Tensor, b: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("gemm: a and b must be torch.Tensors")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"gemm: a and b must be 2-D, got {a.dim()}-D and {b.dim()}-D")
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"gemm: shapes {tuple(a.shape)} and {tuple(b.shape)} do not multiply "
            f"(a has K={a.shape[1]}, b has K={b.shape[0]})"
        )
    if a.dtype != b.dtype:
        raise ValueError(f"gemm: a is {a.dtype} but b is {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"gemm: a is on {a.device} but b is on {b.device}")


def gemm(a: torch.Tensor, b: torch.Tensor, *, impl: str = "native") -> torch.Tensor:
    """a @ b with the chosen implementation (ootb, native, triton)."""
    _validate(a, b)
    chosen = get_impl("gemm", impl)
    device = a.device.type
    why = chosen.why_not(device, a.dtype)
    if why:
        raise ValueError(f"gemm impl {impl!r} cannot run here: {why}")
    if needs_operand_care(impl, a, b, a):
        a, b = kernel_operands("gemm", impl, ("a", a), ("b", b))
    try:
        return chosen.fn(a, b)
    except (RuntimeError, ValueError) as e:
        explain_unaddressable("gemm", impl, e, ("a", a), ("b", b))
        raise


# Where each impl runs which precision. fp16 has no C++ path (no fp16 FMA on these CPUs);
# TF32 is a CUDA tensor-core mode (torch.matmul reads the same switch as our kernels).
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
OOTB_DTYPES = {"cpu": _FLOATS, "cuda": (*_FLOATS, TF32)}
NATIVE_DTYPES = {"cpu": (torch.float32, torch.bfloat16), "cuda": (*_FLOATS, TF32)}
TRITON_DTYPES = OOTB_DTYPES


@register_impl("gemm", "ootb", devices=("cpu", "cuda"), dtypes=OOTB_DTYPES)
def gemm_ootb(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.matmul (MKL/oneDNN on CPU, cuBLAS on GPU)."""
    return torch.matmul(a, b)


def _fp32_bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    """The bias as the kernels read it (fp32, contiguous). The caller keeps the returned
    tensor alive across the native call, since it may be a fresh copy."""
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        return bias.to(torch.float32).contiguous()
    return bias


def cpu_gemm(a: torch.Tensor, b_arg: tuple, n: int, bias: torch.Tensor | None, relu: bool):
    """relu?(a @ b + bias) on the C++ kernel, b given as its native argument (so that
    linear can pass W.t() without building the view). Written flat: at DLRM's smallest
    layers (128x16x64, ~2.5 us in the kernel) this Python is half of the call, and each
    helper call costs ~0.1 us. (Passing the tensors for the binding to read through
    CPython was slower still: torch's getters are the cost, not the bytecode.)"""
    if bias is not None:
        bias = _fp32_bias(bias)
    sizes = a.shape
    m, code = sizes[0], DTYPE_CODES[a.dtype]  # fp32 or bf16: the callers checked it
    out = _native.empty_matrix(a, m, n)
    _native.cpu().gemm(
        (a.data_ptr(), sizes, a.stride(), code),
        b_arg,
        (out.data_ptr(), (m, n), (n, 1), code),
        None if bias is None else _native.arg(bias),
        relu,
    )
    return out


def cuda_gemm(
    a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False
) -> torch.Tensor:
    """relu?(a @ b + bias) on our CUDA kernels; bias is applied in fp32."""
    bias = _fp32_bias(bias)
    bias_arg = None if bias is None else _native.arg(bias)
    shape = (a.shape[0], b.shape[1])
    out = torch.empty(shape, dtype=a.dtype, device=a.device)
    # The CUDA kernels read operands with unit stride along one dimension.
    a, b = (t if 1 in t.stride() else t.contiguous() for t in (a, b))
    stream = torch.cuda.current_stream(a.device).cuda_stream
    # The extension launches on (and checks the capability of) the runtime's current
    # device: make it the tensors' one.
    with torch.cuda.device(a.device):
        _native.cuda().gemm(
            _native.arg(a),
            _native.arg(b),
            _native.arg(out),
            bias_arg,
            relu,
            stream,
            a.dtype == torch.float32 and tf32_matmul(),
        )
    return out


def native_available(device: str) -> str | None:
    return _native.cuda_unavailable() if device == "cuda" else _native.cpu_unavailable()


@register_impl(
    "gemm",
    "native",
    devices=("cpu", "cuda"),
    dtypes=NATIVE_DTYPES,
    available=native_available,
)
def gemm_native(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Our kernels: C++ (packed, cache-blocked, ISA chosen at run time) or CUDA tensor cores."""
    if a.is_cuda:
        return cuda_gemm(a, b)
    sizes = b.shape
    return cpu_gemm(
        a, (b.data_ptr(), sizes, b.stride(), DTYPE_CODES[b.dtype]), sizes[1], None, False
    )


@register_impl(
    "gemm",
    "triton",
    devices=("cpu", "cuda"),
    dtypes=TRITON_DTYPES,
    available=_triton.unavailable,
    supports=lambda s, dtype, device: _triton.too_big_for_interpreter(Gemm().flops(s), device),
)
def gemm_triton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Triton tl.dot kernel, grouped tile order, fp32 accumulate (interpreter on CPU)."""
    from pydeepbench.kernels import gemm as kernel

    return kernel.gemm(a, b, allow_tf32=tf32_matmul())

"""Linear: y = act(x @ weight.T + bias), nn.Linear semantics (weight is (out, in)).

Shapes: M = rows of x (batch), K = in features, N = out features; `bias` and `relu`
flags. FLOPs = 2*M*N*K for the GEMM plus M*N for the bias add (ReLU is a comparison, not
counted). Bytes = x + weight + bias + y, each moved once. The optimized impls fuse bias and
ReLU into the GEMM epilogue; OOTB is what a researcher writes: F.relu(F.linear(x, w, b)).
Tolerances are GEMM's (the epilogue adds no error beyond one rounding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pydeepbench._native import DTYPE_CODES
from pydeepbench.ops import _triton
from pydeepbench.ops._spec import (
    OpSpec,
    explain_unaddressable,
    kernel_operands,
    needs_operand_care,
    tf32_matmul,
)
from pydeepbench.ops.gemm import (
    NATIVE_DTYPES,
    OOTB_DTYPES,
    TOLERANCES,
    TRITON_DTYPES,
    Gemm,
    cpu_gemm,
    cuda_gemm,
    native_available,
)
from pydeepbench.registry import get_impl, register_impl, register_op

ACTIVATIONS = (None, "relu")


@register_op("linear")
class Linear(OpSpec):
    fields = {
        "M": (int, None, 1),
        "N": (int, None, 1),
        "K": (int, None, 1),
        "bias": (bool, True, 0),
        "relu": (bool, True, 0),
    }
    tolerances = TOLERANCES

    def describe(self, s: dict) -> str:
        epi = ("+bias" if s["bias"] else "") + ("+relu" if s["relu"] else "")
        return f"M={s['M']},N={s['N']},K={s['K']}{epi}"

    def flops(self, s: dict) -> float:
        return 2.0 * s["M"] * s["N"] * s["K"] + (s["M"] * s["N"] if s["bias"] else 0)

    def bytes(self, s: dict, dtype: torch.dtype) -> float:
        M, N, K = s["M"], s["N"], s["K"]
        return float((M * K + N * K + M * N + (N if s["bias"] else 0)) * dtype.itemsize)

    def footprint_bytes(self, s: dict, dtype: torch.dtype) -> int:
        return Gemm().footprint_bytes({**s, "a_t": False, "b_t": True}, dtype)

    def device_bytes(self, s: dict, dtype: torch.dtype) -> int:
        """Gemm's, and the bias with its fp32 copy."""
        return Gemm().device_bytes(s, dtype) + s["N"] * (dtype.itemsize + 4)

    def make_inputs(self, s: dict, dtype: torch.dtype, device: str, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        M, N, K = s["M"], s["N"], s["K"]
        x = torch.randn(M, K, generator=g)
        w = torch.randn(N, K, generator=g) / math.sqrt(K)
        b = torch.randn(N, generator=g) if s["bias"] else None
        cast = dict(device=device, dtype=dtype)
        return {
            "x": x.to(**cast),
            "weight": w.to(**cast),
            "bias": None if b is None else b.to(**cast),
            "activation": "relu" if s["relu"] else None,
        }

    def reference(self, x, weight, bias, activation) -> torch.Tensor:
        d = dict(device="cpu", dtype=torch.float64)
        y = x.to(**d) @ weight.to(**d).t()
        if bias is not None:
            y += bias.to(**d)
        return y.clamp_min(0) if activation == "relu" else y


def _validate(x, weight, bias, activation) -> None:
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"linear: {name} must be a torch.Tensor")
    if weight.dim() != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got {weight.dim()}-D")
    if x.dim() < 1:
        raise ValueError("linear: x must be at least 1-D (..., in_features), got a 0-d tensor")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: x has {x.shape[-1]} features but weight "
            f"{tuple(weight.shape)} expects {weight.shape[1]}"
        )
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],):
            got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {got}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: activation must be None or 'relu', got {activation!r}")
    tensors = [t for t in (x, weight, bias) if t is not None]
    if len({t.dtype for t in tensors}) != 1:
        raise ValueError(f"linear: dtypes differ: {[str(t.dtype) for t in tensors]}")
    if len({t.device for t in tensors}) != 1:
        raise ValueError(
            f"linear: tensors are on different devices: {[str(t.device) for t in tensors]}"
        )


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    impl: str = "native",
) -> torch.Tensor:
    """act(x @ weight.T + bias) for x of shape (..., in); activation None or "relu"."""
    _validate(x, weight, bias, activation)
    chosen = get_impl("linear", impl)
    why = chosen.why_not(x.device.type, x.dtype)
    if why:
        raise ValueError(f"linear impl {impl!r} cannot run here: {why}")
    if needs_operand_care(impl, x, weight, x if bias is None else bias):
        named = [("x", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
        x, weight, *rest = kernel_operands("linear", impl, *named)
        bias = rest[0] if rest else None
    lead = x.shape[:-1]
    # The rows spelled out: reshape(-1, 0) is ambiguous when in_features is 0. A 2-D x as
    # it is (a sparse x, which F.linear takes, has no reshape).
    rows = x if x.dim() == 2 else x.reshape(math.prod(lead), x.shape[-1])
    try:
        y = chosen.fn(rows, weight, bias, activation)
    except (RuntimeError, ValueError) as e:
        explain_unaddressable("linear", impl, e, ("x", x), ("weight", weight), ("bias", bias))
        raise
    return y.reshape(*lead, weight.shape[0])


@register_impl("linear", "ootb", devices=("cpu", "cuda"), dtypes=OOTB_DTYPES)
def linear_ootb(x, weight, bias, activation):
    """F.linear then F.relu, as a researcher writes it."""
    y = F.linear(x, weight, bias)
    return F.relu(y) if activation == "relu" else y


@register_impl(
    "linear",
    "native",
    devices=("cpu", "cuda"),
    dtypes=NATIVE_DTYPES,
    available=native_available,
)
def linear_native(x, weight, bias, activation):
    """Our GEMM (C++ or CUDA) with bias + ReLU applied in the epilogue, in registers."""
    if not x.is_cuda:
        # weight.t() as the kernel's argument, without building the view.
        (n, k), (sn, sk) = weight.shape, weight.stride()
        w_t = (weight.data_ptr(), (k, n), (sk, sn), DTYPE_CODES[weight.dtype])
        return cpu_gemm(x, w_t, n, bias, activation == "relu")
    return cuda_gemm(x, weight.t(), bias, activation == "relu")


@register_impl(
    "linear",
    "triton",
    devices=("cpu", "cuda"),
    dtypes=TRITON_DTYPES,
    available=_triton.unavailable,
    supports=lambda s, dtype, device: _triton.too_big_for_interpreter(Linear().flops(s), device),
)
def linear_triton(x, weight, bias, activation):
    """Triton tl.dot kernel with the bias/ReLU epilogue fused."""
    from pydeepbench.kernels import gemm as kernel

    return kernel.gemm(x, weight.t(), bias, activation, allow_tf32=tf32_matmul())

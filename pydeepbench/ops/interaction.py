"""DLRM's "dot" feature interaction: out = [x, strict lower triangle of T T^T] per sample,
with T = [x; the T-1 pooled embeddings] as F rows of width D (F = tables + 1).

Shapes: B samples, F features (the dense bottom-MLP output plus one per table), D width.
Inputs are x (B, D) and the pooled embeddings (B, (F-1)*D), the layout `embedding_bags`
returns; the output is (B, D + F(F-1)/2), pair (i, j), i > j, at column
D + i(i-1)/2 + j (torch.tril_indices(F, F, -1) order, as facebookresearch/dlrm).
FLOPs = 2 * B * D * F(F-1)/2 (the pairs only: the reference bmm also computes the
diagonal and upper triangle, which DLRM throws away). Bytes = x and the pooled embeddings
read once, the output written once: (B*F*D + B*(D + F(F-1)/2)) * 4.
Tolerance: fp32 dot products of D O(1) terms, as GEMM's.
"""

from __future__ import annotations

import torch

from pydeepbench import _native
from pydeepbench.ops._spec import (
    OpSpec,
    explain_unaddressable,
    kernel_operands,
    needs_operand_care,
)
from pydeepbench.ops.gemm import TOLERANCES
from pydeepbench.registry import get_impl, register_impl, register_op


def pairs(F: int) -> int:
    return F * (F - 1) // 2


@register_op("dot_interaction")
class DotInteraction(OpSpec):
    fields = {"B": (int, None, 1), "F": (int, None, 2), "D": (int, None, 1)}
    tolerances = {torch.float32: TOLERANCES[torch.float32]}

    def describe(self, s: dict) -> str:
        return f"B={s['B']},F={s['F']},D={s['D']}"

    def flops(self, s: dict) -> float:
        return 2.0 * s["B"] * s["D"] * pairs(s["F"])

    def bytes(self, s: dict, dtype: torch.dtype) -> float:
        B, F, D = s["B"], s["F"], s["D"]
        return float((B * F * D + B * (D + pairs(F))) * dtype.itemsize)

    def footprint_bytes(self, s: dict, dtype: torch.dtype) -> int:
        B, F, D = s["B"], s["F"], s["D"]
        # inputs, OOTB's concatenated T and (B, F, F) product, outputs, float64 reference
        return B * (F * D * (2 * 4 + 8) + F * F * (4 + 8) + (D + pairs(F)) * (2 * 4 + 8 * 3))

    def make_inputs(self, s: dict, dtype: torch.dtype, device: str, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        B, F, D = s["B"], s["F"], s["D"]
        x = torch.randn(B, D, generator=g) / D**0.5  # O(1) dot products for every D
        emb = torch.randn(B, (F - 1) * D, generator=g) / D**0.5
        return {"x": x.to(device=device, dtype=dtype), "emb": emb.to(device=device, dtype=dtype)}

    def reference(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Each pair's dot product on its own, in float64, in the documented column order:
        independent of the OOTB code (one bmm, then a gather of its lower triangle)."""
        x = x.cpu().double()
        B, D = x.shape
        rows = [x, *emb.cpu().double().reshape(B, emb.shape[1] // D, D).unbind(1)]
        dots = [
            (rows[i] * rows[j]).sum(1, keepdim=True) for i in range(len(rows)) for j in range(i)
        ]
        return torch.cat([x, *dots], dim=1)


def _validate(x, emb) -> None:
    for name, t in (("x", x), ("emb", emb)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"dot_interaction: {name} must be a 2-D torch.Tensor")
    if emb.shape[0] != x.shape[0]:
        raise ValueError(f"dot_interaction: x has {x.shape[0]} rows but emb has {emb.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError("dot_interaction: x has width 0; the features need D >= 1")
    if emb.shape[1] % x.shape[1]:
        raise ValueError(
            f"dot_interaction: emb width {emb.shape[1]} is not a multiple of x's {x.shape[1]}"
        )
    if x.dtype != emb.dtype or x.device != emb.device:
        raise ValueError("dot_interaction: x and emb differ in dtype or device")


def dot_interaction(x: torch.Tensor, emb: torch.Tensor, *, impl: str = "native") -> torch.Tensor:
    """[x, tril_{-1}(T T^T)] per sample, T = [x; emb viewed as (F-1) rows of x's width]."""
    _validate(x, emb)
    chosen = get_impl("dot_interaction", impl)
    why = chosen.why_not(x.device.type, x.dtype)
    if why:
        raise ValueError(f"dot_interaction impl {impl!r} cannot run here: {why}")
    if needs_operand_care(impl, x, emb, x):
        x, emb = kernel_operands("dot_interaction", impl, ("x", x), ("emb", emb))
    try:
        return chosen.fn(x, emb)
    except (RuntimeError, ValueError) as e:
        explain_unaddressable("dot_interaction", impl, e, ("x", x), ("emb", emb))
        raise


def dlrm_dot(x: torch.Tensor, ly: list[torch.Tensor]) -> torch.Tensor:
    """facebookresearch/dlrm's interact_features ("dot"), as it is written there: cat the
    bottom output and the pooled embeddings `ly`, bmm, gather the lower triangle, cat.
    The OOTB DLRM model calls this too."""
    B, D = x.shape
    cat = torch.cat([x, *ly], dim=1)
    T = cat.view(B, cat.shape[1] // D, D)  # F spelled out: view(0, -1, D) is ambiguous
    Z = torch.bmm(T, T.transpose(1, 2))
    li, lj = torch.tril_indices(T.shape[1], T.shape[1], offset=-1)
    return torch.cat([x, Z[:, li, lj]], dim=1)


@register_impl("dot_interaction", "ootb", devices=("cpu", "cuda"), dtypes=(torch.float32,))
def interaction_ootb(x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """DLRM's reference code (`dlrm_dot`) on the packed embeddings."""
    return dlrm_dot(x, [emb])


def _native_unavailable(device: str) -> str | None:
    why = _native.cpu_unavailable()
    if why is None and not hasattr(_native.cpu(), "dot_interaction"):
        why = "this build of pydeepbench._C has no interaction kernel"
    return why


@register_impl(
    "dot_interaction",
    "native",
    devices=("cpu",),
    dtypes=(torch.float32,),
    available=_native_unavailable,
)
def interaction_native(x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """C++: per sample, the F rows stay in L1 while four pair dot products run at a time;
    no concatenated copy of T and no (B, F, F) product."""
    x, emb = (t if t.stride(1) == 1 else t.contiguous() for t in (x, emb))
    B, D = x.shape
    F = 1 + emb.shape[1] // D
    out = _native.empty((B, D + pairs(F)), torch.float32)
    if B == 0:  # nothing to read; an empty strided view stays strided through contiguous()
        return out
    _native.cpu().dot_interaction(_native.arg(x), _native.arg(emb), _native.arg(out))
    return out

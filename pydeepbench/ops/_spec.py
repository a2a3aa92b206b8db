"""What every op spec shares: shape validation from a field table, and the gate's
tolerance lookup. Op-specific math (inputs, reference, FLOPs, bytes) lives in each op's file."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.autograd.forward_ad as fwAD

from pydeepbench.check import Tolerance, tolerance_for

# Not a storage dtype: fp32 tensors whose matmul products run as TF32 (10-bit mantissas)
# on CUDA tensor cores, by torch's fp32_precision switch, which torch.matmul, our CUDA
# GEMM and Triton's tl.dot follow (the runner sets it per row: matmul_precision).
TF32 = "tf32"


def tf32_matmul() -> bool:
    """Whether torch's fp32 matmuls may use TF32 (the switch our CUDA and Triton kernels
    follow, as torch.matmul does). torch >= 2.9 reads it from `fp32_precision`, and once
    that is set, reading the legacy `allow_tf32` raises (torch refuses the mixed APIs)."""
    precision = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if precision is None:  # torch < 2.9
        return torch.backends.cuda.matmul.allow_tf32
    return precision == "tf32"


@contextlib.contextmanager
def matmul_precision(device: str, dtype: torch.dtype | str) -> Iterator[None]:
    """On a CUDA device, fp32 rows run IEEE fp32 products and TF32 rows TF32 ones, by
    torch's switch (which torch.matmul, our CUDA GEMM and Triton follow): a TF32 setting
    made outside must not turn an fp32 row into a TF32 one, which fails the fp32 gate.
    The switch is restored after the row."""
    if not device.startswith("cuda") or storage_dtype(dtype) != torch.float32:
        yield
        return
    switch = torch.backends.cuda.matmul
    tf32 = dtype == TF32
    if hasattr(switch, "fp32_precision"):  # torch >= 2.9 (tf32_matmul)
        name, value = "fp32_precision", "tf32" if tf32 else "ieee"
    else:
        name, value = "allow_tf32", tf32
    before = getattr(switch, name)
    setattr(switch, name, value)
    try:
        yield
    finally:
        setattr(switch, name, before)


DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    # 8-bit rowwise-quantized embedding rows (FBGEMM's fused layout; ops/embedding_bag.py).
    "uint8": torch.uint8,
    "tf32": TF32,
}


def parse_dtype(name: str) -> torch.dtype | str:
    """A torch dtype, or TF32."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; use one of fp32, tf32, bf16, fp16, uint8")
    return DTYPE_NAMES[name]


def dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")


def storage_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """The tensors' dtype: fp32 for TF32."""
    return torch.float32 if dtype == TF32 else dtype


class OpSpec:
    name: str
    # Ops that measure another aspect of an op (e.g. its training step) read that op's
    # shape sets; None means their own.
    shape_op: str | None = None
    # key -> (type, default or None when required, constraint): the constraint is the
    # minimum for int/float (and for each element of a list of ints), the allowed values
    # for str.
    fields: dict[str, tuple[type, object, object]] = {}
    tolerances: dict[torch.dtype, Tolerance] = {}
    # Reads random rows (embedding lookups): rows are also placed against the measured
    # gather roof, not only STREAM's (roofline.place).
    gathers: bool = False
    # The gate checks an impl on every variant it is timed on. Ops whose calls change the
    # state the next call starts from (training steps) check the first only: its
    # reference is one step from the inputs as made.
    check_every_variant: bool = True

    def variants(self, inputs: dict) -> list[dict]:
        """Input sets the timed loop cycles through (ops whose data must change per step,
        like embedding indices, return several); see check_every_variant."""
        return [inputs]

    def device_bytes(self, s: dict, dtype: torch.dtype) -> int:
        """The part of footprint_bytes (the memory check's host total) a GPU holds: its
        inputs, outputs and impls' copies. By default all of it, an upper bound."""
        return self.footprint_bytes(s, dtype)

    def observe(self, out, inputs: dict):
        """The part of an impl's output the gate compares with `reference` (all of it,
        unless the op says otherwise, e.g. only the rows a training step may touch)."""
        return out

    def validate_shape(self, raw: dict) -> dict:
        unknown = set(raw) - set(self.fields)
        if unknown:
            raise ValueError(
                f"unknown shape field(s) {sorted(unknown)} for {self.name}; "
                f"fields: {', '.join(self.fields)}"
            )
        shape = {}
        for key, (typ, default, minimum) in self.fields.items():  # minimum: see `fields`
            if key not in raw:
                if default is None:
                    raise ValueError(f"{self.name} shape needs field {key!r}")
                shape[key] = default
                continue
            v = raw[key]
            if typ is bool:
                if isinstance(v, int) and v in (0, 1):
                    v = bool(v)
                if not isinstance(v, bool):
                    raise ValueError(f"shape field {key!r} must be true/false, got {v!r}")
            elif typ is int or typ is float:
                ok = isinstance(v, int) or (typ is float and isinstance(v, float))
                if isinstance(v, bool) or not ok:
                    what = "an integer" if typ is int else "a number"
                    raise ValueError(f"shape field {key!r} must be {what}, got {v!r}")
                if not math.isfinite(v):  # nan passed "v < minimum"
                    raise ValueError(f"shape field {key!r} must be a finite number, got {v}")
                if v < minimum:
                    raise ValueError(f"shape field {key!r} must be >= {minimum}, got {v}")
            elif typ is str:
                if v not in minimum:
                    raise ValueError(f"shape field {key!r} must be one of {minimum}, got {v!r}")
            elif typ is list:
                if isinstance(v, int) and not isinstance(v, bool):
                    v = [v]
                if (
                    not isinstance(v, list)
                    or not v
                    or not all(
                        isinstance(x, int) and not isinstance(x, bool) and x >= minimum for x in v
                    )
                ):
                    raise ValueError(
                        f"shape field {key!r} must be an integer or a non-empty list of "
                        f"integers >= {minimum}, got {v!r}"
                    )
            shape[key] = v
        return shape

    def tolerance(self, dtype: torch.dtype) -> Tolerance:
        return tolerance_for(self.tolerances, dtype)


STRIDED = torch.strided


def needs_operand_care(impl: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> bool:
    """Whether kernel_operands has anything to do for these tensors (c may repeat a): one
    flat test of the attributes, since the ops are timed at microseconds and the full
    call costs ~1 us."""
    return impl != "ootb" and (
        a.is_neg()
        or b.is_neg()
        or c.is_neg()
        or a.layout is not STRIDED
        or b.layout is not STRIDED
        or c.layout is not STRIDED
        or ((a.requires_grad or b.requires_grad or c.requires_grad) and torch.is_grad_enabled())
        or fwAD._current_level >= 0  # inside a forward-AD dual level (rare)
    )


def refuse_tangents(op: str, impl: str, *named: tuple[str, torch.Tensor | None]) -> None:
    """ValueError for a tensor carrying a forward-mode tangent (torch.autograd.forward_ad)
    given to an impl that computes none: the result would silently have no tangent."""
    if fwAD._current_level < 0:
        return
    for name, t in named:
        if t is not None and fwAD.unpack_dual(t).tangent is not None:
            raise ValueError(
                f"{op} impl {impl!r} computes no forward-mode gradients and {name} carries "
                "a tangent (a dual tensor), which it would drop; torch's ops (impl 'ootb') "
                "have forward-mode AD where torch implements it"
            )


def unaddressable(t: torch.Tensor) -> str | None:
    """What `t` is when it has no memory of its own for a kernel to read, else None."""
    if t._is_zerotensor():
        return "a zero tensor (torch._efficientzerotensor: no memory)"
    if torch._C._functorch.is_batchedtensor(t):
        return "batched by torch.func.vmap"
    if torch._C._functorch.is_functionaltensor(t) or torch._is_functional_tensor(t):
        return "functionalized (torch.func.functionalize)"
    return None


def explain_unaddressable(op: str, impl: str, error: Exception, *named) -> None:
    """For an impl of ours that failed with `error`: raise a ValueError saying which tensor
    has no memory to read (vmap's, functionalize's and zero tensors: torch's own messages
    name a data pointer), or return so the caller re-raises `error`. Called only on the
    error path, so it costs the calls nothing."""
    if impl == "ootb":
        return
    for name, t in named:
        if isinstance(t, torch.Tensor) and (kind := unaddressable(t)):
            raise ValueError(
                f"{op} impl {impl!r} reads tensors by address and {name} is {kind}; "
                "impl 'ootb' (torch's ops) takes it"
            ) from error


def kernel_operands(op: str, impl: str, *named: tuple[str, torch.Tensor]) -> list[torch.Tensor]:
    """The tensors as our kernels read them, by address. Dense (strided) layout only; a
    negative view (`z.conj().imag` of a complex z: its memory holds -x) resolved to a copy,
    which the address alone would read with the wrong sign. And, since only torch's own
    (ootb) impls have autograd here, refused when grad mode is on and one requires grad:
    the result would silently carry no gradient. The ops call this only when
    needs_operand_care says so (never for ootb, whose tensors torch reads itself)."""
    refuse_tangents(op, impl, *named)
    grad = torch.is_grad_enabled()
    out = []
    for name, t in named:
        if t.layout is not torch.strided:
            raise ValueError(f"{op}: {name} is a {t.layout} tensor; impl {impl!r} takes dense ones")
        if grad and t.requires_grad:
            raise ValueError(
                f"{op} impl {impl!r} computes no gradients and {name} requires grad: use "
                "impl 'ootb' for autograd, or call it under torch.no_grad()"
            )
        out.append(t.resolve_neg() if t.is_neg() else t)
    return out

"""
GEMM with a fused bias + activation epilogue, in Triton
========================================================

Computes, for ``a`` of shape (M, K) and ``b`` of shape (K, N),

.. math::

    C_{mn} = \\mathrm{act}\\Big(\\sum_{k=0}^{K-1} A_{mk} B_{kn} + \\mathrm{bias}_n\\Big),
    \\qquad \\mathrm{act} \\in \\{\\mathrm{id}, \\mathrm{relu}\\}

Tiling
------
Each program computes one ``BLOCK_M x BLOCK_N`` tile of C. It walks the K
dimension in steps of ``BLOCK_K``, loading a ``BLOCK_M x BLOCK_K`` tile of A and a
``BLOCK_K x BLOCK_N`` tile of B and accumulating their product with ``tl.dot``
into an fp32 accumulator:

.. math::

    C[m_0{:}m_0{+}B_M,\\; n_0{:}n_0{+}B_N] =
        \\sum_{j} A[m_0{:}m_0{+}B_M,\\; jB_K{:}(j{+}1)B_K]\\;
                  B[jB_K{:}(j{+}1)B_K,\\; n_0{:}n_0{+}B_N]

Loads are masked against M, N and the remaining K, with zeros filling the
out-of-range lanes, so any shape works (1, primes, ...) and the padded lanes
contribute nothing to the dot products.

Grouped program ordering
------------------------
Programs are launched on a 1-D grid. A plain row-major mapping of program id
to (pid_m, pid_n) walks one full row of C tiles before moving on, which
re-reads all of B for each row of tiles. Instead, ``GROUP_M`` consecutive tile
rows form a group and the programs of a group run column-major inside it, so
programs that are in flight together share both A row-panels and B
column-panels in L2 (the "swizzle" of the Triton matmul tutorial).

Epilogue
--------
The bias (any float dtype, loaded as fp32) is added to the fp32 accumulator,
the activation is applied, and only then is the tile rounded to the output
dtype (the input dtype) and stored.

Precision
---------
fp32 inputs use ``input_precision="ieee"`` (true fp32 products) unless
``allow_tf32=True``, which selects ``"tf32"``. bf16/fp16 inputs use the tensor
cores natively; accumulation is always fp32.

Strides
-------
Both operands are addressed through their strides, so transposed views
(``x.t()``) and sliced, non-contiguous views are consumed without a copy.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

__all__ = ["gemm", "interpreted"]

_ACTIVATIONS = (None, "relu")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_BLOCK_K = 64  # the largest BLOCK_K among _autotune_configs (a test holds them to it)


def interpreted() -> bool:
    """True when Triton runs kernels with its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def on_device(t: torch.Tensor):
    """Context for a launch: Triton launches on the current CUDA device (and its stream),
    so make it `t`'s (a no-op for the interpreter's CPU tensors)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _autotune_configs() -> list[triton.Config]:
    if interpreted():
        # The interpreter executes every program in numpy: one small config, no
        # benchmarking (the autotuner skips timing when only one config exists).
        # GROUP_M = 3 need not be a power of two; it makes small test shapes hit both
        # full and short (last) program groups.
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 3})]

    def cfg(bm, bn, bk, gm, stages, warps):
        return triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": gm},
            num_stages=stages,
            num_warps=warps,
        )

    return [
        cfg(128, 256, 64, 8, 3, 8),
        cfg(256, 128, 64, 8, 3, 8),
        cfg(128, 128, 64, 8, 4, 4),
        cfg(128, 128, 32, 8, 4, 4),
        cfg(128, 64, 32, 8, 4, 4),
        cfg(64, 128, 32, 8, 4, 4),
        cfg(64, 64, 32, 8, 4, 4),
        cfg(128, 32, 32, 8, 4, 4),
        cfg(32, 64, 32, 8, 5, 2),
        cfg(16, 64, 64, 4, 4, 4),  # skinny M (DeepBench inference shapes)
    ]


def _aligned(ints, tensors) -> bool:
    """Whether Triton specializes this launch with 16-divisibility on every size, stride
    and pointer (a stride of 1 is specialized as the constant), which vectorized loads and
    the pipelined asynchronous copies need. Passed as ALIGNED, in the autotune key: the
    configs _prune keeps differ, so launches of the same M, N, K must not share a choice."""
    return all(i == 1 or i % 16 == 0 for i in ints) and all(t.data_ptr() % 16 == 0 for t in tensors)


def _prune(configs, named_args, **kwargs):
    """The configs a GPU build runs without spilling, from ptxas' resource report
    (triton.compile to cubin for sm_80 and sm_90 without a GPU; tests/test_triton_build.py
    checks it). Untimed.
    - Unaligned launches (a size, stride or pointer not a multiple of 16, e.g. K = 13)
      compile without vector loads or pipelining, and every tile past 64x64 spills
      (bf16 128x256x64: 1 KB of stack a thread on sm_90): 64x64x32 only.
    - fp32 tiles take twice the bytes of bf16 ones: the BLOCK_K = 64 configs need 192-288
      KiB of shared memory, past both parts' limits (163 and 227 KiB); on CUDA cores
      (ieee, no tensor cores) 128-row tiles spill on sm_80 (8-528 B of stack a thread) and
      the big ones on sm_90 too (128x256x64: 17.5 KB): at most 64 rows there. Launching
      such a config is not an error the autotuner skips."""
    if not kwargs["ALIGNED"]:
        keep = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) == (64, 64)]
        return keep or configs[-1:]
    if named_args["a_ptr"].dtype != torch.float32:
        return configs
    ieee = kwargs.get("INPUT_PRECISION") == "ieee"

    def fits(c):
        bm, bn, bk = (c.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
        smem = c.num_stages * (bm + bn) * bk * 4
        return smem <= 160 * 1024 and (not ieee or bm <= 64)

    return [c for c in configs if fits(c)] or configs[-1:]


# The key holds what changes the best config besides M, N, K and the dtypes (which
# Triton adds): the precision, the epilogue, the layout (which strides are 1) and the
# alignment (which configs _prune keeps).
@triton.autotune(
    configs=_autotune_configs(),
    key=["M", "N", "K", "stride_ak", "stride_bn", "INPUT_PRECISION", "HAS_BIAS", "ACTIVATION"]
    + ["ALIGNED"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak,
    stride_bk, stride_bn,
    stride_bias,
    stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BF16_INTERPRETED: tl.constexpr,
    ALIGNED: tl.constexpr,  # only the autotuner's: the key and _prune
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    # -- grouped ordering: program id -> (pid_m, pid_n) ----------------------
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)  # last group may be short
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # -- tile coordinates; int64 so row * stride cannot overflow -------------
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N

    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    # -- main loop over K: fp32 accumulation ---------------------------------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        if BF16_INTERPRETED:  # see gemm()
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    # -- fused epilogue: bias, activation, round to the output dtype ---------
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n * stride_bias, mask=mask_n, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    if ACTIVATION == "relu":
        # Not tl.maximum: it lowers to maxnum, which turns NaN into 0; torch.relu keeps it.
        acc = tl.where(acc < 0.0, 0.0, acc)
    if BF16_INTERPRETED:
        # Round to nearest even on the fp32 bits (see gemm()); NaN stays a quiet NaN.
        u = acc.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        u = tl.where(acc != acc, 0x7FC0, u)
        c = u.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        c = acc.to(c_ptr.dtype.element_ty)

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, c, mask=mask_m[:, None] & mask_n[None, :])


def _check_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"gemm: {name} is on {t.device}, but a is on {device}")


def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """Return ``act(a @ b + bias)`` as a new contiguous (M, N) tensor in ``a.dtype``.

    Args:
        a: (M, K) fp32, bf16 or fp16 tensor, any strides.
        b: (K, N) tensor of the same dtype as ``a``, any strides.
        bias: optional (N,) tensor of any float dtype; added in fp32.
        activation: ``None`` or ``"relu"``.
        allow_tf32: for fp32 inputs, use TF32 tensor-core products instead of
            IEEE fp32 ones. Ignored for bf16/fp16.

    Raises:
        ValueError: on wrong rank, mismatched shapes, dtypes or devices, an
            unknown activation, or a non-CUDA device outside the interpreter.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError("gemm: a and b must be torch.Tensor")
    if a.dim() != 2:
        raise ValueError(f"gemm: a must be 2-D (M, K), got shape {tuple(a.shape)}")
    if b.dim() != 2:
        raise ValueError(f"gemm: b must be 2-D (K, N), got shape {tuple(b.shape)}")
    M, K = a.shape
    Kb, N = b.shape
    if K != Kb:
        raise ValueError(
            f"gemm: inner dimensions differ: a is {tuple(a.shape)}, b is {tuple(b.shape)}"
        )
    if a.dtype not in _DTYPES:
        raise ValueError(f"gemm: a has dtype {a.dtype}; supported: fp32, bf16, fp16")
    if b.dtype != a.dtype:
        raise ValueError(f"gemm: a and b dtypes differ ({a.dtype} vs {b.dtype})")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"gemm: activation must be None or 'relu', got {activation!r}")
    device = a.device
    _check_device("b", b, device)
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise ValueError("gemm: bias must be a torch.Tensor or None")
        if bias.dim() != 1 or bias.shape[0] != N:
            raise ValueError(
                f"gemm: bias must have shape ({N},) to match b's N, got {tuple(bias.shape)}"
            )
        if not bias.dtype.is_floating_point:
            raise ValueError(f"gemm: bias must be a float tensor, got {bias.dtype}")
        _check_device("bias", bias, device)
    if device.type != "cuda" and not interpreted():
        raise ValueError(
            f"gemm: tensors are on {device}; Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1 for the CPU interpreter)"
        )

    c = torch.empty((M, N), device=device, dtype=a.dtype)
    if M == 0 or N == 0:
        return c
    # The kernel reads memory, not the view: a negative view (the imaginary part of a
    # conjugated complex tensor, torch._neg_view) holds the values negated, and came out
    # with the wrong sign. resolve_neg copies only such a view.
    a, b = a.resolve_neg(), b.resolve_neg()
    bias = None if bias is None else bias.resolve_neg()

    # The kernel steps along K with 32-bit offsets (k * stride_k, k < BLOCK_K <= 64; int64
    # there spilled registers on sm_90): an operand whose K stride could overflow them is
    # copied with K contiguous (stride 1). A stride of 2^27 elements per K step had read
    # wild memory from k = 16.
    if K > 1 and a.stride(1) * _MAX_BLOCK_K >= 2**31:
        a = a.contiguous()
    if K > 1 and b.stride(0) * _MAX_BLOCK_K >= 2**31:
        b = b.t().contiguous().t()

    precision = "tf32" if (allow_tf32 and a.dtype == torch.float32) else "ieee"
    # Triton's interpreter stores bf16 as raw uint16 and its tl.dot multiplies the bit
    # patterns (triton-lang/triton#11584: bf16 arithmetic is unsupported there). Under
    # the interpreter only, bf16 tiles are widened to fp32 before the dot. That is
    # numerically the same product: a bf16 x bf16 product is exact in fp32, and the
    # accumulation is fp32 either way. Its fp32 -> bf16 cast truncates (1.0078125 came
    # out 1.0, and past the bf16 maximum finite), so the output is rounded to nearest even
    # on the bits instead. On GPUs the tiles go to tl.dot as bf16 and the cast rounds.
    bf16_interpreted = interpreted() and a.dtype == torch.bfloat16

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    aligned = _aligned((M, N, K, *a.stride(), *b.stride(), *c.stride()), (a, b, c))
    with on_device(a):
        _gemm_kernel[grid](
            a, b, bias if bias is not None else c, c,
            M, N, K,
            a.stride(0), a.stride(1),
            b.stride(0), b.stride(1),
            bias.stride(0) if bias is not None else 0,
            c.stride(0), c.stride(1),
            HAS_BIAS=bias is not None,
            ACTIVATION=activation or "none",
            INPUT_PRECISION=precision,
            BF16_INTERPRETED=bf16_interpreted,
            ALIGNED=aligned,
        )  # fmt: skip
    return c

"""The one place that imports the compiled modules and converts tensors for them (the
gemm/linear CPU path builds the same tuples inline: see ops/gemm.py's cpu_gemm).

Kernels in `_C` (CPU) and `_C_cuda` take each tensor as (data_ptr, sizes, strides,
dtype_code); the extension never links libtorch. Only pydeepbench.ops and the roofline
probes call kernels through here (the models allocate through it, system reads the
build's metadata, and runner and workload release the pool cache).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import threading
from types import ModuleType

import torch

DTYPE_CODES = {
    torch.float32: 0,
    torch.bfloat16: 1,
    torch.float16: 2,
    torch.int32: 3,
    torch.int64: 4,
    torch.uint8: 5,  # 8-bit rowwise-quantized embedding rows only
}


def arg(t: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...], int]:
    """A tensor as the extension sees it (no copy; the caller keeps `t` alive)."""
    code = DTYPE_CODES.get(t.dtype)
    if code is None:
        raise TypeError(f"dtype {t.dtype} cannot be passed to native kernels")
    return (t.data_ptr(), t.shape, t.stride(), code)


# Below this size torch's allocator (glibc) keeps freed memory in its heap anyway.
POOL_MIN_BYTES = 1 << 20


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor for a native op's output or table: from the host pool
    (2 MiB-aligned, huge-page advised, reused after free; see csrc/cpu/host_pool.h) when
    it is at least POOL_MIN_BYTES, else torch.empty."""
    nbytes = math.prod(shape) * dtype.itemsize
    # Sizes as separate ints: torch's argument parser takes them ~0.4 us faster than a
    # tuple, and this is on every small layer's call.
    if nbytes < POOL_MIN_BYTES:
        return torch.empty(*shape, dtype=dtype)
    # The block's buffer is exactly nbytes long, so frombuffer needs no count.
    return torch.frombuffer(cpu().HostBlock(nbytes), dtype=dtype).view(*shape)


def empty_matrix(like: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """empty((m, n), like.dtype), for a per-call output: below POOL_MIN_BYTES through
    like.new_empty, which skips torch.empty's dtype argument (0.25 us, a tenth of the
    Python around DLRM's smallest GEMM)."""
    if m * n * like.dtype.itemsize < POOL_MIN_BYTES:
        return like.new_empty(m, n)
    return empty((m, n), like.dtype)


def release_pool_cache() -> None:
    """Give the pool's freed blocks back to the OS (before a memory check)."""
    if cpu_unavailable() is None:
        cpu().host_pool_release_cached()


def host_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of CPU tensor `t` in host-pool memory: what the native embedding
    impls keep their tables in (huge pages cut the TLB misses of random row gathers)."""
    out = empty(tuple(t.shape), t.dtype)
    out.copy_(t)
    return out


# PYDEEPBENCH_ISA caps the CPU kernels' instruction set (csrc/common/cpu_features.h);
# the extension reads it once, so a misspelled value is refused here, not ignored.
ISA_CAPS = ("generic", "avx2", "avx512", "avx512_bf16", "amx")


def setting_problem() -> str | None:
    """What is wrong with the environment's settings for the CPU kernels, or None. The CLI
    refuses to run with one (every native row would be skipped for it, and the run pass)."""
    cap = os.environ.get("PYDEEPBENCH_ISA")
    if cap is not None and cap not in ISA_CAPS:
        return f"PYDEEPBENCH_ISA={cap!r} is not one of {', '.join(ISA_CAPS)}"
    # Read once by the host pool (csrc/cpu/host_pool.cpp) with strtoull, in MiB shifted to
    # bytes: "abc" read as 0, "-5" wrapped to a huge limit, and so would 2^44 MiB or more.
    pool = os.environ.get("PYDEEPBENCH_HOST_POOL_MB")
    if pool is not None:
        mb = pool.strip()
        if not (mb.isascii() and mb.isdigit() and int(mb) < 2**40):
            return f"PYDEEPBENCH_HOST_POOL_MB={pool!r} is not a number of MiB (>= 0)"
    return None


@functools.cache
def _load(name: str) -> tuple[ModuleType | None, str | None]:
    if name == "_C" and (why := setting_problem()):
        return None, why
    try:
        return importlib.import_module(f"pydeepbench.{name}"), None
    except ImportError as e:  # not built (e.g. PYDEEPBENCH_CUDA=OFF) or broken install
        return None, f"pydeepbench.{name} is not available ({e})"


_thread = threading.local()


def cpu() -> ModuleType:
    mod, why = _load("_C")
    if mod is None:
        raise RuntimeError(why)
    if not hasattr(_thread, "omp_synced"):
        # Our kernels size their OpenMP teams from this thread's setting, which
        # torch.set_num_threads reaches in a new Python thread only when torch first asks
        # for it there (until then a 1-thread setting ran our kernels on every core).
        torch.get_num_threads()
        _thread.omp_synced = True
    return mod


def cpu_unavailable() -> str | None:
    return _load("_C")[1]


def cuda() -> ModuleType:
    mod, why = _load("_C_cuda")
    if mod is None:
        raise RuntimeError(why)
    return mod


@functools.cache
def cuda_unavailable() -> str | None:
    """Why the CUDA kernels cannot run here, or None."""
    mod, why = _load("_C_cuda")
    if mod is None:
        return why or "the CUDA extension was not built (no nvcc at build time)"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    count, reason = mod.device_count()
    if count == 0:
        return f"CUDA runtime sees no device: {reason}"
    return None

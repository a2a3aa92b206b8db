"""The one place that imports the compiled modules and converts tensors for them.

Kernels in `_C` (CPU) and `_C_cuda` take each tensor as (data_ptr, sizes, strides,
dtype_code); the extension never links libtorch. Only pydeepbench.ops and the roofline
probes call into here.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

DTYPE_CODES = {
    torch.float32: 0,
    torch.bfloat16: 1,
    torch.float16: 2,
    torch.int32: 3,
    torch.int64: 4,
}


def arg(t: torch.Tensor) -> tuple[int, list[int], list[int], int]:
    """A tensor as the extension sees it (no copy; the caller keeps `t` alive)."""
    code = DTYPE_CODES.get(t.dtype)
    if code is None:
        raise TypeError(f"dtype {t.dtype} cannot be passed to native kernels")
    return (t.data_ptr(), list(t.shape), list(t.stride()), code)


@functools.cache
def _load(name: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(f"pydeepbench.{name}"), None
    except ImportError as e:  # not built (e.g. PYDEEPBENCH_CUDA=OFF) or broken install
        return None, f"pydeepbench.{name} is not available ({e})"


def cpu() -> ModuleType:
    mod, why = _load("_C")
    if mod is None:
        raise RuntimeError(why)
    return mod


def cpu_unavailable(device: str = "cpu") -> str | None:
    return _load("_C")[1]


def cuda() -> ModuleType:
    mod, why = _load("_C_cuda")
    if mod is None:
        raise RuntimeError(why)
    return mod


@functools.cache
def cuda_unavailable(device: str = "cuda") -> str | None:
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

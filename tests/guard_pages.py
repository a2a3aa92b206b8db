"""Buffers that end at an inaccessible page, for the native kernels' bounds tests: a
kernel that reads or writes one element past such a tensor (a full vector load of a
tail, say) segfaults instead of passing unseen. Imported by test files (and the
subprocesses they start), not collected itself."""

from __future__ import annotations

import ctypes
import mmap
import os

import torch

_MAPPINGS = []  # kept alive, and never unmapped, for the whole process


def guards_work() -> bool:
    return hasattr(ctypes.CDLL(None), "mprotect") and hasattr(mmap, "PAGESIZE")


def guarded(shape, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous tensor whose last byte is the last before a PROT_NONE page."""
    page = mmap.PAGESIZE
    numel = torch.Size(shape).numel()
    n = max(1, numel) * torch.empty(0, dtype=dtype).element_size()
    data = -(-n // page) * page
    m = mmap.mmap(-1, data + page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(base + data, page, 0) != 0:  # 0: PROT_NONE
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    _MAPPINGS.append(m)
    t = torch.frombuffer(m, dtype=torch.uint8, count=n, offset=data - n).view(dtype)
    return t[:numel].view(shape)

"""Whether this machine lets a test allocate address space it never touches (tests of
32-bit index limits need tensors of 2^31 elements, most of them never written). Imported
by test files, not collected itself."""

from __future__ import annotations

import os
from pathlib import Path


def overcommits(nbytes: int) -> bool:
    """Whether an untouched allocation of `nbytes` succeeds here: Linux's heuristic
    overcommit (mode 0) with RAM to spare beyond it, or mode 1 (always)."""
    try:
        mode = int(Path("/proc/sys/vm/overcommit_memory").read_text())
    except OSError:
        return False
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return mode == 1 or (mode == 0 and ram >= nbytes * 5 // 4)

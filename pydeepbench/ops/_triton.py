"""Where Triton kernels can run: on a CUDA device, or on the CPU under the interpreter
(TRITON_INTERPRET=1, set before triton is imported), which is correct but very slow."""

from __future__ import annotations

import importlib.util
import os

import torch

# Under the interpreter every program runs in Python: cap the work per timed case.
INTERPRETER_MAX_FLOPS = 5e7


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable(device: str) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if device == "cpu" and not interpreted():
        return "Triton runs on CPU only under TRITON_INTERPRET=1 (interpreter, slow)"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


def too_big_for_interpreter(flops: float, device: str) -> str | None:
    if device == "cpu" and flops > INTERPRETER_MAX_FLOPS:
        limit = f"{INTERPRETER_MAX_FLOPS:.0e}"
        return f"Triton interpreter: {flops:.2g} FLOPs is too slow to time (limit {limit})"
    return None

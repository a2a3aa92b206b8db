"""Public ops. Each op lives in its own module with its reference, inputs, FLOP/byte
formulas, tolerances and one decorated function per implementation."""

from __future__ import annotations

import torch

from pydeepbench import registry
from pydeepbench.ops.embedding_bag import (
    dequantize_rows,
    embedding_bag,
    embedding_bags,
    embedding_bags_adagrad_step,
    embedding_bags_backward,
    embedding_bags_sgd_step,
    quantize_rows,
)
from pydeepbench.ops.gemm import gemm
from pydeepbench.ops.interaction import dot_interaction
from pydeepbench.ops.linear import linear


def available(op: str, device: str = "cpu", dtype: torch.dtype | None = None) -> dict:
    """Implementation name -> None when it runs on device (and dtype), else the reason."""
    return {name: impl.why_not(device, dtype) for name, impl in registry.impls(op).items()}


__all__ = [
    "available",
    "dequantize_rows",
    "dot_interaction",
    "embedding_bag",
    "embedding_bags",
    "embedding_bags_adagrad_step",
    "embedding_bags_backward",
    "embedding_bags_sgd_step",
    "gemm",
    "linear",
    "quantize_rows",
]

"""Random 8-bit rowwise embedding rows (FBGEMM's fused layout: D uint8 codes, then each
row's fp32 scale and bias), for the uint8 tests of every embedding kernel. Imported by test
files, not collected itself."""

from __future__ import annotations

import torch


def q8_rows(rows: int, d: int, gen: torch.Generator, pad: int = 0, out: torch.Tensor | None = None):
    """(rows, d + 8) uint8 rows with random codes, positive scales and signed biases (so
    every code bit and both parameters matter), with row stride d + 8 + pad bytes, or
    written into `out` (rows, d + 8). Returns (rows, values, magnitude): the float64
    values they stand for (scale * code + bias), and |scale * code| + |bias|, which bounds
    the fp32 rounding of a kernel's dequantization."""
    codes = torch.randint(0, 256, (rows, d), generator=gen, dtype=torch.uint8)
    scale = torch.rand(rows, generator=gen) * 0.05 + 1e-3
    bias = torch.randn(rows, generator=gen) * 3
    full = torch.zeros(rows, d + 8 + pad, dtype=torch.uint8) if out is None else out
    full[:, :d] = codes
    full[:, d : d + 8] = torch.stack([scale, bias], 1).view(torch.uint8)
    product, offset = codes.double() * scale.double()[:, None], bias.double()[:, None]
    return full[:, : d + 8], product + offset, product.abs() + offset.abs()

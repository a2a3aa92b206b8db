"""Embedding bags with NaN rows for the max-mode tests of every backend. Imported by test
files, not collected itself."""

import torch


def nan_bags(dim: int = 5, num_rows: int = 80) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows with NaNs in a few columns, and bags where a NaN row comes first (torch's max
    keeps it), comes later (a later row wins only when strictly greater, so it is passed
    over) or is the bag's only row; one bag of 70 rows has a NaN at position 64, the first
    row of the Triton kernel's second index block and of a CUDA four-row group."""
    w = torch.randn(num_rows, dim, generator=torch.Generator().manual_seed(dim))
    w[1, :2] = float("nan")
    w[2, 3] = float("nan")
    long_bag = torch.arange(10, 80)
    long_bag[64] = 2
    bags = [
        [1, 0, 4],
        [0, 1, 4],
        [2, 2],
        [1],
        [3, 2, 5],
        [],
        long_bag.tolist(),
        [2, *range(10, 80)],
    ]
    idx = torch.tensor([i for b in bags for i in b])
    off = torch.tensor([0, *torch.tensor([len(b) for b in bags]).cumsum(0)[:-1].tolist()])
    return w, idx, off

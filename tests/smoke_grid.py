"""The (M, N, K) smoke grid of the GEMM-shaped ops (gemm, linear): the issue's sizes 1, 2,
7, 31, 64, 127 and 257, each in every position at least once, and K = 1. Imported by test
files, not collected itself."""

SMOKE = [
    (1, 1, 1),
    (2, 7, 31),
    (7, 31, 2),
    (31, 2, 7),
    (64, 127, 257),
    (127, 257, 64),
    (257, 64, 127),
    (1, 257, 31),
    (257, 1, 7),
    (64, 64, 1),
]


def mnk_id(mnk: tuple[int, int, int]) -> str:
    return "x".join(map(str, mnk))

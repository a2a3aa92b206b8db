"""Adaptive, noise-aware timing. The only module that reads clocks.

Protocol for one case:
1. Warm up until steady: at least `warmup_min_iters` (>= 6) calls and `warmup_min_s`, then
   until the mean of the last 3 calls is within `warmup_tolerance` of the 3 before (first-touch
   page faults, caches, frequency ramps and allocator growth settle), capped at
   `warmup_max_s`.
2. Sample: one synchronized timing per call (CPU: perf_counter_ns; CUDA: events). Calls
   shorter than `min_block_s` are timed in blocks (hot mode only) so timer overhead stays
   negligible; a sample is then the block's time per call (its mean), so `n` counts
   blocks and the spread is that of block means, narrower than single calls'. In cold
   mode a buffer of twice the last-level cache is rewritten before every sample, outside
   the timed region.
3. Stop when n >= min_samples, min_time_s has been spent sampling (cache flushes
   included) and IQR/median <= target_rel_iqr ("converged", tested before the budget);
   or at max_time_s ("max_time", or
   "max_time_below_min_samples" when n < min_samples) or max_samples ("max_samples").
   The reason is recorded; results with IQR/median above `noisy_rel_iqr`, or that ran
   out of time below min_samples, are flagged noisy.

Implementations compared on one case are timed side by side (`measure_interleaved`): each
warms up, then rounds of one sample of each alternate until all of them have converged
(or the budget of max_time_s per implementation, shared: a slow one may use most of
it), so drifting load on a shared machine does not land in
their ratio.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

MODES = ("hot", "cold")
# Out of time before min_samples: a few samples can agree and still be far off (on a
# loaded 2-core VM, 5 samples of a ~6 ms call read 408 ms, IQR under the noisy bound).
SHORT = "max_time_below_min_samples"


@dataclass
class HarnessConfig:
    mode: str = "hot"
    min_samples: int = 10
    max_samples: int = 100_000
    # Time spent sampling each closure (its cache flushes included) before it may stop as
    # converged. Default: 0.25 s, or half of max_time_s if that is less (equal to it, a
    # short run never converged: the budget's wall clock, overheads included, ran out
    # first).
    min_time_s: float | None = None
    max_time_s: float = 5.0
    target_rel_iqr: float = 0.02
    noisy_rel_iqr: float = 0.10
    warmup_min_iters: int = 6  # >= 6: steadiness compares the last 3 calls with the 3 before
    warmup_min_s: float = 0.05
    warmup_max_s: float = 2.0
    warmup_tolerance: float = 0.05
    min_block_s: float = 100e-6

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.min_time_s is None:
            self.min_time_s = min(0.25, self.max_time_s / 2)
        check_bounds(**{k: getattr(self, k) for k in BOUNDS})
        if self.max_samples < self.min_samples:
            raise ValueError(
                f"--min-samples (min_samples) must be <= max_samples ({self.max_samples}), "
                f"got {self.min_samples}"
            )
        if self.min_time_s > self.max_time_s:  # the minimum would never be reached
            raise ValueError(
                f"--min-time (min_time_s) must be <= --max-time (max_time_s, "
                f"{self.max_time_s:g}), got {self.min_time_s:g}"
            )


# Each bounded field: its lower bound, whether the bound itself is allowed, and the CLI
# flag that sets it (an error names both, for API and command-line callers alike).
BOUNDS = {
    "max_time_s": (0, False, "--max-time"),
    "min_time_s": (0, True, "--min-time"),
    "min_samples": (1, True, "--min-samples"),
    "target_rel_iqr": (0, True, "--target-noise"),  # 0: run to max_time_s or max_samples
    "warmup_min_iters": (6, True, None),
}


def check_bounds(**fields: float) -> None:
    """ValueError naming the flag and field of the first value out of BOUNDS."""
    for name, v in fields.items():
        lo, inclusive, flag = BOUNDS[name]
        if not (v >= lo if inclusive else v > lo):
            what = f"{flag} ({name})" if flag else name
            raise ValueError(f"{what} must be {'>=' if inclusive else '>'} {lo}, got {v}")


@dataclass
class Stats:
    median: float
    min: float
    max: float
    mean: float
    stdev: float
    q1: float
    q3: float
    iqr: float
    rel_iqr: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        s = sorted(samples)
        q1, med, q3 = _quantile(s, 0.25), _quantile(s, 0.5), _quantile(s, 0.75)
        stdev = statistics.stdev(s) if len(s) > 1 else 0.0
        rel = (q3 - q1) / med if med > 0 else math.inf
        return cls(med, s[0], s[-1], statistics.fmean(s), stdev, q1, q3, q3 - q1, rel, len(s))


def _quantile(sorted_s: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(sorted_s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_s) - 1)
    return sorted_s[lo] + (sorted_s[hi] - sorted_s[lo]) * (pos - lo)


@dataclass
class Measurement:
    samples_s: list[float]
    stats: Stats
    stop_reason: str
    warmup_iters: int
    block: int
    mode: str
    noisy: bool
    timer: str

    @classmethod
    def of(
        cls,
        samples: list[float],
        cfg: HarnessConfig,
        reason: str,
        warmup_iters: int,
        block: int,
        timer_name: str,
    ) -> Measurement:
        stats = Stats.of(samples)
        return cls(
            samples_s=samples,
            stats=stats,
            stop_reason=reason,
            warmup_iters=warmup_iters,
            block=block,
            mode=cfg.mode,
            noisy=stats.rel_iqr > cfg.noisy_rel_iqr or reason == SHORT,
            timer=timer_name,
        )

    def row_fields(self) -> dict:
        """time_s, samples_s and harness, as a result row holds them."""
        return {
            "time_s": asdict(self.stats),
            "samples_s": self.samples_s,
            "harness": {
                "stop_reason": self.stop_reason,
                "warmup_iters": self.warmup_iters,
                "block": self.block,
                "noisy": self.noisy,
                "timer": self.timer,
            },
        }


class CpuTimer:
    name = "perf_counter_ns"

    def clock(self) -> float:
        return time.perf_counter()

    def time(self, fn: Callable[[], object], calls: int = 1) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - t0) * 1e-9


class CudaTimer:
    """CUDA events around each call on the current stream; synchronizes before starting
    so queued work is not charged to this call."""

    name = "cuda_events"

    def __init__(self) -> None:
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def clock(self) -> float:
        return time.perf_counter()

    def time(self, fn: Callable[[], object], calls: int = 1) -> float:
        torch.cuda.synchronize()
        self._start.record()
        for _ in range(calls):
            fn()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) * 1e-3


def timer_for(device: str):
    return CudaTimer() if device.startswith("cuda") else CpuTimer()


def llc_bytes(device: str, cpus: Path = Path("/sys/devices/system/cpu")) -> int:
    """Last-level cache size: L2 on a GPU; on a CPU, the total of the distinct caches of
    its highest level (one L3 per socket, or per AMD CCD: sized by cpu0's alone, a flush
    or STREAM array could fit in the others' caches)."""
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).L2_cache_size)
    caches = {}  # (level, the CPUs sharing it) -> bytes
    for d in cpus.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            if (d / "type").read_text().strip() == "Instruction":
                continue
            text = (d / "size").read_text().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            key = (int((d / "level").read_text()), (d / "shared_cpu_list").read_text().strip())
            caches[key] = int(text.rstrip("KMG")) * mult
        except (OSError, ValueError):  # a cache sysfs does not describe fully
            continue
    if not caches:
        return 32 << 20
    top = max(level for level, _ in caches)
    return sum(size for (level, _), size in caches.items() if level == top)


@dataclass
class CacheFlusher:
    """Rewrites a buffer of 2x the last-level cache, allocated once (not per call)."""

    device: str
    nbytes: int = 0
    _buf: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.nbytes:
            self.nbytes = 2 * llc_bytes(self.device)
        self._buf = torch.ones(self.nbytes // 4, dtype=torch.float32, device=self.device)

    def __call__(self) -> None:
        self._buf.add_(1.0)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def _warm_up(fn: Callable[[], object], cfg: HarnessConfig, timer) -> tuple[int, int]:
    """Calls `fn` until steady; returns (warm-up calls, calls per timed block)."""
    start = timer.clock()
    warm: list[float] = []
    while True:
        warm.append(timer.time(fn))
        elapsed = timer.clock() - start
        if elapsed >= min(cfg.warmup_max_s, cfg.max_time_s):
            break
        if len(warm) >= cfg.warmup_min_iters and elapsed >= cfg.warmup_min_s:
            last, prev = statistics.fmean(warm[-3:]), statistics.fmean(warm[-6:-3])
            if abs(last - prev) <= cfg.warmup_tolerance * prev:
                break
    # Block tiny calls so timer overhead stays negligible (hot mode only).
    per_call = statistics.median(warm[-3:])
    block = 1
    if cfg.mode == "hot" and per_call < cfg.min_block_s:
        block = max(1, math.ceil(cfg.min_block_s / max(per_call, 1e-9)))
    return len(warm), block


@dataclass
class _Sampler:
    fn: Callable[[], object]
    block: int
    warmup_iters: int
    next_check: int
    samples: list[float] = field(default_factory=list)
    spent: float = 0.0  # clock time of its samples and their cache flushes
    converged: bool = False

    def check(self, cfg: HarnessConfig) -> bool:
        """Sticky convergence test, re-run every ~n/16 samples (sorting each time is
        O(n^2 log n))."""
        n = len(self.samples)
        if not self.converged and n >= self.next_check:
            self.next_check = n + max(1, n // 16)
            # target 0: never on noise (identical quartiles would meet <= 0)
            # `spent`, not the samples' sum: in cold mode a flush (~16 ms for 2x a 48 MiB
            # L3) dwarfs a short call, whose samples could never add up to min_time_s.
            if cfg.target_rel_iqr > 0 and self.spent >= cfg.min_time_s:
                self.converged = Stats.of(self.samples).rel_iqr <= cfg.target_rel_iqr
        return self.converged


def measure(
    fn: Callable[[], object],
    config: HarnessConfig | None = None,
    *,
    timer=None,
    flush: Callable[[], None] | None = None,
    device: str = "cpu",
) -> Measurement:
    """Time `fn` (a closure over prepared, initialized inputs) under `config`."""
    return measure_interleaved([fn], config, timer=timer, flush=flush, device=device)[0]


def measure_interleaved(
    fns: list[Callable[[], object]],
    config: HarnessConfig | None = None,
    *,
    timer=None,
    flush: Callable[[], None] | None = None,
    device: str = "cpu",
) -> list[Measurement]:
    """Time several closures side by side: each warms up on its own, then every round
    takes one sample (block) of each, in an order that alternates between rounds, so a
    change in machine load reaches all of them alike instead of landing in their ratio.
    Stops when every one has converged, when any reaches max_samples, or after
    max_time_s of sampling per closure, all of it shared. One closure is plain `measure`."""
    cfg = config or HarnessConfig()
    if not fns:
        return []
    timer = timer or timer_for(device)
    if cfg.mode == "cold" and flush is None:
        flush = CacheFlusher(device)
    samplers = []
    for fn in fns:
        warm, block = _warm_up(fn, cfg, timer)
        samplers.append(_Sampler(fn, block, warm, cfg.min_samples))

    start = timer.clock()
    reason = "max_samples"
    for rnd in itertools.count():
        if len(samplers[0].samples) >= cfg.max_samples:
            break
        for sp in samplers if rnd % 2 == 0 else reversed(samplers):
            t0 = timer.clock()
            if flush is not None:
                flush()
            sp.samples.append(timer.time(sp.fn, sp.block) / sp.block)
            sp.spent += timer.clock() - t0
        # Convergence first: a round that both converges and uses up the budget converged.
        if all([sp.check(cfg) for sp in samplers]):  # a list: every sampler checks
            reason = "converged"
            break
        if timer.clock() - start >= cfg.max_time_s * len(samplers):
            reason = SHORT if len(samplers[0].samples) < cfg.min_samples else "max_time"
            break
    return [
        Measurement.of(sp.samples, cfg, reason, sp.warmup_iters, sp.block, timer.name)
        for sp in samplers
    ]

"""The harness' stopping rule, warm-up and statistics, on a fake timer (no real clock)."""

import statistics

import numpy as np
import pytest

from pydeepbench import harness
from pydeepbench.harness import HarnessConfig, Stats, measure


class FakeTimer:
    """Returns scripted per-call durations and advances a fake clock by each one."""

    name = "fake"

    def __init__(self, durations):
        self.durations = iter(durations)
        self.now = 0.0
        self.calls = 0

    def clock(self):
        return self.now

    def time(self, fn, calls=1):
        total = 0.0
        for _ in range(calls):
            fn()
            total += next(self.durations)
        self.calls += calls
        self.now += total
        return total


def steady(value):
    while True:
        yield value


def cfg(**kw):
    base = dict(
        min_samples=10,
        min_time_s=0.01,
        max_time_s=1.0,
        warmup_min_s=0.0,
        warmup_min_iters=6,
        min_block_s=0.0,
    )
    base.update(kw)
    return HarnessConfig(**base)


def test_a_target_of_zero_runs_to_max_time_even_on_identical_samples():
    # Identical samples have an IQR of 0, which met "<= 0": it stopped as converged.
    m = measure(
        lambda: None, cfg(target_rel_iqr=0.0, max_time_s=0.05), timer=FakeTimer(steady(1e-3))
    )
    assert m.stop_reason == "max_time"


def test_converges_on_quiet_timings():
    m = measure(lambda: None, cfg(), timer=FakeTimer(steady(1e-3)))
    assert m.stop_reason == "converged"
    assert m.stats.n == 10  # min_samples reached, 10 ms >= min_time, IQR = 0
    assert m.stats.median == pytest.approx(1e-3)
    assert not m.noisy


def test_min_time_keeps_sampling_past_min_samples():
    m = measure(lambda: None, cfg(min_time_s=0.05), timer=FakeTimer(steady(1e-3)))
    assert m.stop_reason == "converged"
    assert m.stats.n >= 50


def test_noisy_timings_run_to_max_time_and_are_flagged():
    rng = np.random.default_rng(0)
    durations = iter((1e-3 * (1 + rng.random(100_000))).tolist())  # IQR/median ~ 1/3
    m = measure(lambda: None, cfg(max_time_s=0.2), timer=FakeTimer(durations))
    assert m.stop_reason == "max_time"
    assert m.noisy
    assert 0.2 <= sum(m.samples_s) < 0.2 + 2e-3


def test_max_time_below_min_samples_is_flagged_noisy():
    # Steady 0.125 s calls (exact in binary) against max_time 1 s: 8 samples fit. Below
    # min_samples a handful of agreeing samples is no measurement to trust.
    m = measure(lambda: None, cfg(min_samples=9), timer=FakeTimer(steady(0.125)))
    assert m.stats.n == 8 and m.stats.rel_iqr == 0.0
    assert m.stop_reason == "max_time_below_min_samples"
    assert m.noisy
    assert m.row_fields()["harness"]["stop_reason"] == "max_time_below_min_samples"
    # min_samples reached on the last round, quiet: converged, not noisy.
    m = measure(lambda: None, cfg(min_samples=8), timer=FakeTimer(steady(0.125)))
    assert (m.stats.n, m.stop_reason, m.noisy) == (8, "converged", False)
    # ... noisy: a plain max_time stop.
    m = measure(lambda: None, cfg(min_samples=8), timer=FakeTimer(iter([0.1, 0.15] * 50)))
    assert (m.stats.n, m.stop_reason) == (8, "max_time")


def test_a_short_max_time_can_still_converge():
    # min_time defaulted to max_time: the budget's clock (>= the samples' sum) ran out
    # before the summed samples reached it, so no short run ever stopped as converged.
    c = HarnessConfig(  # not cfg(): it sets min_time, and the default is what is tested
        max_time_s=0.1, warmup_min_s=0.0, min_block_s=0.0
    )
    assert c.min_time_s == pytest.approx(0.05)
    m = measure(lambda: None, c, timer=FakeTimer(steady(1e-3)))
    assert m.stop_reason == "converged"
    assert 50 <= m.stats.n < 100


def test_cold_mode_counts_its_flushes_toward_min_time():
    # 10 us calls behind a 20 ms flush: 0.25 s of samples alone would take 25,000 calls
    # (500 s of flushing), so cold rows of short calls never converged.
    timer = FakeTimer(steady(10e-6))

    def flush():
        timer.now += 20e-3

    c = cfg(mode="cold", min_time_s=0.25, max_time_s=2.0)
    m = measure(lambda: None, c, timer=timer, flush=flush)
    assert m.stop_reason == "converged"
    assert 12 <= m.stats.n <= 14  # 0.25 s of 20 ms flushes


def test_max_samples_stops():
    rng = np.random.default_rng(1)
    durations = iter((1e-3 * (1 + rng.random(100_000))).tolist())
    m = measure(lambda: None, cfg(max_samples=25, max_time_s=100), timer=FakeTimer(durations))
    assert m.stop_reason == "max_samples"
    assert m.stats.n == 25


def test_warmup_waits_until_steady():
    # 5 slow calls (first touch, caches), then steady: warm-up must outlast the slow phase.
    durations = [50e-3] * 5 + [1e-3] * 10_000
    m = measure(lambda: None, cfg(), timer=FakeTimer(durations))
    assert m.warmup_iters >= 8  # 5 slow + 3 steady that match the 3 before
    assert max(m.samples_s) == pytest.approx(1e-3)


def test_warmup_is_capped():
    durations = [10e-3 * (1.5**i) for i in range(200)]  # never steady
    m = measure(lambda: None, cfg(warmup_max_s=0.1, max_time_s=10), timer=FakeTimer(durations))
    assert 0.1 <= sum(durations[: m.warmup_iters]) < 0.1 + durations[m.warmup_iters]


def test_tiny_calls_are_blocked_and_reported_per_call():
    timer = FakeTimer(steady(1e-6))
    m = measure(lambda: None, cfg(min_block_s=100e-6), timer=timer)
    assert 100 <= m.block <= 101  # ceil(100e-6 / 1e-6) up to float rounding
    assert m.stats.median == pytest.approx(1e-6)


def test_cold_mode_flushes_before_every_sample_and_never_blocks():
    flushes = []
    m = measure(
        lambda: None,
        cfg(mode="cold", min_block_s=1.0),
        timer=FakeTimer(steady(1e-3)),
        flush=lambda: flushes.append(1),
    )
    assert m.block == 1
    assert len(flushes) == m.stats.n
    assert m.mode == "cold"


def test_stats_match_numpy():
    xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    s = Stats.of(xs)
    q1, med, q3 = np.quantile(xs, [0.25, 0.5, 0.75])
    assert (s.q1, s.median, s.q3) == pytest.approx((q1, med, q3))
    assert s.iqr == pytest.approx(q3 - q1)
    assert s.rel_iqr == pytest.approx((q3 - q1) / med)
    assert s.stdev == pytest.approx(statistics.stdev(xs))
    assert (s.min, s.max, s.n) == (1.0, 9.0, 8)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        HarnessConfig(mode="lukewarm")
    with pytest.raises(ValueError, match=r"--min-samples \(min_samples\) must be >= 1, got 0"):
        HarnessConfig(min_samples=0)
    with pytest.raises(ValueError, match=r"--max-time \(max_time_s\) must be > 0, got 0"):
        HarnessConfig(max_time_s=0)
    with pytest.raises(ValueError, match=r"--target-noise \(target_rel_iqr\) must be >= 0"):
        HarnessConfig(target_rel_iqr=-0.1)
    with pytest.raises(ValueError, match=r"^warmup_min_iters must be >= 6, got 3"):
        HarnessConfig(warmup_min_iters=3)  # steadiness compares two groups of 3 calls
    with pytest.raises(ValueError, match=r"min_samples\) must be <= max_samples \(5\), got 10"):
        HarnessConfig(min_samples=10, max_samples=5)
    with pytest.raises(ValueError, match=r"--min-time \(min_time_s\) must be <= --max-time"):
        HarnessConfig(min_time_s=3, max_time_s=0.1)


def test_real_cpu_timer_measures_sleep():
    import time

    m = measure(
        lambda: time.sleep(2e-3), cfg(max_time_s=0.2, min_samples=5), timer=harness.CpuTimer()
    )
    assert m.stats.min >= 2e-3


def test_cache_flusher_buffer_covers_llc():
    f = harness.CacheFlusher("cpu")
    assert f.nbytes >= 2 * harness.llc_bytes("cpu")
    f()


class DriftTimer:
    """A fake clock shared by several closures: a call to the closure returning `name`
    takes duration[name](now), now being the fake time when the call starts."""

    name = "fake"

    def __init__(self, duration):
        self.duration = duration
        self.now = 0.0
        self.log = []

    def clock(self):
        return self.now

    def time(self, fn, calls=1):
        total = 0.0
        for _ in range(calls):
            name = fn()
            self.log.append(name)
            total += self.duration[name](self.now + total)
        self.now += total
        return total


def test_interleaved_alternates_the_order_and_times_each_on_its_own():
    timer = DriftTimer({"a": lambda t: 1e-3, "b": lambda t: 2e-3})
    ma, mb = harness.measure_interleaved([lambda: "a", lambda: "b"], cfg(), timer=timer)
    warm = ma.warmup_iters + mb.warmup_iters
    assert timer.log[:warm] == ["a"] * ma.warmup_iters + ["b"] * mb.warmup_iters
    # then rounds of one sample each, the order alternating: a b | b a | a b ...
    assert timer.log[warm : warm + 6] == ["a", "b", "b", "a", "a", "b"]
    assert ma.stats.median == pytest.approx(1e-3) and mb.stats.median == pytest.approx(2e-3)
    assert ma.stop_reason == mb.stop_reason == "converged"
    assert ma.stats.n == mb.stats.n == timer.log[warm:].count("a")


def test_interleaved_runs_until_every_closure_converges():
    rng = np.random.default_rng(2)
    noise = iter((1e-3 * (1 + rng.random(100_000))).tolist())  # IQR/median ~ 1/3
    timer = DriftTimer({"a": lambda t: 1e-3, "b": lambda t: next(noise)})
    ma, mb = harness.measure_interleaved(
        [lambda: "a", lambda: "b"], cfg(max_time_s=0.1), timer=timer
    )
    assert ma.stop_reason == mb.stop_reason == "max_time"
    assert ma.stats.n == mb.stats.n  # a kept sampling beside b after it had converged
    assert not ma.noisy and mb.noisy
    assert timer.now >= 2 * 0.1  # max_time_s is per closure


def test_interleaved_max_time_below_min_samples_flags_every_closure():
    # Side by side the budget is max_time per closure: 2 s of rounds of 0.25 + 0.125 s.
    timer = DriftTimer({"a": lambda t: 0.25, "b": lambda t: 0.125})
    ms = harness.measure_interleaved([lambda: "a", lambda: "b"], cfg(), timer=timer)
    assert [m.stats.n for m in ms] == [6, 6]
    assert [(m.stop_reason, m.noisy) for m in ms] == [("max_time_below_min_samples", True)] * 2


def test_interleaving_keeps_load_drift_out_of_the_ratio():
    # The machine slows down 2x over the run: timed one after the other, the second impl
    # looks slower than it is; side by side, both see the same load and the ratio holds.
    def slower(base):
        return lambda t: base * (1.0 + min(t, 2.0) / 2.0)

    c = cfg(min_samples=50, max_time_s=0.5, target_rel_iqr=0.0)
    seq = DriftTimer({"a": slower(1e-3), "b": slower(2e-3)})
    a = measure(lambda: "a", c, timer=seq)
    b = measure(lambda: "b", c, timer=seq)
    assert b.stats.median / a.stats.median > 2.0 * 1.2  # what the drift did
    side = DriftTimer({"a": slower(1e-3), "b": slower(2e-3)})
    a2, b2 = harness.measure_interleaved([lambda: "a", lambda: "b"], c, timer=side)
    assert b2.stats.median / a2.stats.median == pytest.approx(2.0, rel=0.02)


def test_interleaved_of_nothing_is_empty_and_of_one_is_measure():
    assert harness.measure_interleaved([], cfg()) == []
    one = harness.measure_interleaved([lambda: None], cfg(), timer=FakeTimer(steady(1e-3)))[0]
    ref = measure(lambda: None, cfg(), timer=FakeTimer(steady(1e-3)))
    assert one.samples_s == ref.samples_s and one.stop_reason == ref.stop_reason


def test_llc_is_the_total_of_the_distinct_last_level_caches(tmp_path):
    """Two L3s (two sockets, or two AMD CCDs): cpu0's alone sized flushes and STREAM arrays
    that fit in the other's cache."""

    def cache(cpu, index, level, size, shared, kind="Unified"):
        d = tmp_path / f"cpu{cpu}" / "cache" / f"index{index}"
        d.mkdir(parents=True)
        for name, text in (("level", level), ("size", size), ("shared_cpu_list", shared)):
            (d / name).write_text(f"{text}\n")
        (d / "type").write_text(f"{kind}\n")

    for cpu in range(4):
        cache(cpu, 0, 1, "48K", str(cpu), "Data")
        cache(cpu, 1, 1, "32K", str(cpu), "Instruction")
        cache(cpu, 2, 2, "1280K", str(cpu))
        cache(cpu, 3, 3, "32768K", "0-1" if cpu < 2 else "2-3")
    assert harness.llc_bytes("cpu", tmp_path) == 2 * (32 << 20)
    assert harness.llc_bytes("cpu", tmp_path / "none") == 32 << 20  # no sysfs: a default

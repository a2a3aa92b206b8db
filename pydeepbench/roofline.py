"""Roofline peaks: measured by our own native probes, plus datasheet peaks for known GPUs.

CPU probes (csrc/cpu/roofline*.cpp): independent FMA chains per dtype at the widest ISA
the CPU supports (bf16: vdpbf16ps, or AMX tdpbf16ps tile chains where the GEMM uses AMX),
STREAM copy/triad over arrays of 4x the last-level cache, and a random-row gather
(uniform random 512-byte rows of a table of 8x the last-level cache, at least 2 GiB,
prefetched as our embedding kernels do; one load per 64-byte line, so it is bound by
memory, not by adds). Results are validated; bandwidth comes from the minimum time
(BabelStream's convention: copy moves 2 words per element, triad 3; write-allocate
traffic is not counted; the gather counts the rows read). STREAM is the memory roof;
the gather rate is a second one, for ops that read random rows (`OpSpec.gathers`),
reported beside it as pct_peak_gather. Peaks are cached per machine in
~/.cache/pydeepbench; `python -m pydeepbench roofline --refresh` re-measures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pydeepbench import _native, harness, system

# /2: gather_bandwidth; /3: the gather probe unrolled (2x faster); /4: the gather probe
# prefetches 64 lookups ahead, as the embedding kernels now do; /5: the generic FMA probe
# runs 48 chains (8 were latency bound, ~4x low); the LLC is the total of the distinct ones
SCHEMA = "pydeepbench.roofline/5"

# Dense (no sparsity) peaks from vendor datasheets, FLOP/s and bytes/s.
# NVIDIA A100 datasheet (SXM4 80GB), H100 datasheet (SXM5 / PCIe), H200 datasheet (SXM and
# NVL columns; its tensor figures are with sparsity, halved here), AMD Instinct MI300X
# datasheet. tf32/bf16/fp16 are tensor-core (matrix) peaks.
DATASHEET = {
    "A100-SXM4-80GB": dict(
        float32=19.5e12, tf32=156e12, bfloat16=312e12, float16=312e12, bandwidth=2039e9
    ),
    "A100-SXM4-40GB": dict(
        float32=19.5e12, tf32=156e12, bfloat16=312e12, float16=312e12, bandwidth=1555e9
    ),
    "A100 80GB PCIe": dict(
        float32=19.5e12, tf32=156e12, bfloat16=312e12, float16=312e12, bandwidth=1935e9
    ),
    "H100 80GB HBM3": dict(
        float32=67e12, tf32=494.7e12, bfloat16=989.4e12, float16=989.4e12, bandwidth=3350e9
    ),
    "H100 PCIe": dict(
        float32=51e12, tf32=378e12, bfloat16=756e12, float16=756e12, bandwidth=2000e9
    ),
    "H200": dict(
        float32=67e12, tf32=494.7e12, bfloat16=989.4e12, float16=989.4e12, bandwidth=4800e9
    ),
    "H200 NVL": dict(
        float32=60e12, tf32=417.5e12, bfloat16=835.5e12, float16=835.5e12, bandwidth=4800e9
    ),
    "MI300X": dict(
        float32=163.4e12, tf32=653.7e12, bfloat16=1307.4e12, float16=1307.4e12, bandwidth=5300e9
    ),
}


def datasheet_for(gpu_name: str) -> tuple[str, dict] | None:
    """The longest datasheet key in the device name as whole words ('H200 NVL' beats
    'H200'; 'GH200', another part, is not 'H200'), or None. None too for a MIG slice,
    which has a fraction of the GPU's peaks."""
    if "MIG" in gpu_name.split():
        return None

    def named(key: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", gpu_name, re.I) is not None

    hits = [k for k in DATASHEET if named(k)]
    if not hits:
        return None
    key = max(hits, key=len)
    return key, DATASHEET[key]


# CPU dtypes placed under the fp32 FMA peak when they have none of their own, and why.
FP32_ROOF = {
    "bfloat16": "fp32 FMA: no native bfloat16 FMA",
    "float16": "fp32 FMA: float16 FMA is not probed",
}


@dataclass
class Peaks:
    device: str
    flops: dict[str, float]  # dtype name -> FLOP/s
    flops_source: dict[str, str]
    bandwidth: float  # bytes/s
    bandwidth_source: str
    detail: dict
    gather_bandwidth: float | None = None  # bytes/s of random rows read; None: not measured
    gather_source: str = "not measured"

    def peak_flops(self, dtype: torch.dtype | str) -> tuple[float | None, str]:
        """Peak FLOP/s for dtype and where it comes from. On a CPU without a native bf16
        dot product, bf16 math runs on the fp32 FMA units, so fp32 is the roof; fp16 (not
        probed) is placed there too. Other dtypes without a peak (float64) get none."""
        name = str(dtype).removeprefix("torch.")
        if name in self.flops:
            return self.flops[name], self.flops_source[name]
        if name in FP32_ROOF and "float32" in self.flops and self.device == "cpu":
            return self.flops["float32"], f"{self.flops_source['float32']} ({FP32_ROOF[name]})"
        return None, f"no {name} peak"

    def as_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "device": self.device,
            "flops": self.flops,
            "flops_source": self.flops_source,
            "bandwidth": self.bandwidth,
            "bandwidth_source": self.bandwidth_source,
            "gather_bandwidth": self.gather_bandwidth,
            "gather_source": self.gather_source,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Peaks:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"roofline cache has schema {d.get('schema')!r}, want {SCHEMA}")
        return cls(
            d["device"],
            d["flops"],
            d["flops_source"],
            d["bandwidth"],
            d["bandwidth_source"],
            d["detail"],
            d["gather_bandwidth"],
            d["gather_source"],
        )


def _probe_config(max_time_s: float) -> harness.HarnessConfig:
    return harness.HarnessConfig(
        min_samples=5, max_time_s=max_time_s, min_time_s=min(0.1, max_time_s / 2), warmup_min_s=0.1
    )


def _fma_probe(C, dtype: str, max_time_s: float) -> tuple[float, str, dict]:
    """The FMA peak of `dtype` in FLOP/s (best sample), its source and detail."""
    done = {}

    def run():
        done["flops"], done["checksum"], done["threads"] = C.fma_probe(dtype, 200_000)

    m = harness.measure(run, _probe_config(max_time_s))
    source = f"measured: {C.fma_probe_kind(dtype)} x {done['threads']} threads"
    detail = {
        "median_flops": done["flops"] / m.stats.median,
        "threads": done["threads"],
        "samples": m.stats.n,
    }
    return done["flops"] / m.stats.min, source, detail


def measure_cpu(max_time_s: float = 2.0) -> Peaks:
    C = _native.cpu()
    flops, source, detail = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        if not C.fma_probe_supported(dtype):
            detail[f"fma_{dtype}"] = f"unsupported on ISA {C.isa()}"
            continue
        flops[dtype], source[dtype], detail[f"fma_{dtype}"] = _fma_probe(C, dtype, max_time_s)

    mem = _memory_probes(C, max_time_s)
    detail.update(mem.pop("detail"))
    return Peaks("cpu", flops, source, detail=detail, **mem)


def remeasure_flops(pk: Peaks, dtype: torch.dtype, max_time_s: float = 2.0) -> Peaks:
    """pk with the CPU FMA peak of `dtype` measured now. A shared VM's clock drifts (the
    fp32 probe read 209-236 GFLOP/s within 20 minutes on Zen 4 in 2026-12), so a compute
    bar measures its roof beside it, as the memory bars do (remeasure_memory)."""
    name = str(dtype).removeprefix("torch.")
    C = _native.cpu()
    if not C.fma_probe_supported(name):
        if name not in FP32_ROOF:
            return pk  # no probe and no roof
        name = "float32"  # the roof its rows are placed under (Peaks.peak_flops)
    f, src, det = _fma_probe(C, name, max_time_s)
    return dataclasses.replace(
        pk,
        flops={**pk.flops, name: f},
        flops_source={**pk.flops_source, name: src},
        detail={**pk.detail, f"fma_{name}": det},
    )


def _memory_probes(C, max_time_s: float) -> dict:
    """STREAM and the gather probe, as the Peaks fields they set."""
    bw, stream = _stream_probe(C, max_time_s)
    gather, gather_source, gather_detail = _gather_probe(C, max_time_s)
    _native.release_pool_cache()  # the probe's table: give its memory back now
    best = max(bw, key=bw.get)
    return {
        "bandwidth": bw[best],
        "bandwidth_source": f"measured: STREAM {best}, min time",
        "gather_bandwidth": gather,
        "gather_source": gather_source,
        "detail": {"stream": stream, "gather": gather_detail},
    }


def remeasure_memory(pk: Peaks, max_time_s: float = 2.0) -> Peaks:
    """pk with STREAM and the gather rate measured now (CPU). On a shared VM both drift
    (the gather rate by 2x within minutes, on Zen 4 in 2026-12), so a benchmark of a
    memory-bound op measures its roof beside it rather than trusting the cache."""
    mem = _memory_probes(_native.cpu(), max_time_s)
    mem["detail"] = {**pk.detail, **mem["detail"]}
    return dataclasses.replace(pk, **mem)


def _stream_probe(C, max_time_s: float) -> tuple[dict[str, float], dict]:
    """STREAM copy and triad bandwidth, bytes/s, over arrays of 4x the LLC."""
    n = max(4 * harness.llc_bytes("cpu") // 4, 1 << 24)
    b = torch.arange(n, dtype=torch.float32).remainder_(1000.0)
    c = torch.full((n,), 2.0)
    a = torch.zeros(n)  # written (not torch.empty) so no page maps the shared zero page
    bw = {}
    pa, pb, pc = _native.arg(a), _native.arg(b), _native.arg(c)  # once, outside the clock
    m = harness.measure(lambda: C.stream_copy(pa, pb), _probe_config(max_time_s))
    if not torch.equal(a, b):
        raise RuntimeError("STREAM copy probe produced a wrong result")
    bw["copy"] = 2 * n * 4 / m.stats.min
    m = harness.measure(
        lambda: C.stream_triad(pa, pb, pc, 3.0),
        _probe_config(max_time_s),
    )
    if not torch.allclose(a, b + 3.0 * c):
        raise RuntimeError("STREAM triad probe produced a wrong result")
    bw["triad"] = 3 * n * 4 / m.stats.min
    return bw, {"elements": n, "bytes_per_s": bw}


GATHER_LOOKUPS = 1 << 22  # 2 GiB of rows per call
GATHER_PERIOD = 4099  # the table repeats a prime number of distinct rows


def gather_columns(row_len: int, stride: int) -> list[int]:
    """The elements of each row the gather probe loads: one per 64-byte line (`stride`
    floats), which brings every line of the row in (csrc/cpu/roofline.h)."""
    cols = list(range(0, row_len, stride))
    return cols + [row_len - 1] if (row_len - 1) % stride else cols


def _gather_probe(C, max_time_s: float) -> tuple[float, str, dict]:
    """Random-row gather rate, bytes of rows read per second. The table (8x the LLC, at
    least 2 GiB, at most a quarter of free memory, in the host pool's huge pages as the
    native embedding tables are) repeats GATHER_PERIOD distinct rows of small integers,
    so the checksum is exact and a row read from the wrong place shows."""
    row_len = C.GATHER_ROW_FLOATS  # DLRM's dim-128 fp32 rows, the length the loop is built for
    row_bytes, llc = row_len * 4, harness.llc_bytes("cpu")
    want = max(8 * llc, 2 << 30)
    periods = max(min(want, system.available_memory_bytes() // 4) // row_bytes // GATHER_PERIOD, 1)
    rows = periods * GATHER_PERIOD
    r = torch.arange(GATHER_PERIOD)[:, None]
    pattern = (r * torch.arange(1, row_len + 1) + r).remainder_(13).float()
    table = _native.empty((rows, row_len), torch.float32)
    table.view(periods, GATHER_PERIOD, row_len).copy_(pattern.expand(periods, -1, -1))
    idx = torch.randint(rows, (GATHER_LOOKUPS,), generator=torch.Generator().manual_seed(0))
    cols = gather_columns(row_len, C.GATHER_STRIDE)
    want_sum = pattern[:, cols].sum(1, dtype=torch.float64)[idx % GATHER_PERIOD].sum().item()
    got = {}
    ptable, pidx = _native.arg(table), _native.arg(idx)  # once, outside the clock

    def run():
        got["sum"] = C.gather_probe(ptable, pidx)

    m = harness.measure(run, _probe_config(max_time_s))
    if got["sum"] != want_sum:
        raise RuntimeError("gather probe produced a wrong result")
    nbytes = GATHER_LOOKUPS * row_bytes
    detail = {
        "table_bytes": rows * row_bytes,
        "llc_bytes": llc,
        "row_bytes": row_bytes,
        "lookups": GATHER_LOOKUPS,
        "prefetch_ahead": C.GATHER_AHEAD,
        "median_bytes_per_s": nbytes / m.stats.median,
        "samples": m.stats.n,
    }
    source = f"measured: random {row_bytes}-byte rows, min time"
    if rows * row_bytes < 4 * llc:  # low free memory capped the table
        source += " (table under 4x the LLC: optimistic)"
    return nbytes / m.stats.min, source, detail


def measure_cuda(max_time_s: float = 2.0) -> Peaks:
    """GPU: datasheet peaks for known devices plus a measured copy bandwidth.
    Untested on this project's CI (no GPU there)."""
    name = torch.cuda.get_device_name(0)
    flops, source, detail = {}, {}, {}
    sheet = datasheet_for(name)
    if sheet:
        key, vals = sheet
        for k, v in vals.items():
            if k != "bandwidth":
                flops[k], source[k] = v, f"datasheet: {key}"
        detail["datasheet_bandwidth"] = vals["bandwidth"]
    n = 64 * harness.llc_bytes("cuda") // 4
    src = torch.rand(n, device="cuda")
    dst = torch.zeros_like(src)
    m = harness.measure(lambda: dst.copy_(src), _probe_config(max_time_s), device="cuda")
    if not torch.equal(dst, src):
        raise RuntimeError("GPU copy probe produced a wrong result")
    measured_bw = 2 * n * 4 / m.stats.min
    detail["measured_copy_bandwidth"] = measured_bw
    if sheet:
        bw, bw_src = sheet[1]["bandwidth"], f"datasheet: {sheet[0]}"
    else:
        bw, bw_src = measured_bw, "measured: torch copy_"
    return Peaks("cuda", flops, source, bw, bw_src, detail)


def cache_path(device: str, sysinfo: dict | None = None) -> Path:
    """This machine's cache file for `device` (sysinfo: system.collect()'s, if the caller
    has it)."""
    from pydeepbench import __version__

    sysinfo = sysinfo or system.collect()
    # The probes run on torch's threads within this process's CPU affinity: peaks of 2
    # threads placed a 1-thread run at half its share of the machine.
    key = json.dumps(
        [
            device,
            system.machine_id(sysinfo),
            sysinfo["cpu"].get("isa"),
            os.environ.get("PYDEEPBENCH_ISA"),
            sysinfo["cpu"].get("torch_threads"),
            sorted(os.sched_getaffinity(0)),
            __version__,
        ]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    root = Path(os.environ.get("PYDEEPBENCH_CACHE", Path.home() / ".cache" / "pydeepbench"))
    return root / f"roofline-{device}-{digest}.json"


def load_cached(device: str = "cpu", path: Path | None = None) -> Peaks | None:
    """The cached peaks of this machine and device (at `path`, default cache_path), or None
    (none yet, or a stale or corrupt cache, which is measured again)."""
    path = path or cache_path(device)
    if not path.exists():
        return None
    try:
        return Peaks.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError):
        return None


def peaks(device: str = "cpu", refresh: bool = False, max_time_s: float = 2.0) -> Peaks:
    """Cached peaks for this machine and device, measuring them on first use. Peaks
    measured on a busy machine are used but not cached (detail["not_cached"] says why):
    with another process on one of 2 cores the fp32 probe read 34 GFLOP/s against 369
    idle, and every later run would have been placed under that roof."""
    sysinfo = system.collect()
    path = cache_path(device, sysinfo)
    if not refresh and (cached := load_cached(device, path)) is not None:
        return cached
    # The load average is the whole machine's: against all of its CPUs (a process pinned to
    # one CPU of many would never cache). A GPU's peaks are its datasheet's and its own copy.
    busy = None if device.startswith("cuda") else system.busy_warning(sysinfo, os.cpu_count())
    p = measure_cuda(max_time_s) if device.startswith("cuda") else measure_cpu(max_time_s)
    if busy:
        return dataclasses.replace(p, detail={**p.detail, "not_cached": busy})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(p.as_dict(), indent=1))
    tmp.replace(path)
    return p


def place(
    flops: float,
    nbytes: float,
    seconds: float,
    dtype: torch.dtype,
    pk: Peaks,
    gathers: bool = False,
) -> dict:
    """Where one measurement sits under the roofline. `gathers`: the op reads random rows,
    so its bytes are also placed against the gather roof (pct_peak_gather)."""
    achieved = flops / seconds if seconds > 0 else 0.0
    bw = nbytes / seconds if seconds > 0 else 0.0
    peak, peak_src = pk.peak_flops(dtype)
    ai = flops / nbytes if nbytes else float("inf")
    out = {
        "tflops": achieved / 1e12,
        "gbps": bw / 1e9,
        "arithmetic_intensity": ai,
        "peak_flops": peak,
        "peak_flops_source": peak_src,
        "peak_bw": pk.bandwidth,
        "pct_peak_flops": 100 * achieved / peak if peak else None,
        "pct_peak_bw": 100 * bw / pk.bandwidth if pk.bandwidth else None,
        "pct_peak_gather": (
            100 * bw / pk.gather_bandwidth if gathers and pk.gather_bandwidth else None
        ),
    }
    if peak and pk.bandwidth:
        attainable = min(peak, ai * pk.bandwidth)
        out["attainable_flops"] = attainable
        out["bound"] = "compute" if peak <= ai * pk.bandwidth else "memory"
        out["pct_attainable"] = 100 * achieved / attainable if attainable else None
    return out

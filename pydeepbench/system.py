"""Hardware and software metadata, and GPU telemetry through NVML, for every run."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

import torch

from pydeepbench import _native


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The directory of the running pydeepbench source (not the working directory's).
PACKAGE_DIR = Path(__file__).resolve().parent


def _git(where: Path, *args: str) -> str | None:
    """stdout of `git -C where ARGS...`, or None (no git, not a repository, an error)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit(package_dir: Path = PACKAGE_DIR, built: str = "") -> str | None:
    """The commit of the running source, "-dirty" when tracked files differ from it: HEAD
    of the git checkout the package is in (an editable install), else the commit its
    extension was built from (`built`: `_C.build_commit`, "" when not built from a
    checkout), else None. The package's own files must be tracked in that checkout: a copy
    installed in a venv inside some other project is in that project's work tree without
    being its source."""
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return built or None
    head = _git(package_dir, "rev-parse", "HEAD")
    dirty = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
    return head and head + ("-dirty" if dirty else "")


def cpu_info() -> dict:
    info = {
        "model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
    }
    if _native.cpu_unavailable() is None:
        C = _native.cpu()
        info["isa"] = C.isa()
        info["features"] = C.cpu_info()
    return info


def gpu_telemetry(index: int = 0) -> dict:
    """Clocks, power, temperature and throttle reasons via nvidia-ml-py, or why not."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return {"available": False, "reason": f"NVML: {e}"}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        reasons = pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)
        return {
            "available": True,
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "clock_event_reasons": reasons,
            # 0x4 sw power cap, 0x8 hw slowdown, 0x20 sw thermal, 0x40 hw thermal, 0x80 brake
            "throttled": bool(reasons & (0x4 | 0x8 | 0x20 | 0x40 | 0x80)),
        }
    except pynvml.NVMLError as e:
        return {"available": False, "reason": f"NVML: {e}"}
    finally:
        pynvml.nvmlShutdown()


def gpu_info() -> dict | None:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "cuda_runtime": torch.version.cuda,
        "telemetry": gpu_telemetry(0),
    }


def collect() -> dict:
    from pydeepbench import __version__

    C = _native.cpu() if _native.cpu_unavailable() is None else None
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "cuda_kernels": _native.cuda_unavailable() or "available",
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        # Other work on the machine inflates and scatters timings; recorded with every run.
        "load_average": os.getloadavg(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": _version("numpy"),
            "triton": _version("triton"),
            "pydeepbench": __version__,
            "compiler": C.compiler if C else None,
            # In an editable checkout _C is rebuilt only on request: it can lag git_commit.
            "build_commit": (C.build_commit or None) if C else None,
        },
        "git_commit": _git_commit(built=C.build_commit if C else ""),
    }


def busy_warning(system: dict, cpus: int | None = None) -> str | None:
    """A warning when the machine was already busy: 1-minute load >= half of `cpus`
    (default: the CPUs this process may use)."""
    load, cpus = system["load_average"][0], cpus or system["cpu"]["usable_cpus"]
    if load >= 0.5 * cpus:
        return (
            f"load average {load:.2f} on {cpus} CPUs: other processes are running, "
            "expect noisy, slower timings"
        )
    return None


def machine_id(system: dict) -> str:
    """What makes two result files comparable as 'the same machine'."""
    gpu = (system.get("gpu") or {}).get("name", "")
    mem_gib = round(system["memory_bytes"] / 2**30)
    parts = [system["cpu"]["model"], f"{system['cpu']['logical_cpus']} cpus", f"{mem_gib} GiB"]
    return "|".join([*parts, gpu] if gpu else parts)


# Fraction of MemAvailable one case or model run may use; the rest is headroom for torch
# and the OS.
MEMORY_FRACTION = 0.7


def memory_shortfall(need: float, have: float | None = None) -> str | None:
    """None when `need` bytes fit in MEMORY_FRACTION of `have` (default: MemAvailable now),
    else the reason a skipped row gives."""
    have = available_memory_bytes() if have is None else have
    if need <= MEMORY_FRACTION * have:
        return None
    return (
        f"needs ~{need / 2**30:.1f} GiB, more than {MEMORY_FRACTION:.0%} of the "
        f"{have / 2**30:.1f} GiB available"
    )


def available_memory_bytes(device: str = "cpu") -> int:
    """MemAvailable on the host; on a CUDA device, what torch can still allocate there
    (the device's free memory plus the blocks its caching allocator holds unused)."""
    if not device.startswith("cuda"):
        return _host_available_bytes()
    dev = torch.device(device)
    cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    return torch.cuda.mem_get_info(dev)[0] + cached


def _host_available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")

"""Resource check for the CUDA kernels, without a GPU.

Each csrc/cuda/*.cu is compiled once per architecture to a cubin with ptxas' verbose
report (the flags mirror CMakeLists.txt's CUDA section), and every kernel must have no
register spills, at most 255 registers and at most 48 KiB of static shared memory.
Dynamic shared memory is declared in headers as ``#define PDB_<NAME>_DYNAMIC_SMEM_BYTES n``
(the .cu static_asserts it equals the launch request); static + dynamic must fit the
architecture's per-block opt-in limit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
ARCHS = ("sm_80", "sm_90")
# Per-block shared memory a kernel can opt into (cudaFuncAttributeMaxDynamicSharedMemorySize).
SMEM_OPTIN_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}
STATIC_SMEM_LIMIT = 48 * 1024
MAX_REGISTERS = 255
# Same as the build: Release (-O3 -DNDEBUG), -lineinfo, C++17, csrc on the include path.
NVCC_FLAGS = ["-std=c++17", "-O3", "-DNDEBUG", "-lineinfo", '-DPDB_CUDA_ARCHS="80,90"']

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


@dataclass
class Kernel:
    name: str
    registers: int = -1
    static_smem: int = 0
    spill_stores: int = 0
    spill_loads: int = 0


@dataclass
class Report:
    kernels: dict[str, Kernel] = field(default_factory=dict)
    # Spills of every function ptxas reports on (kernels and non-inlined callees).
    spills: dict[str, tuple[int, int]] = field(default_factory=dict)
    log: str = ""


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log: str, arch: str) -> Report:
    rep = Report(log=log)
    entry = props = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            assert m.group(2) == arch, line
            entry = rep.kernels.setdefault(m.group(1), Kernel(m.group(1)))
            props = None
        elif m := _PROPS.search(line):
            props = m.group(1)
        elif m := _FRAME.search(line):
            assert props is not None, f"spill line without a function: {line!r}"
            rep.spills[props] = (int(m.group(2)), int(m.group(3)))
            if entry is not None and props == entry.name:
                entry.spill_stores, entry.spill_loads = int(m.group(2)), int(m.group(3))
        elif m := _USED.search(line):
            assert entry is not None, f"register line without a kernel: {line!r}"
            entry.registers = int(m.group(1))
            if s := _SMEM.search(line):
                entry.static_smem = int(s.group(1))
    return rep


def compile_report(cu: Path, arch: str) -> Report:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            NVCC,
            f"-arch={arch}",
            "-cubin",
            "-o",
            os.path.join(tmp, "k.cubin"),
            "-Xptxas",
            "-v",
            "-I",
            str(ROOT / "csrc"),
            *NVCC_FLAGS,
            str(cu),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nvcc failed for {cu.name} {arch}:\n{log}"
    return parse_ptxas(log, arch)


@pytest.fixture(scope="module")
def reports() -> dict[tuple[str, str], Report]:
    jobs = [(cu, arch) for cu in CU_FILES for arch in ARCHS]
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        results = list(pool.map(lambda j: compile_report(*j), jobs))
    return {(cu.name, arch): r for (cu, arch), r in zip(jobs, results, strict=True)}


def dynamic_smem_requests(cu: Path) -> dict[str, int]:
    """PDB_*_DYNAMIC_SMEM_BYTES defined in the .cu or in csrc/cuda headers it includes."""
    text = cu.read_text()
    sources = [text] + [
        (CUDA_DIR / h).read_text()
        for h in re.findall(r'#include\s+"cuda/([^"]+\.h)"', text)
        if (CUDA_DIR / h).exists()
    ]
    found: dict[str, int] = {}
    for src in sources:
        for name, val in re.findall(r"#define\s+(PDB_\w+_DYNAMIC_SMEM_BYTES)\s+(\d+)", src):
            found[name] = int(val)
    return found


def test_sources_found():
    assert CU_FILES, f"no .cu files under {CUDA_DIR}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_kernel_resources(reports, cu: Path, arch: str):
    rep = reports[(cu.name, arch)]
    if "__global__" in cu.read_text():
        assert rep.kernels, f"{cu.name} defines kernels but ptxas reported none:\n{rep.log}"
    problems = []
    for k in rep.kernels.values():
        if k.registers < 0:
            problems.append(f"{k.name}: no register count in the report")
        if k.registers > MAX_REGISTERS:
            problems.append(f"{k.name}: {k.registers} registers")
        if k.static_smem > STATIC_SMEM_LIMIT:
            problems.append(f"{k.name}: {k.static_smem} bytes static smem")
    for fn, (stores, loads) in rep.spills.items():
        if stores or loads:
            problems.append(f"{fn}: {stores} bytes spill stores, {loads} bytes spill loads")
    dyn = dynamic_smem_requests(cu)
    max_static = max((k.static_smem for k in rep.kernels.values()), default=0)
    for name, val in dyn.items():
        if max_static + val > SMEM_OPTIN_LIMIT[arch]:
            problems.append(f"{name}={val} + {max_static} static > {SMEM_OPTIN_LIMIT[arch]}")
    assert not problems, "\n".join(problems)


def test_some_kernels_reported(reports):
    total = sum(len(r.kernels) for r in reports.values())
    assert total > 0, "ptxas reported no kernels at all"
    for arch in ARCHS:
        assert any(r.kernels for (_, a), r in reports.items() if a == arch), arch


def test_gemm_dynamic_smem_declared():
    gemm = CUDA_DIR / "gemm.cu"
    if not gemm.exists():
        pytest.skip("no gemm.cu")
    dyn = dynamic_smem_requests(gemm)
    assert dyn.get("PDB_GEMM_TC_DYNAMIC_SMEM_BYTES", 0) > 0, dyn


def test_parser_on_sample():
    sample = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1kv' for 'sm_80'
ptxas info    : Function properties for _Z1kv
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 356 bytes cmem[0]
ptxas info    : Compiling entry function '_Z2k2v' for 'sm_80'
ptxas info    : Function properties for _Z2k2v
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 356 bytes cmem[0]
"""
    rep = parse_ptxas(sample, "sm_80")
    k, k2 = rep.kernels["_Z1kv"], rep.kernels["_Z2k2v"]
    assert (k.registers, k.static_smem, k.spill_stores, k.spill_loads) == (40, 1024, 4, 12)
    assert (k2.registers, k2.static_smem, k2.spill_stores, k2.spill_loads) == (255, 0, 0, 0)

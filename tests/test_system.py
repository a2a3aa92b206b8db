import os
import subprocess
import sys

from pydeepbench import _native, system


def test_metadata_has_what_a_comparison_needs():
    s = system.collect()
    assert s["cpu"]["model"] and s["cpu"]["logical_cpus"] >= 1
    assert s["cpu"]["isa"] in _native.ISA_CAPS
    assert s["versions"]["python"] and s["versions"]["torch"] and s["versions"]["pydeepbench"]
    assert s["versions"]["compiler"]
    assert "machine" in s and "os" in s
    assert isinstance(system.machine_id(s), str)


def test_gpu_telemetry_reports_why_when_unavailable():
    t = system.gpu_telemetry()
    assert t["available"] or t["reason"]


def test_unknown_isa_cap_is_refused_by_name():
    """A misspelled PYDEEPBENCH_ISA must not silently run the kernels uncapped."""
    code = "from pydeepbench import _native; _native.cpu()"
    env = dict(os.environ, PYDEEPBENCH_ISA="avx-512")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "PYDEEPBENCH_ISA='avx-512' is not one of generic, avx2" in r.stderr

from pydeepbench import system


def test_metadata_has_what_a_comparison_needs():
    s = system.collect()
    assert s["cpu"]["model"] and s["cpu"]["logical_cpus"] >= 1
    assert s["cpu"]["isa"] in ("generic", "avx2", "avx512", "avx512_bf16", "amx")
    assert s["versions"]["python"] and s["versions"]["torch"] and s["versions"]["pydeepbench"]
    assert s["versions"]["compiler"]
    assert "machine" in s and "os" in s
    assert isinstance(system.machine_id(s), str)


def test_gpu_telemetry_reports_why_when_unavailable():
    t = system.gpu_telemetry()
    assert t["available"] or t["reason"]

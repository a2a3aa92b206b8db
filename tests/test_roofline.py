import pytest
import torch

from pydeepbench import _native, roofline
from pydeepbench.roofline import Peaks


def peaks(**kw):
    base = dict(
        device="cpu",
        flops={"float32": 100e9},
        flops_source={"float32": "test"},
        bandwidth=20e9,
        bandwidth_source="test",
        detail={},
    )
    base.update(kw)
    return Peaks(**base)


def test_place_memory_and_compute_bound():
    pk = peaks()
    # AI = 1 flop/byte: the roof is 20 GFLOP/s of bandwidth, not 100 of compute.
    mem = roofline.place(flops=1e9, nbytes=1e9, seconds=0.1, dtype=torch.float32, pk=pk)
    assert mem["bound"] == "memory" and mem["attainable_flops"] == pytest.approx(20e9)
    assert mem["gbps"] == pytest.approx(10) and mem["pct_peak_bw"] == pytest.approx(50)
    assert mem["pct_peak_flops"] == pytest.approx(10)
    comp = roofline.place(flops=1e12, nbytes=1e9, seconds=20.0, dtype=torch.float32, pk=pk)
    assert comp["bound"] == "compute" and comp["pct_attainable"] == pytest.approx(50)


def test_cpu_bf16_falls_back_to_fp32_roof_and_says_so():
    peak, src = peaks().peak_flops(torch.bfloat16)
    assert peak == 100e9 and "no native bfloat16" in src


def test_datasheet_lookup_prefers_most_specific_name():
    assert roofline.datasheet_for("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert roofline.datasheet_for("NVIDIA H100 80GB HBM3")[1]["bfloat16"] == 989.4e12
    assert roofline.datasheet_for("AMD Instinct MI300X")[1]["bandwidth"] == 5300e9
    assert roofline.datasheet_for("NVIDIA A100-SXM4-80GB")[1]["float32"] == 19.5e12
    assert roofline.datasheet_for("NVIDIA H200")[1]["bandwidth"] == 4800e9
    assert roofline.datasheet_for("Some GPU") is None


def test_fma_probe_counts_its_flops():
    C = _native.cpu()
    flops, checksum, threads = C.fma_probe("float32", 1000)
    per_iter = {"generic": 16, "avx2": 192, "avx512": 512, "avx512_bf16": 512, "amx": 512}[C.isa()]
    assert flops == per_iter * 1000 * threads
    assert checksum > 0
    with pytest.raises(ValueError, match="iters"):
        C.fma_probe("float32", 0)
    if not C.fma_probe_supported("bfloat16"):
        with pytest.raises(ValueError, match="no bfloat16 FMA probe"):
            C.fma_probe("bfloat16", 10)
    else:
        # vdpbf16ps: 16 chains x 16 lanes x 2 products x 2 flops; AMX: 6 chains of
        # tdpbf16ps, 16 x 16 x 32 multiply-adds each.
        flops, checksum, threads = C.fma_probe("bfloat16", 100)
        per_iter = {"avx512_bf16": 1024, "amx": 2 * 16 * 16 * 32 * 6}[C.isa()]
        assert flops == per_iter * 100 * threads
        assert checksum > 0
        kind = {"avx512_bf16": "avx512_bf16 vdpbf16ps", "amx": "AMX tdpbf16ps"}[C.isa()]
        assert C.fma_probe_kind("bfloat16").startswith(kind)


def test_measured_peaks_are_plausible_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDEEPBENCH_CACHE", str(tmp_path))
    pk = roofline.peaks("cpu", max_time_s=0.2)
    assert 1e9 < pk.flops["float32"] < 1e14
    assert 1e9 < pk.bandwidth < 1e13
    assert len(list(tmp_path.glob("roofline-cpu-*.json"))) == 1
    again = roofline.peaks("cpu")
    assert again.as_dict() == pk.as_dict()  # served from the cache


def test_stream_kernels_validate_arguments():
    C = _native.cpu()
    a, b = torch.zeros(10), torch.ones(11)
    with pytest.raises(ValueError, match="length mismatch"):
        C.stream_copy(_native.arg(a), _native.arg(b))
    with pytest.raises(ValueError, match="contiguous"):
        C.stream_copy(_native.arg(torch.zeros(20)[::2]), _native.arg(torch.ones(10)))

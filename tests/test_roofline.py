import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

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
    peak, src = peaks().peak_flops(torch.float16)
    assert peak == 100e9 and "float16 FMA is not probed" in src
    # fp64 is not fp32 math: it had read "no native float64 FMA" under the fp32 roof.
    assert peaks().peak_flops(torch.float64) == (None, "no float64 peak")


def test_a_bf16_compute_bar_without_a_bf16_probe_remeasures_its_fp32_roof(monkeypatch):
    C = roofline._native.cpu()
    if C.fma_probe_supported("bfloat16"):
        pytest.skip("this CPU has a bf16 probe: the bar measures that")
    pk = roofline.remeasure_flops(peaks(), torch.bfloat16, max_time_s=0.05)
    assert pk.flops["float32"] != 100e9 and "bfloat16" not in pk.flops
    assert pk.peak_flops(torch.bfloat16)[0] == pk.flops["float32"]


def test_peak_cache_is_per_thread_count_and_affinity(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDEEPBENCH_CACHE", str(tmp_path))
    two = roofline.cache_path("cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert roofline.cache_path("cpu") != two
    finally:
        torch.set_num_threads(threads)
    assert roofline.cache_path("cpu") == two
    # The same number of CPUs, other ones (another socket, an SMT sibling): its own peaks.
    monkeypatch.setattr(roofline.os, "sched_getaffinity", lambda pid: {0, 63})
    assert roofline.cache_path("cpu") != two


def test_datasheet_lookup_prefers_most_specific_name():
    assert roofline.datasheet_for("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert roofline.datasheet_for("NVIDIA H100 80GB HBM3")[1]["bfloat16"] == 989.4e12
    assert roofline.datasheet_for("AMD Instinct MI300X")[1]["bandwidth"] == 5300e9
    assert roofline.datasheet_for("NVIDIA A100-SXM4-80GB")[1]["float32"] == 19.5e12
    assert roofline.datasheet_for("NVIDIA H200")[1]["bandwidth"] == 4800e9
    assert roofline.datasheet_for("Some GPU") is None
    # Whole words: an H200 NVL is not the SXM part; a GH200 is not an H200; a MIG slice
    # has a fraction of its GPU's peaks.
    assert roofline.datasheet_for("NVIDIA H200 NVL")[1]["float32"] == 60e12
    assert roofline.datasheet_for("NVIDIA GH200 480GB") is None
    assert roofline.datasheet_for("NVIDIA A100-SXM4-80GB MIG 1g.10gb") is None


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
    monkeypatch.setattr(
        roofline.system, "busy_warning", lambda s, cpus=None: None
    )  # the suite's load
    pk = roofline.peaks("cpu", max_time_s=0.2)
    assert 1e9 < pk.flops["float32"] < 1e14
    assert 1e9 < pk.bandwidth < 1e13
    # Random rows: slower than streaming on every machine we know, but not by 100x.
    assert pk.bandwidth / 100 < pk.gather_bandwidth < 2 * pk.bandwidth
    g = pk.detail["gather"]
    # A table far beyond the last-level cache, so most rows come from memory.
    assert 4 * g["llc_bytes"] < g["table_bytes"] <= max(8 * g["llc_bytes"], 2 << 30)
    assert g["row_bytes"] == 512
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


def test_place_puts_gathering_ops_against_the_gather_roof():
    pk = peaks(gather_bandwidth=5e9, gather_source="test")
    row = roofline.place(
        flops=0.0, nbytes=1e9, seconds=0.4, dtype=torch.float32, pk=pk, gathers=True
    )
    assert row["pct_peak_bw"] == pytest.approx(12.5) and row["pct_peak_gather"] == pytest.approx(50)
    # Not for ops that stream (gathers=False), nor where no gather roof was measured.
    assert roofline.place(1e9, 1e9, 0.4, torch.float32, pk)["pct_peak_gather"] is None
    assert (
        roofline.place(1e9, 1e9, 0.4, torch.float32, peaks(), gathers=True)["pct_peak_gather"]
        is None
    )


def test_peaks_round_trip_and_old_cache_schema_is_refused():
    pk = peaks(gather_bandwidth=5e9, gather_source="test")
    assert Peaks.from_dict(pk.as_dict()) == pk
    old = {**pk.as_dict(), "schema": "pydeepbench.roofline/1"}
    with pytest.raises(ValueError, match="roofline/1"):
        Peaks.from_dict(old)


def gather(table, idx):
    return _native.cpu().gather_probe(_native.arg(table), _native.arg(idx))


@settings(max_examples=40, deadline=None)
# The probe's own row length, and 4 x GATHER_CHUNK + 5 lookups: several chunks per
# thread and a short last one.
@example(rows=777, row_len=128, n=4 * 4096 + 5, seed=3)
@example(rows=777, row_len=1, n=4 * 4096 + 5, seed=4)
@given(
    rows=st.integers(1, 300),
    row_len=st.integers(1, 1024),
    n=st.integers(1, 3 * 4096),
    seed=st.integers(0, 2**31 - 1),
)
def test_gather_probe_matches_torch_on_random_tables(rows, row_len, n, seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(0, 13, (rows, row_len), generator=g).float()
    idx = torch.randint(0, rows, (n,), generator=g)
    cols = roofline.gather_columns(row_len, 16)
    assert gather(table, idx) == table.double()[idx][:, cols].sum().item()


def test_gather_probe_loads_one_element_in_every_line_of_the_row():
    assert _native.cpu().GATHER_STRIDE == 16  # floats per 64-byte line
    assert roofline.gather_columns(1, 16) == [0]
    assert roofline.gather_columns(17, 16) == [0, 16]
    assert roofline.gather_columns(128, 16) == [0, 16, 32, 48, 64, 80, 96, 112, 127]
    table = torch.randint(0, 13, (5, 8)).float()  # a row within one line: its first and last
    assert gather(table, torch.tensor([4, 4, 0])) == table.double()[[4, 4, 0]][:, [0, 7]].sum()
    for n in range(1, 300):
        cols = roofline.gather_columns(n, 16)
        # Gaps of at most a line, from the first element to the last: whatever the row's
        # alignment, no line it overlaps is skipped.
        assert (
            cols[0] == 0
            and cols[-1] == n - 1
            and all(b - a <= 16 for a, b in zip(cols[:-1], cols[1:], strict=True))
        )


def test_gather_probe_rejects_bad_input_before_reading():
    table = torch.ones(10, 16)
    with pytest.raises(ValueError, match=r"index 10 at position 2 is outside \[0, 10\)"):
        gather(table, torch.tensor([0, 9, 10, 1]))
    with pytest.raises(ValueError, match="index -1"):
        gather(table, torch.tensor([-1]))
    bad = torch.zeros(3 * 4096, dtype=torch.int64)
    bad[[5000, 9000]] = torch.tensor([-3, 12])  # the first bad position is the one named
    with pytest.raises(ValueError, match=r"index -3 at position 5000 "):
        gather(table, bad)
    with pytest.raises(ValueError, match="contiguous"):
        gather(torch.ones(10, 32)[:, ::2], torch.tensor([0]))
    with pytest.raises(ValueError, match="contiguous"):
        gather(table, torch.zeros(4, dtype=torch.int64)[::2])
    with pytest.raises(ValueError, match="row length 1025"):
        gather(torch.ones(2, 1025), torch.tensor([0]))
    with pytest.raises(ValueError, match="non-empty"):
        gather(table, torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError):
        gather(table, torch.tensor([0], dtype=torch.int32))
    with pytest.raises(ValueError):
        gather(table.half(), torch.tensor([0]))

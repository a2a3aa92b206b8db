"""Resource check for the Triton kernels on the GPUs they target, without a GPU.

The interpreter tests run the kernels' semantics on CPU; they cannot see what a GPU build
does with them. Here every variant the wrappers launch is compiled by triton.compile to a
cubin for sm_80 and sm_90 with Triton's bundled ptxas: the GEMM's autotune configs that
survive its pruning, for fp32 ieee, tf32 and bf16, for aligned launches (with Triton's
divisibility hints) and unaligned ones (without); the embedding kernel for each weight
dtype and mode, with and without the hints. ptxas' resource report (cuobjdump
-res-usage) must show no stack (register spills) and shared memory within the part's
per-block limit. The compile runs in a subprocess: the test session imports triton with
TRITON_INTERPRET=1, which makes @triton.jit build interpreter functions that cannot be
compiled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import torch

ARCHS = (80, 90)
# Per-block shared memory a kernel may use (the opt-in maximum).
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
_D16 = [["tt.divisibility", 16]]


def _resources(cubin: bytes, cuobjdump: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run(
            [cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(f.name)
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK):(\d+)", out)}


def _compile_all() -> list[dict]:
    """Runs in the subprocess: compile every variant, return one record each."""
    import triton
    from pydeepbench.kernels import embedding_bag as E
    from pydeepbench.kernels import gemm as G
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    records = []

    def compile_one(fn, sig, consts, cc, opts, tag, hinted):
        sig = {**sig, **{k: "constexpr" for k in consts}}
        # As Triton's launcher specializes: 16-divisible ints and 16-byte aligned pointers
        # carry the divisibility hint (an aligned launch), or none do (the worst case).
        attrs = {(fn.arg_names.index(n),): _D16 for n in sig if hinted and sig[n] != "constexpr"}
        k = triton.compile(
            ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", cc, 32), options=opts
        )
        res = _resources(k.asm["cubin"], cuobjdump)
        # fp32 max instructions without .NaN: maxnum, which turns NaN into the other operand
        fmax = len(re.findall(r"\bmax(?:\.ftz)?\.f32\b", k.asm["ptx"]))
        records.append({"tag": tag, "cc": cc, "shared": k.metadata.shared, "fmax": fmax, **res})

    configs = G._autotune_configs()
    for cc in ARCHS:
        for name, ty, prec, dtype in (
            ("fp32", "fp32", "ieee", torch.float32),
            ("tf32", "fp32", "tf32", torch.float32),
            ("bf16", "bf16", "ieee", torch.bfloat16),
        ):
            for aligned in (True, False):
                ptrs = {p: torch.empty(1, dtype=dtype) for p in ("a_ptr", "b_ptr", "c_ptr")}
                kept = G._prune(configs, ptrs, INPUT_PRECISION=prec, ALIGNED=aligned)
                for c in kept:
                    sig = {p: f"*{ty}" for p in ("a_ptr", "b_ptr", "bias_ptr", "c_ptr")}
                    sig.update({p: "i32" for p in ("M", "N", "K", "stride_am", "stride_bk")})
                    sig.update(stride_cm="i32")
                    consts = dict(
                        stride_ak=1, stride_bn=1, stride_bias=1, stride_cn=1, HAS_BIAS=True,
                        ACTIVATION="relu", INPUT_PRECISION=prec, BF16_INTERPRETED=False,
                        ALIGNED=aligned, **c.kwargs,
                    )  # fmt: skip
                    m, n, kk = (c.kwargs[x] for x in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
                    opts = dict(num_warps=c.num_warps, num_stages=c.num_stages)
                    tag = f"gemm {name} {m}x{n}x{kk} {'aligned' if aligned else 'unaligned'}"
                    compile_one(G._gemm_kernel.fn, sig, consts, cc, opts, tag, aligned)
        for wt, mode, psw, multi, d in (
            ("fp32", "sum", True, True, 128),
            ("bf16", "mean", False, False, 64),
            ("fp16", "max", False, True, 256),
            ("u8", "sum", True, True, 128),
            ("u8", "max", False, False, 100),
        ):
            block_d, block_i, warps = E._tiles(d, wt == "u8")
            for ity in ("i32", "i64"):
                sig = {"weight_ptr": f"*{wt}", "psw_ptr": "*fp32", "out_ptr": "*fp32"}
                sig.update(
                    {p: f"*{ity}" for p in ("table_row_offsets_ptr", "indices_ptr", "offsets_ptr")}
                )
                sig.update({p: "i32" for p in ("B", "n_offsets", "n_indices", "D", "q8_param_off")})
                sig.update({p: "i32" for p in ("stride_wr", "stride_ob", "stride_ot")})
                consts = dict(
                    stride_wd=1, stride_od=1, MODE=mode, HAS_PSW=psw, MULTI_TABLE=multi,
                    Q8=wt == "u8", BLOCK_I=block_i, BLOCK_D=block_d,
                )  # fmt: skip
                tag = f"embedding_bag {wt} {mode} psw={psw} D={d} {ity}"
                for hinted in (True, False):
                    opts = dict(num_warps=warps)
                    compile_one(E._embedding_bag_kernel, sig, consts, cc, opts, tag, hinted)
    return records


def _toolchain_missing() -> str | None:
    try:
        import triton
    except ImportError:
        return "triton is not installed"
    nv = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for tool in ("ptxas", "cuobjdump"):
        if not os.path.exists(os.path.join(nv, tool)):
            return f"this triton wheel has no bundled {tool}"
    return None


@pytest.fixture(scope="module")
def records():
    why = _toolchain_missing()
    if why:
        pytest.skip(why)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="pdb-triton-build-")
    proc = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_variant_compiled(records):
    tags = {(r["cc"], r["tag"]) for r in records}
    for cc in ARCHS:
        mine = [t for c, t in tags if c == cc]
        assert sum(t.startswith("gemm bf16") and t.endswith(" aligned") for t in mine) == 10
        for name in ("fp32", "tf32", "bf16"):  # the one config unaligned launches keep
            assert f"gemm {name} 64x64x32 unaligned" in mine
        assert sum(t.startswith("gemm fp32") and t.endswith(" aligned") for t in mine) == 4
        assert sum(t.startswith("gemm tf32") and t.endswith(" aligned") for t in mine) == 7
        assert len([r for r in records if r["cc"] == cc and r["tag"].startswith("emb")]) == 20


def test_gemm_relu_keeps_nan(records):
    # Every GEMM variant is compiled with the ReLU epilogue. The interpreter's maximum is
    # numpy's (NaN kept), so only the GPU code shows a maxnum ReLU.
    gemms = [r for r in records if r["tag"].startswith("gemm")]
    assert gemms and not [r["tag"] for r in gemms if r["fmax"]]


def test_no_spills_and_shared_memory_within_limits(records):
    bad = [
        f"sm_{r['cc']} {r['tag']}: stack {r['STACK']} B, {r['REG']} registers, "
        f"{r['shared']} B shared (limit {SMEM_LIMIT[r['cc']]})"
        for r in records
        if r["STACK"] or r["shared"] > SMEM_LIMIT[r["cc"]]
    ]
    assert not bad, "\n".join(bad)


if __name__ == "__main__":
    print(json.dumps(_compile_all()))

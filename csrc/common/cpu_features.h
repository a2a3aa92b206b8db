// Run-time ISA detection (cpuid + xgetbv) so one wheel runs on any x86-64 CPU and
// uses the widest vector unit the CPU and OS both support.
#pragma once
#include <cstdint>
#include <string>

// CMake defines it for the whole extension: 1 when the *_amx.cpp kernels are built.
#ifndef PDB_HAVE_AMX
#define PDB_HAVE_AMX 0
#endif

namespace pdb {

// Ordered: each level implies the ones below it (every AMX CPU has AVX512_BF16).
enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3, amx = 4 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false;
  // AMX tiles with bf16 dot products, usable by this process: CPU bits, OS state
  // (XCR0 tile config + data) and the Linux permission for tile data (arch_prctl).
  bool amx_bf16 = false;
  std::string brand;
  int64_t l1d_bytes = 32 << 10, l2_bytes = 512 << 10, l3_bytes = 8 << 20;  // as sysconf says
  // The same clamped to sane per-core sizes, for the kernels' blocking and size choices:
  // in a VM sysconf can report a whole host's or socket's cache (a 480 MiB L3 here).
  int64_t l1d_clamped = 32 << 10, l2_clamped = 512 << 10, l3_clamped = 8 << 20;
};

const CpuFeatures& cpu_features();
// Best ISA the CPU supports, capped by the environment variable PYDEEPBENCH_ISA
// (generic|avx2|avx512|avx512_bf16|amx) so tests can exercise every lower path.
Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace pdb

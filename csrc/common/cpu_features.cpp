#include "common/cpu_features.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define PDB_X86 1
#endif

namespace pdb {
namespace {

#ifdef PDB_X86
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

// Linux allocates the 8 KiB of AMX tile state per process only on request; without it
// the first tile instruction faults (SIGILL). Granted process-wide, once.
bool request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef PDB_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & bit_OSXSAVE;
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM + YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM state
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;        // XTILECFG + XTILEDATA
  bool amx_tile = false, amx_bf16 = false;
  f.fma = os_avx && (c & bit_FMA);
  f.f16c = os_avx && (c & bit_F16C);
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = os_avx && (b & bit_AVX2);
    f.avx512f = os_avx512 && (b & bit_AVX512F);
    f.avx512bw = os_avx512 && (b & bit_AVX512BW);
    f.avx512vl = os_avx512 && (b & bit_AVX512VL);
    f.avx512dq = os_avx512 && (b & bit_AVX512DQ);
    amx_bf16 = os_amx && (d & (1u << 22));
    amx_tile = os_amx && (d & (1u << 24));
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = f.avx512f && (a & (1u << 5));
  f.amx_bf16 = amx_tile && amx_bf16 && f.avx512_bf16 && request_amx_permission();
  unsigned brand[12] = {};
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i)
      __get_cpuid(0x80000002 + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2],
                  &brand[4 * i + 3]);
    char s[49] = {};
    std::memcpy(s, brand, 48);
    f.brand = s;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
  }
#endif
  long v;
  if ((v = sysconf(_SC_LEVEL1_DCACHE_SIZE)) > 0) f.l1d_bytes = v;
  if ((v = sysconf(_SC_LEVEL2_CACHE_SIZE)) > 0) f.l2_bytes = v;
  if ((v = sysconf(_SC_LEVEL3_CACHE_SIZE)) > 0) f.l3_bytes = v;
  f.l1d_clamped = std::clamp<int64_t>(f.l1d_bytes, 16 << 10, 64 << 10);
  f.l2_clamped = std::clamp<int64_t>(f.l2_bytes, 128 << 10, 2 << 20);
  f.l3_clamped = std::clamp<int64_t>(f.l3_bytes, 2 << 20, 32 << 20);
  return f;
}

Isa detect_isa(const CpuFeatures& f) {
  const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma;
  Isa best = Isa::generic;
  if (f.avx2 && f.fma) best = Isa::avx2;
  if (avx512) best = Isa::avx512;
  if (avx512 && f.avx512_bf16) best = Isa::avx512_bf16;
  // amx only where the AMX kernels were built (PDB_HAVE_AMX): the ISA names what runs.
  if (best == Isa::avx512_bf16 && f.amx_bf16 && PDB_HAVE_AMX) best = Isa::amx;
  if (const char* cap = std::getenv("PYDEEPBENCH_ISA")) {
    Isa want = best;
    if (!std::strcmp(cap, "generic")) want = Isa::generic;
    else if (!std::strcmp(cap, "avx2")) want = Isa::avx2;
    else if (!std::strcmp(cap, "avx512")) want = Isa::avx512;
    else if (!std::strcmp(cap, "avx512_bf16")) want = Isa::avx512_bf16;
    else if (!std::strcmp(cap, "amx")) want = Isa::amx;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa active_isa() {
  // Read once per process. Unknown values are ignored here; pydeepbench._native refuses
  // them before it imports the extension.
  static const Isa isa = detect_isa(cpu_features());
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512_bf16: return "avx512_bf16";
    case Isa::amx: return "amx";
  }
  return "?";
}

}  // namespace pdb

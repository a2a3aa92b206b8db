#include "cpu/roofline.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "common/cpu_features.h"

namespace pdb::cpu {
namespace {

// Portable chains: independent accumulators with distinct starts so the compiler cannot
// merge them; the multiplier keeps values bounded. GCC vectorizes them 4 to an SSE
// register, each step a dependent mul then add (~8 cycles) on 2 ports, so the roof needs
// ~8 registers of chains in flight: 8 chains (2 registers) read 7.0 GFLOP/s on one Ice
// Lake core, 32 read 24.1 and 64 read 25.2 (a helper's scratch build, -O3). 48 is 12
// registers, which leaves 16-register SSE room for the two constants.
double fma_chains_generic(int64_t iters, double* flops) {
  constexpr int kChains = 48;
  float acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = 1.0f + 0.01f * static_cast<float>(i);
  const float mul = 0.999999f, add = 1e-7f;
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * mul + add;
  *flops = 2.0 * kChains * static_cast<double>(iters);
  double s = 0;
  for (float v : acc) s += v;
  return s;
}

// The bf16 probe runs on AMX tiles where the GEMM does.
bool amx_probe() { return PDB_HAVE_AMX && active_isa() >= Isa::amx; }

}  // namespace

#if !PDB_HAVE_AMX
double amx_bf16_chains(int64_t, double*) { return 0; }  // never called: amx_probe() is false
#endif

const char* fma_probe_kind(const char* dtype) {
  if (!fma_probe_supported(dtype)) return "none";
  if (!std::strcmp(dtype, "bfloat16"))
    return amx_probe() ? "AMX tdpbf16ps tile chains" : "avx512_bf16 vdpbf16ps chains";
  switch (active_isa()) {
    case Isa::generic: return "generic scalar FMA chains";
    case Isa::avx2: return "avx2 FMA chains";
    default: return "avx512 FMA chains";
  }
}

bool fma_probe_supported(const char* dtype) {
  if (!std::strcmp(dtype, "float32")) return true;
  if (!std::strcmp(dtype, "bfloat16")) return active_isa() >= Isa::avx512_bf16;
  return false;
}

ProbeResult fma_probe(const char* dtype, int64_t iters) {
  PDB_CHECK(iters > 0, "fma_probe: iters must be positive");
  PDB_CHECK(fma_probe_supported(dtype), "fma_probe: no ", dtype, " FMA probe for ISA ",
            isa_name(active_isa()));
  const bool bf16 = !std::strcmp(dtype, "bfloat16");
  const Isa isa = active_isa();
  double flops = 0, checksum = 0;
  int threads = 1;
#pragma omp parallel reduction(+ : flops, checksum)
  {
    double f = 0;
    if (bf16 && amx_probe()) checksum += amx_bf16_chains(iters, &f);
    else if (bf16) checksum += dpbf16_chains_avx512(iters, &f);
    else if (isa >= Isa::avx512) checksum += fma_chains_avx512(iters, &f);
    else if (isa >= Isa::avx2) checksum += fma_chains_avx2(iters, &f);
    else checksum += fma_chains_generic(iters, &f);
    flops += f;
#pragma omp single
    threads = omp_get_num_threads();
  }
  return {flops, checksum, threads};
}

void stream_copy(float* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

void stream_triad(float* a, const float* b, const float* c, float scalar, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] = b[i] + scalar * c[i];
}

namespace {

// The probe's loop. kRowLen > 0 is the row length fixed at compile time, so the
// prefetch and load loops unroll and the sums stay in registers: with a runtime length
// the loop's own instructions (about twice as many per lookup) fill the out-of-order
// window and fewer rows are in flight. Zen 4 VM, 2 GiB huge-page table, 2M lookups of
// 512-byte rows, two threads, best of 3, six rounds interleaved: runtime length 11-15
// GB/s, fixed 24-27, fixed and the index check moved out of the loop 27-29.5; the
// native embedding kernel pooling 32 rows per bag read 15-21 GB/s beside the old probe.
template <int64_t kRowLen>
double gather_rows(const float* table, int64_t row_len_rt, const int64_t* idx, int64_t n) {
  const int64_t row_len = kRowLen ? kRowLen : row_len_rt;
  const int64_t nchunks = (n + kGatherChunk - 1) / kGatherChunk;
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t i0 = c * kGatherChunk, i1 = std::min(n, i0 + kGatherChunk);
    float acc[kGatherMaxRow / kGatherStride + 1] = {};  // one per sampled offset
    for (int64_t i = i0; i < i1; ++i) {
      if (i + kGatherAhead < n) {
        const char* p = reinterpret_cast<const char*>(table + idx[i + kGatherAhead] * row_len);
#pragma GCC unroll 64
        for (int64_t o = 0; o < row_len * 4; o += 64) __builtin_prefetch(p + o, 0, 2);
      }
      const float* row = table + idx[i] * row_len;
      int64_t j = 0;
#pragma GCC unroll 64
      for (int64_t d = 0; d < row_len; d += kGatherStride) acc[j++] += row[d];
      if ((row_len - 1) % kGatherStride) acc[j] += row[row_len - 1];  // the last line
    }
    double s = 0;
    for (float v : acc) s += v;
    total += s;
  }
  return total;
}

}  // namespace

double gather_probe(const float* table, int64_t rows, int64_t row_len, const int64_t* idx,
                    int64_t n) {
  PDB_CHECK(rows > 0 && n > 0, "gather_probe: the table and the indices must be non-empty");
  PDB_CHECK(row_len > 0 && row_len <= kGatherMaxRow, "gather_probe: row length ", row_len,
            " is outside [1, ", kGatherMaxRow, "]");
  // Every index is checked before any row is read: one sequential pass over 8 bytes per
  // row (32 MB against the probe's 2 GiB of random rows; not timed apart), and no branch
  // in the gather loop.
  int64_t bad = n;  // the first position whose index is out of range
#pragma omp parallel for schedule(static) reduction(min : bad)
  for (int64_t i = 0; i < n; ++i)
    if ((idx[i] < 0) | (idx[i] >= rows)) bad = std::min(bad, i);
  PDB_CHECK(bad == n, "gather_probe: index ", idx[bad == n ? 0 : bad], " at position ", bad,
            " is outside [0, ", rows, ")");
  return row_len == kGatherRowFloats ? gather_rows<kGatherRowFloats>(table, row_len, idx, n)
                                     : gather_rows<0>(table, row_len, idx, n);
}

}  // namespace pdb::cpu

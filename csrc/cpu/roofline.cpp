#include "cpu/roofline.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "common/cpu_features.h"

namespace pdb::cpu {
namespace {

// Portable chains: 8 independent accumulators with distinct starts so the compiler
// cannot merge them; the multiplier keeps values bounded.
double fma_chains_generic(int64_t iters, double* flops) {
  float acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = 1.0f + 0.01f * static_cast<float>(i);
  const float mul = 0.999999f, add = 1e-7f;
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) acc[i] = acc[i] * mul + add;
  *flops = 2.0 * 8 * static_cast<double>(iters);
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

double gather_probe(const float* table, int64_t rows, int64_t row_len, const int64_t* idx,
                    int64_t n) {
  PDB_CHECK(rows > 0 && n > 0, "gather_probe: the table and the indices must be non-empty");
  PDB_CHECK(row_len > 0 && row_len <= kGatherMaxRow, "gather_probe: row length ", row_len,
            " is outside [1, ", kGatherMaxRow, "]");
  const int64_t nchunks = (n + kGatherChunk - 1) / kGatherChunk;
  double total = 0;
  int64_t bad = -1;  // a lookup whose index is out of range (any one of them)
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t i0 = c * kGatherChunk, i1 = std::min(n, i0 + kGatherChunk);
    float acc[kGatherMaxRow / kGatherStride + 1] = {};  // one per sampled offset
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t ahead = i + kGatherAhead;
      if (ahead < n && idx[ahead] >= 0 && idx[ahead] < rows) {
        const char* p = reinterpret_cast<const char*>(table + idx[ahead] * row_len);
        for (int64_t o = 0; o < row_len * 4; o += 64) __builtin_prefetch(p + o, 0, 2);
      }
      const int64_t r = idx[i];
      if (r < 0 || r >= rows) {  // this chunk stops here; the others run on
#pragma omp atomic write
        bad = i;
        break;
      }
      const float* row = table + r * row_len;
      int64_t j = 0;
      for (int64_t d = 0; d < row_len; d += kGatherStride) acc[j++] += row[d];
      if ((row_len - 1) % kGatherStride) acc[j] += row[row_len - 1];  // the last line
    }
    double s = 0;
    for (float v : acc) s += v;
    total += s;
  }
  PDB_CHECK(bad < 0, "gather_probe: index ", idx[bad < 0 ? 0 : bad], " at position ", bad,
            " is outside [0, ", rows, ")");
  return total;
}

}  // namespace pdb::cpu

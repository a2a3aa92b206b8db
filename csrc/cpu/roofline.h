// Native probes for the roofline: peak FMA throughput per dtype, STREAM-style memory
// bandwidth and the random-row gather rate that bounds embedding lookups. They do the
// work; the Python harness owns the clock.
#pragma once
#include <cstdint>

namespace pdb::cpu {

struct ProbeResult {
  double flops;     // floating-point operations executed (all threads)
  double checksum;  // consumed by the caller so the work cannot be optimized away
  int threads;
};

// Independent FMA chains per thread, `iters` rounds each. dtype: "float32" or "bfloat16".
ProbeResult fma_probe(const char* dtype, int64_t iters);
bool fma_probe_supported(const char* dtype);
// What fma_probe runs for dtype on this ISA, e.g. "avx512 FMA chains" (for reports).
const char* fma_probe_kind(const char* dtype);

// STREAM kernels over n floats, OpenMP static schedule (first touch by the caller's init).
void stream_copy(float* dst, const float* src, int64_t n);
void stream_triad(float* a, const float* b, const float* c, float scalar, int64_t n);

// Random-row gather: for each idx[i] (n lookups, any order), reads row idx[i] of the
// row-major table (rows x row_len floats, row_len <= kGatherMaxRow; kGatherRowFloats,
// the roofline's DLRM dim-128 rows, has a loop unrolled for it), prefetching rows
// kGatherAhead lookups ahead into L2 as the embedding kernels do. It loads one float per
// 64-byte line, the least work that still brings every line of the row from memory (a
// roof, not a kernel: summing whole rows made it compute bound, ~37 GB/s from L2 with
// baseline code): the elements at offsets 0, kGatherStride, 2 * kGatherStride, ... and
// row_len - 1. Returns their sum over all lookups, exact for tables of small integers
// since the per-offset float sums go to double every kGatherChunk lookups. An index
// outside [0, rows) raises before any row is read.
constexpr int64_t kGatherMaxRow = 1024;
constexpr int64_t kGatherRowFloats = 128;
constexpr int64_t kGatherAhead = 64;  // kPrefetchDistance in cpu/embedding_bag_simd.h
constexpr int64_t kGatherChunk = 4096;
constexpr int64_t kGatherStride = 16;  // floats per 64-byte line
double gather_probe(const float* table, int64_t rows, int64_t row_len, const int64_t* idx,
                    int64_t n);

// Per-ISA FMA loops (each in its own translation unit with its own target flags).
double fma_chains_avx2(int64_t iters, double* flops);
double fma_chains_avx512(int64_t iters, double* flops);
double dpbf16_chains_avx512(int64_t iters, double* flops);
double amx_bf16_chains(int64_t iters, double* flops);  // built when PDB_HAVE_AMX

}  // namespace pdb::cpu

// AVX-512 GEMM microkernels (14x32 register tile: 28 zmm accumulators, 2 B loads,
// 1 A broadcast):
//  * fp32: fp32 panels (bf16 inputs widened while packing when AVX512_BF16 is absent);
//  * bf16 with AVX512_BF16: K-pair-interleaved bf16 panels and vdpbf16ps, so each
//    32-bit lane of a B vector holds (B[k][j], B[k+1][j]) and each A broadcast holds
//    (A[i][k], A[i][k+1]).
// fp32 panels are packed with masked 16-lane copies or 8x8 transposes, K-pair bf16 panels
// by gemm_simd512.h's pack_pairs. The small-M/N paths reuse the AVX2 kernels (every
// AVX-512 CPU has AVX2+FMA).
#define PDB_GEMM_INTERNAL
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized
// reports once the epilogues are force-inlined into the K loop's instantiations.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu/gemm.h"
#include "cpu/gemm_simd512.h"

namespace pdb::cpu::detail {
namespace {

constexpr int kMR = 14, kNR = 32;

// Runs kloop(acc) and stores the R x 16*NV tile (R = 14, or 4 or 8 for a short last
// row panel). The K loop is instantiated once per epilogue flag combination, so the
// accumulators go from the loop to the stores in registers: one shared loop followed
// by a runtime-dispatched store made GCC copy every accumulator to the stack twice:
// ~450 cycles a tile, measured on Ice Lake as the per-call intercept of the 12x32
// kernel (16% of a KC = 192 tile). Edge tiles store with masks, not through a scalar
// epilogue (dlrm set, one run each: the 2048x512x13 layer 0.93x MKL with masks,
// 0.51-0.55x without).
// No C prefetch here: GCC 12 had silently dropped the one this kernel called (a function
// of prefetches only), and forced inline it changed nothing (2048^3, 2048x1024x1024,
// 2048x512x415: within the noise); the driver prefetches C for the short tiles.
template <int R, int NV, typename KLoop>
inline void run_tile(const TileEpi& e, KLoop&& kloop) {
  const bool edge = e.m != R || e.n != 16 * NV;
  with_epi_flags(e, [&](auto acc_flag, auto final_flag) {
    constexpr bool kAcc = decltype(acc_flag)::value, kFinal = decltype(final_flag)::value;
    __m512 acc[R][NV];
    kloop(acc);
    if (edge) tile_store<R, NV, kAcc, kFinal, true>(acc, e);
    else tile_store<R, NV, kAcc, kFinal, false>(acc, e);
  });
}

// fp32 R x 16*NV tile. Packed A ([k][14]), or with Direct, A read in place: 14 rows
// lda apart, unit stride along K (the driver passes only full 14-row tiles then).
// Direct addresses rows as base + {0, 1, 2} * lda from five base pointers, so the K
// loop needs 8 general registers, not 14 row pointers.
// R < 14: only the first R rows of the (still 14-row) packed panel, for a last row panel
// of a few rows.
template <int NV, bool Direct, int R = kMR>
inline void micro_f32(int64_t kpad, const float* a, int64_t lda, const float* b,
                      const TileEpi& e) {
  static_assert(!Direct || R == kMR, "A is read in place for full tiles only");
  run_tile<R, NV>(e, [&](__m512 (&acc)[R][NV]) __attribute__((always_inline)) {
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
    const float* base[5];
    for (int q = 0; q < 5; ++q) base[q] = a + 3 * q * lda;
#pragma GCC unroll 2
    for (int64_t k = 0; k < kpad; ++k) {
      __m512 bv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m512 av = _mm512_set1_ps(Direct ? base[i / 3][k + (i % 3) * lda] : a[i]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
      }
      if (!Direct) a += kMR;
      b += 16 * NV;
    }
  });
}

// A last row panel of a few rows runs a shorter tile: M = 128 is 9 x 14 + 2 rows, and
// the full tile would spend a tenth of such a layer on those 2 rows.
template <int NV>
void micro_f32_packed(int64_t kpad, const void* a, const void* b, const TileEpi& e) {
  const float* af = static_cast<const float*>(a);
  const float* bf = static_cast<const float*>(b);
  if (e.m <= 4) return micro_f32<NV, false, 4>(kpad, af, 0, bf, e);
  if (e.m <= 8) return micro_f32<NV, false, 8>(kpad, af, 0, bf, e);
  micro_f32<NV, false>(kpad, af, 0, bf, e);
}
template <int NV>
void micro_f32_direct(int64_t k, const float* a, int64_t lda, const void* b, const TileEpi& e) {
  micro_f32<NV, true>(k, a, lda, static_cast<const float*>(b), e);
}

// kpad is even; a: [kpad/2][14][2] bf16, b: [kpad/2][32][2] bf16.
void micro_bf16dp_14x32(int64_t kpad, const void* a_, const void* b_, const TileEpi& e) {
  run_tile<kMR, 2>(e, [&](__m512 (&acc)[kMR][2]) __attribute__((always_inline)) {
    const uint16_t* a = static_cast<const uint16_t*>(a_);
    const uint16_t* b = static_cast<const uint16_t*>(b_);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t k2 = 0; k2 < kpad / 2; ++k2) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);
      const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + 32);
#pragma GCC unroll 16
      for (int i = 0; i < kMR; ++i) {
        int32_t pair;
        __builtin_memcpy(&pair, a + 2 * i, 4);
        const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
      }
      a += 2 * kMR;
      b += 2 * kNR;
    }
  });
}

// ---- fp32 panels (fp32 or bf16 inputs) ------------------------------------------------
// 16 fp32 lanes from the low lanes of mask m (the rest zero, never read).
inline __m512 maskz16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 maskz16(__mmask16 m, const uint16_t* p) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// `width` (<= 32) sources contiguous along K, `valid` of them real (the rest zero), to
// p[kk * pitch + j] for kk < k, j < width, by 8x8 transposes. In chunks of 64 K with
// the column groups inside: each chunk's panel rows (8 KB at width 32) stay in L1 until
// all their column groups are written. Column groups outer over all of K wrote every
// 128-byte row of a 47 KB panel in four pieces, evicted in between. Two threads, C++
// loop, median GFLOP/s, three runs: 128x512x367 b_t (packing was 10% of the samples)
// 278-284 -> 294-307, 128x256x512 263-264 -> 265-284, 128x64x256 233-253 -> 246-256;
// chunks of 32, 128 or 256 were within these ranges.
template <typename In>
void pack_cols_k_contig(const typename In::T* src, int64_t s_mn, int valid, int width,
                        int64_t k, float* p, int64_t pitch) {
  constexpr int64_t kChunk = 64;
  for (int64_t k0 = 0; k0 < k; k0 += kChunk) {
    const int64_t k1 = imin(k0 + kChunk, k);
    for (int c0 = 0; c0 < width; c0 += 8) {
      const __mmask8 cols = __mmask8((1u << (width - c0 < 8 ? width - c0 : 8)) - 1);
      for (int64_t kk = k0; kk < k1; kk += 8) {
        // The last K % 8 by masked loads (nothing past a row's end is read) and the same
        // transpose: a scalar tail was 5/13 of K = 13 layers' packing.
        const int kn = static_cast<int>(imin(8, k1 - kk));
        __m256 v[8];
        for (int j = 0; j < 8; ++j) {
          const typename In::T* q = src + (c0 + j) * s_mn + kk;
          v[j] = c0 + j >= valid ? _mm256_setzero_ps()
                 : kn == 8       ? In::load8(q)
                                 : _mm512_castps512_ps256(maskz16(lanes(kn), q));
        }
        transpose8(v);
        for (int t = 0; t < kn; ++t) _mm256_mask_storeu_ps(p + (kk + t) * pitch + c0, cols, v[t]);
      }
    }
  }
}

// Panels of `width` (kMR or kNR) along M or N from a strided source, element (i, kk) at
// src[i * s_mn + kk * s_k], padded with zeros to whole panels. Unit stride along the
// panel (row-major B, transposed A): masked vector copies. Unit stride along K (row-major
// A, transposed B): 8x8 transposes. Anything else: the scalar packer.
template <typename In>
void pack_f32_panels(const typename In::T* src, int64_t s_mn, int64_t s_k, int64_t mn,
                     int64_t k, int width, float* d) {
  for (int64_t i0 = 0; i0 < mn; i0 += width) {
    const int valid = static_cast<int>(imin(width, mn - i0));
    const typename In::T* s = src + i0 * s_mn;
    float* p = d + (i0 / width) * k * width;
    if (s_mn == 1) {
      for (int64_t kk = 0; kk < k; ++kk)
        for (int c = 0; c < width; c += 16)
          _mm512_mask_storeu_ps(p + kk * width + c, lanes(width - c),
                                maskz16(lanes(valid - c), s + kk * s_k + c));
    } else if (s_k == 1) {
      pack_cols_k_contig<In>(s, s_mn, valid, width, k, p, width);
    } else {
      pack_panel_ref<typename In::T, float, 1>(s, s_mn, s_k, valid, k, width, p);
    }
  }
}

void pack_a_f32(const void* A, int64_t sam, int64_t sak, bool bf16, int64_t m, int64_t k,
                void* dst) {
  if (bf16) pack_f32_panels<Bf16In>(static_cast<const uint16_t*>(A), sam, sak, m, k, kMR, static_cast<float*>(dst));
  else pack_f32_panels<F32In>(static_cast<const float*>(A), sam, sak, m, k, kMR, static_cast<float*>(dst));
}
template <int NR>
void pack_b_f32(const void* B, int64_t sbk, int64_t sbn, bool bf16, int64_t k, int64_t n,
                void* dst) {
  if (bf16) pack_f32_panels<Bf16In>(static_cast<const uint16_t*>(B), sbn, sbk, n, k, NR, static_cast<float*>(dst));
  else pack_f32_panels<F32In>(static_cast<const float*>(B), sbn, sbk, n, k, NR, static_cast<float*>(dst));
}
// Only used for bf16 inputs (the driver picks this kernel for bf16 only).
void pack_a_bf16(const void* A, int64_t sam, int64_t sak, bool, int64_t m, int64_t k, void* dst) {
  pack_pair_panels<2>(static_cast<const uint16_t*>(A), sam, sak, m, k, kMR, static_cast<uint16_t*>(dst));
}
void pack_b_bf16(const void* B, int64_t sbk, int64_t sbn, bool, int64_t k, int64_t n, void* dst) {
  pack_pair_panels<2>(static_cast<const uint16_t*>(B), sbn, sbk, n, k, kNR, static_cast<uint16_t*>(dst));
}

// fp32 KC up to 512 (a 64 KiB B panel, past a 48 KiB L1): fewer passes of partial sums
// over C. Granite Rapids-class VM, two threads, median of 15 calls, KC 512 vs 192:
// 2048^3 55.8-57.0 vs 64.6-67.1 ms, 2048x512x3456 23.5 vs 26.5 ms, 2048x256x512 1.60 vs
// 2.32 ms. Not measured on Ice Lake, whose L1 is also 48 KiB.
const PackedKernel kF32Kernel = {kMR,         kNR,           1,
                                 4,           150,           512,
                                 50,          pack_a_f32,    pack_b_f32<kNR>,
                                 micro_f32_packed<2>, "avx512:packed14x32", nullptr,
                                 nullptr,     micro_f32_direct<2>};
// N <= 16: one vector of columns, so no half-empty 32-wide tiles (KC as for 14x32).
const PackedKernel kF32KernelN16 = {kMR,         16,            1,
                                    4,           75,            512,
                                    50,          pack_a_f32,    pack_b_f32<16>,
                                    micro_f32_packed<1>, "avx512:packed14x16", nullptr,
                                    nullptr,     micro_f32_direct<1>};
const PackedKernel kBf16Kernel = {kMR,         kNR,         2,
                                  2,           50,          512,
                                  50,          pack_a_bf16, pack_b_bf16,
                                  micro_bf16dp_14x32, "avx512_bf16:dpbf16_14x32", nullptr,
                                  nullptr,     nullptr};

}  // namespace

// fp32 GEMV (N = 1, A rows contiguous along K): 8 rows at a time, one zmm chain each
// (8 chains cover the FMA latency on two ports), the K tail by masked loads, so nothing
// past a row's end is read. The AVX2 dot form it replaces for N = 1 moves half as many
// bytes per load.
void gemv_f32(const GemmArgs& g, int64_t r0, int64_t r1) {
  constexpr int kRows = 8;
  const int64_t K = g.K, k16 = K / 16 * 16, lda = g.sam;
  const __mmask16 tail = lanes(K - k16);
  const float* x = static_cast<const float*>(g.B);  // sbk == 1
  const float bias = g.bias ? g.bias[0] : 0.f;
  // Full groups address rows as a + i * lda; a last group of fewer rows repeats its
  // last row (in bounds; those sums are dropped). One instantiation each: the clamped
  // addressing in every group measured 3-4% slower at 128x1x256.
  auto group = [&](int64_t m, int rows, auto full) __attribute__((always_inline)) {
    const float* a = static_cast<const float*>(g.A) + m * lda;
    auto row = [&](int i) {
      return decltype(full)::value ? a + i * lda : a + (i < rows ? i : rows - 1) * lda;
    };
    // K in blocks of kSumBlock (gemm.h), added to vector totals at each block's end.
    __m512 acc[kRows], tot[kRows];
    for (int i = 0; i < kRows; ++i) tot[i] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < k16; k0 += kSumBlock) {
      const int64_t k1 = imin(k16, k0 + kSumBlock);
      for (int i = 0; i < kRows; ++i) acc[i] = _mm512_setzero_ps();
      for (int64_t k = k0; k < k1; k += 16) {
        const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 8
        for (int i = 0; i < kRows; ++i)
          acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(row(i) + k), xv, acc[i]);
      }
      for (int i = 0; i < kRows; ++i) tot[i] = _mm512_add_ps(tot[i], acc[i]);
    }
    for (int i = 0; i < kRows; ++i) acc[i] = tot[i];
    if (tail) {
      const __m512 xv = maskz16(tail, x + k16);
#pragma GCC unroll 8
      for (int i = 0; i < kRows; ++i) acc[i] = _mm512_fmadd_ps(maskz16(tail, row(i) + k16), xv, acc[i]);
    }
    for (int i = 0; i < rows; ++i) {
      float v = _mm512_reduce_add_ps(acc[i]) + bias;
      if (g.relu && v < 0.f) v = 0.f;  // NaN passes through, like torch.relu
      static_cast<float*>(g.C)[(m + i) * g.ldc] = v;
    }
  };
  int64_t m = r0;
  for (; m + kRows <= r1; m += kRows) group(m, kRows, std::true_type{});
  if (m < r1) group(m, static_cast<int>(r1 - m), std::false_type{});
}

const PackedKernel* packed_kernel_avx512(bool bf16_dot, int64_t n) {
  if (bf16_dot) return &kBf16Kernel;
  return n <= 16 ? &kF32KernelN16 : &kF32Kernel;
}

}  // namespace pdb::cpu::detail

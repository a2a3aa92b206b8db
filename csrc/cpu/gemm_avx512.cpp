// AVX-512 GEMM microkernels (12x32 register tile: 24 zmm accumulators, 2 B loads,
// 1 A broadcast):
//  * fp32: fp32 panels (bf16 inputs widened while packing when AVX512_BF16 is absent);
//  * bf16 with AVX512_BF16: K-pair-interleaved bf16 panels and vdpbf16ps, so each
//    32-bit lane of a B vector holds (B[k][j], B[k+1][j]) and each A broadcast holds
//    (A[i][k], A[i][k+1]).
// Packing is the portable scalar packer: simple on purpose, since this file can only
// be compile-checked on the AVX2 development machine. The small-M/N paths reuse the
// AVX2 kernels (every AVX-512 CPU has AVX2+FMA).
#define PDB_GEMM_INTERNAL
#include <immintrin.h>

#include "cpu/gemm.h"

namespace pdb::cpu::detail {
namespace {

constexpr int kMR = 12, kNR = 32;

inline __m256i f32x16_to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(
      _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __m512i q = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, q);
  return _mm512_cvtepi32_epi16(r);
}

// A full tile's epilogue. Acc/Final are template arguments and the fields are read into
// locals before the first store, so the unrolled stores (which may alias anything, e
// included) neither re-test nor reload them.
template <int R, int NV, bool Acc, bool Final>
inline void tile_store_full(__m512 (&acc)[R][NV], const TileEpi& e) {
  float* const w = e.w;
  void* const c = e.c;
  const int64_t ldw = e.ldw, ldc = e.ldc;
  const float* const bias_p = e.bias;
  const bool relu = e.relu, c_bf16 = e.c_bf16;
  const __m512 zero = _mm512_setzero_ps();
  __m512 bias[NV];
  for (int v = 0; v < NV; ++v)
    bias[v] = (Final && bias_p) ? _mm512_loadu_ps(bias_p + 16 * v) : zero;
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512 x = acc[i][v];
      if (Acc) x = _mm512_add_ps(x, _mm512_loadu_ps(w + i * ldw + 16 * v));
      if (!Final) {
        _mm512_storeu_ps(w + i * ldw + 16 * v, x);
        continue;
      }
      x = _mm512_add_ps(x, bias[v]);
      if (relu) x = _mm512_max_ps(zero, x);
      if (c_bf16)
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(static_cast<uint16_t*>(c) + i * ldc + 16 * v),
            f32x16_to_bf16(x));
      else
        _mm512_storeu_ps(static_cast<float*>(c) + i * ldc + 16 * v, x);
    }
  }
}

template <int R, int NV>
inline void tile_store(__m512 (&acc)[R][NV], const TileEpi& e) {
  if (e.m == R && e.n == 16 * NV) {
    with_epi_flags(e, [&](auto acc_flag, auto final_flag) {
      tile_store_full<R, NV, decltype(acc_flag)::value, decltype(final_flag)::value>(acc, e);
    });
    return;
  }
  alignas(64) float tmp[R][16 * NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(&tmp[i][16 * v], acc[i][v]);
  tile_epilogue_ref(&tmp[0][0], 16 * NV, e);
}

void micro_f32_12x32(int64_t kpad, const void* a_, const void* b_, const TileEpi& e) {
  const float* a = static_cast<const float*>(a_);
  const float* b = static_cast<const float*>(b_);
  __m512 acc[kMR][2];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < kpad; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
    }
    a += kMR;
    b += kNR;
  }
  tile_store<kMR, 2>(acc, e);
}

// kpad is even; a: [kpad/2][12][2] bf16, b: [kpad/2][32][2] bf16.
void micro_bf16dp_12x32(int64_t kpad, const void* a_, const void* b_, const TileEpi& e) {
  const uint16_t* a = static_cast<const uint16_t*>(a_);
  const uint16_t* b = static_cast<const uint16_t*>(b_);
  __m512 acc[kMR][2];
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
  tile_store<kMR, 2>(acc, e);
}

template <typename In, typename Out, int KP>
void pack_t(const In* src, int64_t s_mn, int64_t s_k, int64_t mn, int64_t k, int width, Out* d) {
  const int64_t kpad = round_up(k, KP);
  for (int64_t i0 = 0; i0 < mn; i0 += width)
    pack_panel_ref<In, Out, KP>(src + i0 * s_mn, s_mn, s_k, imin(width, mn - i0), k, width,
                                d + (i0 / width) * kpad * width);
}

void pack_a_f32(const void* A, int64_t sam, int64_t sak, bool bf16, int64_t m, int64_t k,
                void* dst) {
  if (bf16) pack_t<uint16_t, float, 1>(static_cast<const uint16_t*>(A), sam, sak, m, k, kMR, static_cast<float*>(dst));
  else pack_t<float, float, 1>(static_cast<const float*>(A), sam, sak, m, k, kMR, static_cast<float*>(dst));
}
void pack_b_f32(const void* B, int64_t sbk, int64_t sbn, bool bf16, int64_t k, int64_t n,
                void* dst) {
  if (bf16) pack_t<uint16_t, float, 1>(static_cast<const uint16_t*>(B), sbn, sbk, n, k, kNR, static_cast<float*>(dst));
  else pack_t<float, float, 1>(static_cast<const float*>(B), sbn, sbk, n, k, kNR, static_cast<float*>(dst));
}
// Only used for bf16 inputs (the driver picks this kernel for bf16 only).
void pack_a_bf16(const void* A, int64_t sam, int64_t sak, bool, int64_t m, int64_t k, void* dst) {
  pack_t<uint16_t, uint16_t, 2>(static_cast<const uint16_t*>(A), sam, sak, m, k, kMR, static_cast<uint16_t*>(dst));
}
void pack_b_bf16(const void* B, int64_t sbk, int64_t sbn, bool, int64_t k, int64_t n, void* dst) {
  pack_t<uint16_t, uint16_t, 2>(static_cast<const uint16_t*>(B), sbn, sbk, n, k, kNR, static_cast<uint16_t*>(dst));
}

const PackedKernel kF32Kernel = {kMR, kNR, 1, 4, pack_a_f32, pack_b_f32, micro_f32_12x32,
                                 "avx512:packed12x32"};
const PackedKernel kBf16Kernel = {kMR, kNR, 2, 2, pack_a_bf16, pack_b_bf16, micro_bf16dp_12x32,
                                  "avx512_bf16:dpbf16_12x32"};

}  // namespace

const PackedKernel* packed_kernel_avx512(bool bf16_dot) {
  return bf16_dot ? &kBf16Kernel : &kF32Kernel;
}

}  // namespace pdb::cpu::detail

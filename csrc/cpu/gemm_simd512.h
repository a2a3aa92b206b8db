// AVX-512 helpers shared by the AVX-512 and AMX GEMM translation units (each includes it
// under its own target flags; internal linkage keeps the copies apart): bf16 rounding,
// lane masks, the vector tile epilogue, and the packer for K-pair bf16 panels.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm.h"
#include "cpu/gemm_simd256.h"

namespace pdb::cpu::detail {
namespace {

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

#ifdef __AVX512BF16__
// vcvtneps2bf16: the same rounding in one instruction (denormals flush to zero, as they
// do in tdpbf16ps). Only for kernels that run on AVX512_BF16 CPUs.
inline __m256i f32x16_to_bf16_native(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
#endif

inline __mmask16 lanes(int64_t n) {  // the low clamp(n, 0, 16) lanes
  return n >= 16 ? __mmask16(0xffff) : (n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1));
}
inline __mmask32 lanes32(int64_t n) {  // the low clamp(n, 0, 32) lanes
  return n >= 32 ? __mmask32(0xffffffffu) : (n <= 0 ? __mmask32(0) : __mmask32((1u << n) - 1));
}

// A tile's epilogue. Acc/Final are template arguments and the fields are read into
// locals before the first store, so the unrolled stores (which may alias anything, e
// included) neither re-test nor reload them. Edge tiles (m < R or n < 16 * NV) use the
// same code with masked loads and stores and a row bound. Cvt rounds fp32 to bf16.
template <int R, int NV, bool Acc, bool Final, bool Edge, __m256i (*Cvt)(__m512) = f32x16_to_bf16>
__attribute__((always_inline)) inline void tile_store(__m512 (&acc)[R][NV], const TileEpi& e) {
  float* const w = e.w;
  void* const c = e.c;
  const int64_t ldw = e.ldw, ldc = e.ldc;
  const float* const bias_p = e.bias;
  const bool relu = e.relu, c_bf16 = e.c_bf16;
  const int m = Edge ? e.m : R;
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 mk[NV];
  __m512 bias[NV];
  for (int v = 0; v < NV; ++v) {
    mk[v] = Edge ? lanes(e.n - 16 * v) : __mmask16(0xffff);
    bias[v] = (Final && bias_p) ? _mm512_maskz_loadu_ps(mk[v], bias_p + 16 * v) : zero;
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    if (Edge && i >= m) break;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512 x = acc[i][v];
      if (Acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk[v], w + i * ldw + 16 * v));
      if (!Final) {
        _mm512_mask_storeu_ps(w + i * ldw + 16 * v, mk[v], x);
        continue;
      }
      x = _mm512_add_ps(x, bias[v]);
      if (relu) x = _mm512_max_ps(zero, x);
      if (c_bf16)
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(c) + i * ldc + 16 * v, mk[v],
                                 Cvt(x));
      else
        _mm512_mask_storeu_ps(static_cast<float*>(c) + i * ldc + 16 * v, mk[v], x);
    }
  }
}

// K-pair bf16 panels: `width` sources (columns of B or rows of A), `valid` of them real,
// element (j, kk) at src[j * s_mn + kk * s_k], written as p[kk / 2][j][kk % 2] for
// kk < kpad (zero past k and past `valid`). Each 32-bit word of the panel is one
// (kk, kk + 1) pair, which is what vdpbf16ps and AMX's tdpbf16ps B tiles consume.
//  * s_k == 1 (source contiguous along K, e.g. x @ W.t()): the pairs are 32-bit words
//    of the source, so 8x8 transposes of words;
//  * s_mn == 1, width 32 (row-major B): two K rows interleaved by vpermt2w;
//  * anything else: element by element.
inline void pack_pairs(const uint16_t* src, int64_t s_mn, int64_t s_k, int valid, int width,
                       int64_t k, int64_t kpad, uint16_t* p) {
  const int64_t k2 = kpad / 2, full2 = k / 2;  // pair rows; pair rows with both halves real
  uint32_t* const p32 = reinterpret_cast<uint32_t*>(p);
  auto scalar_pair = [&](int64_t kk2, int j) {
    const int64_t kk = 2 * kk2;
    const uint32_t lo = j < valid && kk < k ? src[j * s_mn + kk * s_k] : 0;
    const uint32_t hi = j < valid && kk + 1 < k ? src[j * s_mn + (kk + 1) * s_k] : 0;
    p32[kk2 * width + j] = lo | (hi << 16);
  };
  if (s_k == 1) {
    for (int c0 = 0; c0 < width; c0 += 8) {
      const int cw = width - c0 < 8 ? width - c0 : 8;
      int64_t kk2 = 0;
      for (; kk2 + 8 <= full2; kk2 += 8) {
        __m256 v[8];
        for (int j = 0; j < 8; ++j)
          v[j] = c0 + j < valid ? _mm256_loadu_ps(reinterpret_cast<const float*>(
                                      src + (c0 + j) * s_mn + 2 * kk2))
                                : _mm256_setzero_ps();
        transpose8(v);
        float* pf = reinterpret_cast<float*>(p32);
        for (int t = 0; t < 8; ++t)
          _mm256_mask_storeu_ps(pf + (kk2 + t) * width + c0, __mmask8((1u << cw) - 1), v[t]);
      }
      for (; kk2 < k2; ++kk2)
        for (int j = c0; j < c0 + cw; ++j) scalar_pair(kk2, j);
    }
  } else if (s_mn == 1 && width == 32) {
    // out[2j] = row0[j], out[2j + 1] = row1[j] (vpermt2w: index 32 + j is row1[j]);
    // j < 16 from the first permute, j >= 16 from the second.
    alignas(64) static constexpr uint16_t kLo[32] = {
        0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
        8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    alignas(64) static constexpr uint16_t kHi[32] = {
        16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
        24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
    const __m512i idx_lo = _mm512_load_si512(kLo), idx_hi = _mm512_load_si512(kHi);
    const __mmask32 m = lanes32(valid);
    for (int64_t kk2 = 0; kk2 < k2; ++kk2) {
      const int64_t kk = 2 * kk2;
      const __m512i r0 = kk < k ? _mm512_maskz_loadu_epi16(m, src + kk * s_k)
                                : _mm512_setzero_si512();
      const __m512i r1 = kk + 1 < k ? _mm512_maskz_loadu_epi16(m, src + (kk + 1) * s_k)
                                    : _mm512_setzero_si512();
      _mm512_storeu_si512(p32 + kk2 * 32, _mm512_permutex2var_epi16(r0, idx_lo, r1));
      _mm512_storeu_si512(p32 + kk2 * 32 + 16, _mm512_permutex2var_epi16(r0, idx_hi, r1));
    }
  } else {
    for (int64_t kk2 = 0; kk2 < k2; ++kk2)
      for (int j = 0; j < width; ++j) scalar_pair(kk2, j);
  }
}

// Whole panels of `width` along M or N, each [kpad / 2][width][2] with kpad = k rounded
// up to KPad (2 for vdpbf16ps, 32 for AMX tiles).
template <int KPad>
void pack_pair_panels(const uint16_t* src, int64_t s_mn, int64_t s_k, int64_t mn, int64_t k,
                      int width, uint16_t* d) {
  const int64_t kpad = round_up(k, KPad);
  for (int64_t i0 = 0; i0 < mn; i0 += width)
    pack_pairs(src + i0 * s_mn, s_mn, s_k, static_cast<int>(imin(width, mn - i0)), width, k,
               kpad, d + (i0 / width) * kpad * width);
}

}  // namespace
}  // namespace pdb::cpu::detail

// AVX-512 peaks: 16-wide FMA chains, and vdpbf16ps (2 bf16 products per fp32 lane).
#include <immintrin.h>

// GCC 12's _mm512_reduce_add_ps starts from _mm512_undefined_*(), which -Wuninitialized
// reports at every call.
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "cpu/roofline.h"

namespace pdb::cpu {

double fma_chains_avx512(int64_t iters, double* flops) {
  constexpr int kChains = 16;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 0.01f * static_cast<float>(i));
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
  }
  *flops = 2.0 * 16 * kChains * static_cast<double>(iters);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

double dpbf16_chains_avx512(int64_t iters, double* flops) {
  constexpr int kChains = 16;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.01f * static_cast<float>(i));
  // Tiny products keep the accumulators bounded over many iterations.
  const __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-4f), _mm512_set1_ps(2e-4f));
  const __m512bh y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(3e-4f), _mm512_set1_ps(1e-4f));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
  }
  // Each lane does 2 multiplies and 2 adds per instruction.
  *flops = 4.0 * 16 * kChains * static_cast<double>(iters);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

}  // namespace pdb::cpu

// AVX2+FMA peak: 12 independent 8-wide chains (2 FMA pipes x 4-cycle latency needs
// >= 8 in flight; 12 leaves headroom and still fits the 16 ymm registers).
#include <immintrin.h>

#include "cpu/roofline.h"

namespace pdb::cpu {

double fma_chains_avx2(int64_t iters, double* flops) {
  constexpr int kChains = 12;
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 0.01f * static_cast<float>(i));
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
  }
  *flops = 2.0 * 8 * kChains * static_cast<double>(iters);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  double r = 0;
  for (float v : out) r += v;
  return r;
}

}  // namespace pdb::cpu

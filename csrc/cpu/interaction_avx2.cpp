// AVX2+FMA dot interaction: each row T_i is dotted with four earlier rows at a time
// (five loads per four FMAs, all from L1), the four sums reduced together by hadds.
#include <immintrin.h>
#include <omp.h>

#include "cpu/interaction.h"

namespace pdb::cpu::detail {
namespace {

// Lanes 0..3 = horizontal sums of a, b, c, d.
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

inline float dot1(const float* p, const float* q, int64_t D) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(p + d), _mm256_loadu_ps(q + d), acc);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  float r = _mm_cvtss_f32(s);
  for (; d < D; ++d) r += p[d] * q[d];
  return r;
}

}  // namespace

void dot_interaction_avx2(const InteractionArgs& a) {
  const int64_t D = a.D, F = a.F, D8 = D / 8 * 8;
#pragma omp parallel for schedule(static) if (a.B * F * F * D > (1 << 20))
  for (int64_t b = 0; b < a.B; ++b) {
    const float* x = a.x + b * a.ldx;
    // F = 1: no embedding rows, and emb may be the null pointer of an empty tensor.
    const float* e = a.F > 1 ? a.emb + b * a.lde : nullptr;
    float* o = a.out + b * a.ldo;
    auto row = [&](int64_t f) { return f == 0 ? x : e + (f - 1) * D; };
    int64_t d = 0;
    for (; d < D8; d += 8) _mm256_storeu_ps(o + d, _mm256_loadu_ps(x + d));
    for (; d < D; ++d) o[d] = x[d];
    float* z = o + D;
    for (int64_t i = 1; i < F; ++i) {
      const float* ri = row(i);
      int64_t j = 0;
      for (; j + 4 <= i; j += 4) {
        const float *r0 = row(j), *r1 = row(j + 1), *r2 = row(j + 2), *r3 = row(j + 3);
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (d = 0; d < D8; d += 8) {
          const __m256 v = _mm256_loadu_ps(ri + d);
          s0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r0 + d), s0);
          s1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r1 + d), s1);
          s2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r2 + d), s2);
          s3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r3 + d), s3);
        }
        alignas(16) float s[4];
        _mm_store_ps(s, hsum4(s0, s1, s2, s3));
        for (; d < D; ++d) {
          s[0] += ri[d] * r0[d];
          s[1] += ri[d] * r1[d];
          s[2] += ri[d] * r2[d];
          s[3] += ri[d] * r3[d];
        }
        z[0] = s[0];
        z[1] = s[1];
        z[2] = s[2];
        z[3] = s[3];
        z += 4;
      }
      for (; j < i; ++j) *z++ = dot1(ri, row(j), D);
    }
  }
}

}  // namespace pdb::cpu::detail

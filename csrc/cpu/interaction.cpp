#include "cpu/interaction.h"

#include <omp.h>

#include "common/cpu_features.h"

namespace pdb::cpu {

namespace {
void dot_interaction_generic(const InteractionArgs& a) {
  const int64_t D = a.D;
#pragma omp parallel for schedule(static) if (a.B * a.F * a.F * D > (1 << 20))
  for (int64_t b = 0; b < a.B; ++b) {
    const float* x = a.x + b * a.ldx;
    // F = 1: no embedding rows, and emb may be the null pointer of an empty tensor.
    const float* e = a.F > 1 ? a.emb + b * a.lde : nullptr;
    float* o = a.out + b * a.ldo;
    auto row = [&](int64_t f) { return f == 0 ? x : e + (f - 1) * D; };
    for (int64_t d = 0; d < D; ++d) o[d] = x[d];
    float* z = o + D;
    for (int64_t i = 1; i < a.F; ++i)
      for (int64_t j = 0; j < i; ++j) {
        const float *ri = row(i), *rj = row(j);
        float s = 0.f;
        for (int64_t d = 0; d < D; ++d) s += ri[d] * rj[d];
        *z++ = s;
      }
  }
}
}  // namespace

void dot_interaction(const InteractionArgs& a) {
  if (a.B <= 0) return;
  if (active_isa() >= Isa::avx2) return detail::dot_interaction_avx2(a);
  dot_interaction_generic(a);
}

}  // namespace pdb::cpu

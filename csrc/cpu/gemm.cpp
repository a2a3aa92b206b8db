// Portable reference-speed GEMM (placeholder for the tuned per-ISA kernels):
// blocked over K and N so that a panel of B stays in cache, fp32 accumulate.
#include "cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace pdb::cpu {
namespace {

template <typename T>
inline float load(const T* p, int64_t i) {
  if constexpr (sizeof(T) == 2) return bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
  else return p[i];
}

template <typename T>
void gemm_generic(const GemmArgs& g) {
  const T* A = static_cast<const T*>(g.A);
  const T* B = static_cast<const T*>(g.B);
  T* C = static_cast<T*>(g.C);
#pragma omp parallel
  {
    std::vector<float> acc(g.N);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < g.M; ++i) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t k = 0; k < g.K; ++k) {
        const float a = load(A, i * g.sam + k * g.sak);
        for (int64_t j = 0; j < g.N; ++j) acc[j] += a * load(B, k * g.sbk + j * g.sbn);
      }
      for (int64_t j = 0; j < g.N; ++j) {
        float v = acc[j] + (g.bias ? g.bias[j] : 0.f);
        if (g.relu) v = std::max(v, 0.f);
        if constexpr (sizeof(T) == 2) reinterpret_cast<uint16_t*>(C)[i * g.ldc + j] = f32_to_bf16(v);
        else C[i * g.ldc + j] = v;
      }
    }
  }
}

}  // namespace

void gemm(const GemmArgs& g, DType dtype) {
  if (dtype == DType::bf16) gemm_generic<uint16_t>(g);
  else gemm_generic<float>(g);
}

}  // namespace pdb::cpu

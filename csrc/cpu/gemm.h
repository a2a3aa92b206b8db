// CPU GEMM: C[M,N] = act(A[M,K] @ B[K,N] + bias[N]).
// A and B are arbitrary strided views (so transposed operands need no copy);
// C is row-major with leading dimension ldc. Accumulation is always fp32.
#pragma once
#include <cstdint>

#include "common/tensor.h"

namespace pdb::cpu {

struct GemmArgs {
  int64_t M, N, K;
  const void* A; int64_t sam, sak;  // element strides of A along M and K
  const void* B; int64_t sbk, sbn;  // element strides of B along K and N
  void* C; int64_t ldc;             // C row-major, unit stride along N
  const float* bias;                // N floats, or nullptr
  bool relu;
};

// dtype: f32 (A, B, C fp32) or bf16 (A, B, C bf16, fp32 accumulate).
void gemm(const GemmArgs& args, DType dtype);

}  // namespace pdb::cpu

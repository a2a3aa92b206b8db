// DLRM's "dot" feature interaction, fused: for each sample b with feature rows
// T_0 = x[b] and T_f = emb[b, (f-1)*D : f*D] (f = 1..F-1),
//   out[b, :D]          = x[b]
//   out[b, D + p(i, j)] = <T_i, T_j>  for i > j, p(i, j) = i*(i-1)/2 + j
// (the strict lower triangle of T T^T in row-major order, torch.tril_indices(F, F, -1)).
// No (B, F, F) product, no concatenated copy of T: each sample's rows are read once from
// where they are and stay in L1 while its F(F-1)/2 dot products run.
#pragma once
#include <cstdint>

namespace pdb::cpu {

struct InteractionArgs {
  int64_t B, F, D;
  const float* x;  // (B, D), row stride ldx
  int64_t ldx;
  const float* emb;  // (B, (F-1)*D), row stride lde
  int64_t lde;
  float* out;  // (B, D + F(F-1)/2), row stride ldo
  int64_t ldo;
};

void dot_interaction(const InteractionArgs& a);

namespace detail {
void dot_interaction_avx2(const InteractionArgs& a);
}

}  // namespace pdb::cpu

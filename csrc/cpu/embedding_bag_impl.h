// Portable embedding-bag loops shared by the generic, AVX2 and AVX-512 translation units.
// Each includer defines PDB_EMB_NS first, so every TU gets its own copy compiled with
// its own target flags (one shared COMDAT copy could leak AVX2 code into the generic
// path). Only raw pointers and builtins here: no std:: templates that could be
// instantiated (and merged) across TUs with different flags.
#ifndef PDB_EMB_NS
#error "define PDB_EMB_NS before including embedding_bag_impl.h"
#endif
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/embedding_bag.h"

namespace pdb::cpu {
namespace PDB_EMB_NS {
namespace {

inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o);
}
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// A bag with no lookups pools to zeros (argmax -1), as torch's; true when it was one.
inline bool write_if_empty(int64_t p0, int64_t p1, float* o, int64_t* am, int64_t D) {
  if (p1 != p0) return false;
  for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
  if (am)
    for (int64_t d = 0; d < D; ++d) am[d] = -1;
  return true;
}

// Work of bags [0, g) is offsets[g] + g (one unit per lookup and one per output
// row). Smallest g in [0, TB] whose prefix work reaches `target`.
template <class IT>
int64_t bag_at_work(const IT* off, int64_t TB, int64_t target) {
  int64_t lo = 0, hi = TB;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(off[mid]) + mid >= target) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

// Splits all T*B bags into chunks of about equal work (ragged bags stay balanced)
// and hands them out dynamically; fn(t, g0, g1) gets runs of bags of one table.
template <class IT, class Fn>
void for_bag_chunks(const BagsLayout& L, Fn&& fn) {
  const IT* off = static_cast<const IT*>(L.offsets);
  const int64_t TB = L.T * L.B;
  if (TB == 0) return;
  const int64_t W = static_cast<int64_t>(off[TB]) + TB;
  const int nt = omp_get_max_threads();
  int64_t K = imin(static_cast<int64_t>(nt) * 8, imax(1, W / 512));
  if (nt == 1) K = 1;
#pragma omp parallel for schedule(dynamic, 1) if (K > 1)
  for (int64_t k = 0; k < K; ++k) {
    int64_t g = bag_at_work(off, TB, W * k / K);
    const int64_t g1 = k + 1 == K ? TB : bag_at_work(off, TB, W * (k + 1) / K);
    while (g < g1) {
      const int64_t t = g / L.B;
      const int64_t ge = imin(g1, (t + 1) * L.B);
      fn(t, g, ge);
      g = ge;
    }
  }
}

// ---- dense backward --------------------------------------------------------
// Threads own disjoint global row ranges and scan the bags of the tables that
// intersect theirs: no atomics, and each row accumulates in index order.
template <class IT>
void backward_dense_impl(const EmbBwdArgs& a) {
  const BagsLayout& L = a.L;
  const IT* idx = static_cast<const IT*>(L.indices);
  const IT* off = static_cast<const IT*>(L.offsets);
  const int64_t D = L.D, B = L.B, T = L.T, R = L.R_total;
  if (R == 0 || D == 0) return;
#pragma omp parallel if (R > 1)
  {
    const int64_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t r0 = R * tid / nt, r1 = R * (tid + 1) / nt;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t t0 = L.table_offsets[t], t1 = L.table_offsets[t + 1];
      if (t1 <= r0 || t0 >= r1) continue;
      for (int64_t b = 0; b < B; ++b) {
        const float* go = a.grad_out + b * a.go_stride + t * D;
        if (a.mode == kEmbMax) {
          const int64_t* am = a.argmax + b * a.am_stride + t * D;
          for (int64_t d = 0; d < D; ++d) {
            const int64_t r = am[d];
            if (r >= r0 && r < r1) a.grad_weight[r * a.gw_stride + d] += go[d];
          }
          continue;
        }
        const int64_t g = t * B + b;
        const int64_t p0 = off[g], p1 = off[g + 1];
        const float inv = a.mode == kEmbMean && p1 > p0 ? 1.0f / static_cast<float>(p1 - p0) : 1.0f;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t r = t0 + static_cast<int64_t>(idx[p]);
          if (r < r0 || r >= r1) continue;
          const float s = a.psw ? a.psw[p] : inv;
          float* __restrict__ gw = a.grad_weight + r * a.gw_stride;
          for (int64_t d = 0; d < D; ++d) gw[d] += s * go[d];
        }
      }
    }
  }
}

// ---- fused sparse optimizer step -------------------------------------------
// keys are sorted by row (stable: equal rows keep index order). Thread boundaries
// are moved to the start of a row's run, so every touched row is aggregated and
// updated by exactly one thread, once.
template <class IT, class WT, bool ADAGRAD>
void sparse_apply_impl(const EmbSparseStepArgs& a, const uint64_t* keys, const uint32_t* bag_of,
                       float* gbuf, int64_t gbuf_stride) {
  const BagsLayout& L = a.L;
  const IT* off = static_cast<const IT*>(L.offsets);
  const int64_t n = L.N, D = L.D, B = L.B;
  if (n == 0 || D == 0) return;
  auto row_of = [keys](int64_t i) { return static_cast<int64_t>(keys[i] >> 32); };
  auto run_start = [&](int64_t i) {
    while (i > 0 && i < n && row_of(i) == row_of(i - 1)) ++i;
    return i;
  };
  WT* W = static_cast<WT*>(a.weight);
  const float lr = a.lr, eps = a.eps;
  const bool mean = a.mode == kEmbMean;
  constexpr int64_t kPf = 8;
#pragma omp parallel if (n > 4096)
  {
    const int64_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t s = run_start(n * tid / nt), e = run_start(n * (tid + 1) / nt);
    float* __restrict__ g = gbuf + tid * gbuf_stride;
    int64_t i = s;
    while (i < e) {
      const int64_t row = row_of(i);
      for (int64_t d = 0; d < D; ++d) g[d] = 0.0f;
      int64_t j = i;
      for (; j < n && row_of(j) == row; ++j) {
        if (j + kPf < e) {
          const uint32_t pq = static_cast<uint32_t>(keys[j + kPf]);
          const uint32_t gq = bag_of[pq];
          prefetch_bytes(a.grad_out + (gq % B) * a.go_stride + (gq / B) * D, D * 4);
          // the next rows' weights (the same row again for duplicates: then cached)
          prefetch_bytes(W + row_of(j + kPf) * a.w_stride, D * int64_t{sizeof(WT)});
        }
        const uint32_t p = static_cast<uint32_t>(keys[j]);
        const int64_t bg = bag_of[p];
        const int64_t t = bg / B, b = bg - t * B;
        float sc = 1.0f;
        if (a.psw) sc = a.psw[p];
        else if (mean) sc = 1.0f / static_cast<float>(off[bg + 1] - off[bg]);
        const float* __restrict__ go = a.grad_out + b * a.go_stride + t * D;
        for (int64_t d = 0; d < D; ++d) g[d] += sc * go[d];
      }
      WT* __restrict__ w = W + row * a.w_stride;
      float mult = lr;
      if constexpr (ADAGRAD) {
        float ss = 0.0f;
        for (int64_t d = 0; d < D; ++d) ss += g[d] * g[d];
        const float m = a.momentum[row] + ss / static_cast<float>(D);
        a.momentum[row] = m;
        mult = lr / (std::sqrt(m) + eps);
      }
      if constexpr (sizeof(WT) == 4) {
        for (int64_t d = 0; d < D; ++d) w[d] -= mult * g[d];
      } else {
        for (int64_t d = 0; d < D; ++d) w[d] = f32_to_bf16(bf16_to_f32(w[d]) - mult * g[d]);
      }
      i = j;
    }
  }
}

template <class IT>
void sparse_apply_dispatch(const EmbSparseStepArgs& a, const uint64_t* keys, const uint32_t* bag_of,
                           float* gbuf, int64_t gbuf_stride) {
  const bool bf16 = a.wdtype == DType::bf16;
  if (a.momentum) {
    if (bf16) sparse_apply_impl<IT, uint16_t, true>(a, keys, bag_of, gbuf, gbuf_stride);
    else sparse_apply_impl<IT, float, true>(a, keys, bag_of, gbuf, gbuf_stride);
  } else {
    if (bf16) sparse_apply_impl<IT, uint16_t, false>(a, keys, bag_of, gbuf, gbuf_stride);
    else sparse_apply_impl<IT, float, false>(a, keys, bag_of, gbuf, gbuf_stride);
  }
}

}  // namespace
}  // namespace PDB_EMB_NS
}  // namespace pdb::cpu

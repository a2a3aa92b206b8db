// AVX2+FMA+F16C embedding bags. The forward pools each bag in registers: D is cut
// into column blocks (fp32 sum/mean: up to 128 floats in 16 ymm accumulators, else
// 64), rows convert to fp32 on load (bf16 by a 16-bit shift, fp16 by vcvtph2ps), and
// rows 32 lookups ahead are prefetched into L2 (the gather is latency bound: one random
// row per lookup). Outputs too big for the threads' L2 go out through streaming stores
// (see stream_output). The bag loop around the kernel is embedding_bag_simd.h.
#define PDB_EMB_NS avx2
#include "cpu/embedding_bag_impl.h"
#include "cpu/embedding_bag_simd.h"

#include <immintrin.h>

#include <cstdint>

namespace pdb::cpu {
namespace avx2 {
namespace {

template <class WT>
inline __m256 load8(const typename Storage<WT>::type* p) {
  if constexpr (sizeof(typename Storage<WT>::type) == 4) {
    return _mm256_loadu_ps(p);
  } else if constexpr (__is_same(WT, Bf16)) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
}

inline __m256i tail_mask(int r) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// r < 8 trailing elements, never reading past them; unused lanes are 0.
template <class WT>
inline __m256 load_tail(const typename Storage<WT>::type* p, int r, __m256i mask) {
  if constexpr (sizeof(typename Storage<WT>::type) == 4) {
    return _mm256_maskload_ps(p, mask);
  } else {
    alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < r; ++i) tmp[i] = p[i];
    return load8<WT>(tmp);
  }
}

// The pooled block to o. NT: streaming stores (o is 32-byte aligned): whole output lines
// go to memory without first being read for ownership. A compile-time choice: with a
// runtime one GCC kept the accumulators on the stack, and streaming stores fed from
// stack reloads took 6.2 ms where plain stores took 3.6 and register-fed streaming
// stores 2.4 (dlrm-mlperf one-hot after 256 MB of other traffic, C++ loop).
template <int NV, bool NT>
inline void store_block(float* o, const __m256 (&acc)[NV + 1], int r, __m256i tm) {
#pragma GCC unroll 17
  for (int v = 0; v < NV; ++v) {
    if constexpr (NT) _mm256_stream_ps(o + 8 * v, acc[v]);
    else _mm256_storeu_ps(o + 8 * v, acc[v]);
  }
  if (r) _mm256_maskstore_ps(o + 8 * NV, tm, acc[NV]);
}

// One bag, one column block of NV full vectors plus an r-element tail. The loops over
// the NV accumulators are unrolled by pragma: left to GCC's heuristics, some callers got
// the accumulators kept in memory, and streaming stores fed from stack reloads are slow
// (store_block; with the pragmas 10 of the 1496 streaming stores read the stack, all in
// max or mean modes, against 40 before and 589 in a variant with one more caller).
struct Kernel {
  static constexpr int kLanes = 8;
  // fp32 sum/mean: 128 floats in 16 accumulators; bf16/fp16 and max (whose winning
  // positions take as many registers again): 64.
  template <class ST, int MODE>
  static constexpr int max_nv() {
    return sizeof(ST) == 4 && MODE != kEmbMax ? 16 : 8;
  }
  template <class WT, class IT, int NV, int MODE, bool PSW, bool NT>
  static void block(const Seg& s, const IT* idx, int64_t p0, int64_t p1, int64_t c0, int r,
                    float* o, int64_t* am, bool prefetch);
};

template <class WT, class IT, int NV, int MODE, bool PSW, bool NT>
void Kernel::block(const Seg& s, const IT* idx, int64_t p0, int64_t p1, int64_t c0, int r,
                   float* o, int64_t* am, bool prefetch) {
  using ST = typename Storage<WT>::type;
  const ST* tbl = static_cast<const ST*>(s.tbl) + c0;
  if constexpr (NV == 16) r = 0;  // blocks are <= 128 wide: tell the compiler, so the
                                  // dead tail accumulator does not spill the others
  const __m256i tm = tail_mask(r);
  __m256 acc[NV + 1];
  if constexpr (MODE == kEmbMax) {
    __m256i pos[NV + 1];
    const ST* row = tbl + static_cast<int64_t>(idx[p0]) * s.ws;
#pragma GCC unroll 17
    for (int v = 0; v < NV; ++v) {
      acc[v] = load8<WT>(row + 8 * v);
      pos[v] = _mm256_setzero_si256();
    }
    // The tail slot is set even without a tail: GCC cannot tell it is then never read.
    acc[NV] = r ? load_tail<WT>(row + 8 * NV, r, tm) : _mm256_setzero_ps();
    pos[NV] = _mm256_setzero_si256();
    for (int64_t p = p0 + 1; p < p1; ++p) {
      if (prefetch && p + s.pf < s.pend)
        prefetch_row(static_cast<const ST*>(s.tbl) + static_cast<int64_t>(idx[p + s.pf]) * s.ws,
                     s.row_bytes);
      row = tbl + static_cast<int64_t>(idx[p]) * s.ws;
      const __m256i k = _mm256_set1_epi32(static_cast<int>(p - p0));
#pragma GCC unroll 17
      for (int v = 0; v < NV; ++v) {
        const __m256 x = load8<WT>(row + 8 * v);
        const __m256 gt = _mm256_cmp_ps(x, acc[v], _CMP_GT_OQ);  // first max wins ties, like torch
        acc[v] = _mm256_blendv_ps(acc[v], x, gt);
        pos[v] = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(pos[v]), _mm256_castsi256_ps(k), gt));
      }
      if (r) {
        const __m256 x = load_tail<WT>(row + 8 * NV, r, tm);
        const __m256 gt = _mm256_cmp_ps(x, acc[NV], _CMP_GT_OQ);
        acc[NV] = _mm256_blendv_ps(acc[NV], x, gt);
        pos[NV] = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(pos[NV]), _mm256_castsi256_ps(k), gt));
      }
    }
    store_block<NV, NT>(o + c0, acc, r, tm);
    if (am) {
      alignas(32) int32_t pp[8];
      for (int v = 0; v < NV + (r ? 1 : 0); ++v) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(pp), pos[v]);
        const int w = v < NV ? 8 : r;
        for (int i = 0; i < w; ++i)
          am[c0 + 8 * v + i] = s.toff + static_cast<int64_t>(idx[p0 + pp[i]]);
      }
    }
  } else {
#pragma GCC unroll 17
    for (int v = 0; v <= NV; ++v) acc[v] = _mm256_setzero_ps();
    for (int64_t p = p0; p < p1; ++p) {
      if (prefetch && p + s.pf < s.pend)
        prefetch_row(static_cast<const ST*>(s.tbl) + static_cast<int64_t>(idx[p + s.pf]) * s.ws,
                     s.row_bytes);
      const ST* row = tbl + static_cast<int64_t>(idx[p]) * s.ws;
      if constexpr (PSW) {
        const __m256 w = _mm256_set1_ps(s.psw[p]);
#pragma GCC unroll 17
        for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(load8<WT>(row + 8 * v), w, acc[v]);
        if (r) acc[NV] = _mm256_fmadd_ps(load_tail<WT>(row + 8 * NV, r, tm), w, acc[NV]);
      } else {
#pragma GCC unroll 17
        for (int v = 0; v < NV; ++v) acc[v] = _mm256_add_ps(acc[v], load8<WT>(row + 8 * v));
        if (r) acc[NV] = _mm256_add_ps(acc[NV], load_tail<WT>(row + 8 * NV, r, tm));
      }
    }
    if constexpr (MODE == kEmbMean) {
      const __m256 inv = _mm256_set1_ps(1.0f / static_cast<float>(p1 - p0));
#pragma GCC unroll 17
      for (int v = 0; v <= NV; ++v) acc[v] = _mm256_mul_ps(acc[v], inv);
    }
    store_block<NV, NT>(o + c0, acc, r, tm);
  }
}

}  // namespace
}  // namespace avx2

namespace detail {

void forward_avx2(const EmbFwdArgs& a) { avx2::forward_simd<avx2::Kernel>(a); }

void backward_dense_avx2(const EmbBwdArgs& a) {
  if (a.L.idx64) avx2::backward_dense_impl<int64_t>(a);
  else avx2::backward_dense_impl<int32_t>(a);
}

void sparse_apply_avx2(const EmbSparseStepArgs& a, const uint64_t* keys, const uint32_t* bag_of,
                       float* gbuf, int64_t gbuf_stride) {
  if (a.L.idx64) avx2::sparse_apply_dispatch<int64_t>(a, keys, bag_of, gbuf, gbuf_stride);
  else avx2::sparse_apply_dispatch<int32_t>(a, keys, bag_of, gbuf, gbuf_stride);
}

}  // namespace detail
}  // namespace pdb::cpu

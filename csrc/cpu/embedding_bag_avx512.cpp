// AVX-512 (F, BW, VL, DQ) embedding-bag forward: the AVX2 kernel's loop with 16-float
// vectors, twice the columns per accumulator, and masked loads and stores for the
// tails (no bytewise tail copies). The bag loop around it is embedding_bag_simd.h. The
// backward and the sparse step run the AVX2 code on AVX-512 CPUs too.
//
// fp32 sum, Zen 4 (2 cores), this forward against the AVX2 one from the same tree, calls
// alternating in one process, median of 80 each, two runs: emb_A (4M rows x 128, batch
// 65536, 30 lookups) 1.16x / 1.14x, dlrm-dcnv2 multi-hot 1.08-1.12x, dlrm-mlperf one-hot
// 0.99x / 1.01x (a one-row bag has nothing to accumulate: its time is the row's miss).
#define PDB_EMB_NS avx512
#include "cpu/embedding_bag_impl.h"
#include "cpu/embedding_bag_simd.h"

#include <immintrin.h>

#include <cstdint>

namespace pdb::cpu {
namespace avx512 {
namespace {

template <class WT>
inline __m512 widen(__m256i h) {
  if constexpr (__is_same(WT, Bf16))
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  else return _mm512_cvtph_ps(h);
}

template <class WT>
inline __m512 load16(const typename Storage<WT>::type* p) {
  if constexpr (sizeof(typename Storage<WT>::type) == 4) return _mm512_loadu_ps(p);
  else return widen<WT>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The r < 16 elements under mask m (masked-off lanes are 0 and never read from memory).
template <class WT>
inline __m512 load_tail(const typename Storage<WT>::type* p, __mmask16 m) {
  if constexpr (sizeof(typename Storage<WT>::type) == 4) return _mm512_maskz_loadu_ps(m, p);
  else return widen<WT>(_mm256_maskz_loadu_epi16(m, p));
}

// NT: streaming stores (o is 64-byte aligned: stream_output). A compile-time choice, as
// in the AVX2 kernel, so the accumulators stay in registers.
template <int NV, bool NT>
inline void store_block(float* o, const __m512 (&acc)[NV + 1], int r, __mmask16 m) {
#pragma GCC unroll 17
  for (int v = 0; v < NV; ++v) {
    if constexpr (NT) _mm512_stream_ps(o + 16 * v, acc[v]);
    else _mm512_storeu_ps(o + 16 * v, acc[v]);
  }
  if (r) _mm512_mask_storeu_ps(o + 16 * NV, m, acc[NV]);
}

struct Kernel {
  static constexpr int kLanes = 16;
  // fp32 sum/mean: 256 floats in 16 of the 32 zmm registers; bf16/fp16 and max: 128.
  template <class ST, int MODE>
  static constexpr int max_nv() {
    return sizeof(ST) == 4 && MODE != kEmbMax ? 16 : 8;
  }
  template <class WT, class IT, int NV, int MODE, bool PSW, bool NT>
  static void block(const Seg& s, const IT* idx, int64_t p0, int64_t p1, int64_t c0, int r,
                    float* o, int64_t* am, bool prefetch);
};

// One bag, one column block of NV full vectors plus an r-element tail; the loops over
// the accumulators are unrolled by pragma for the reason the AVX2 kernel gives.
template <class WT, class IT, int NV, int MODE, bool PSW, bool NT>
void Kernel::block(const Seg& s, const IT* idx, int64_t p0, int64_t p1, int64_t c0, int r,
                   float* o, int64_t* am, bool prefetch) {
  using ST = typename Storage<WT>::type;
  const ST* tbl = static_cast<const ST*>(s.tbl) + c0;
  if constexpr (NV == max_nv<ST, MODE>()) r = 0;  // a full-width block has no tail
  const __mmask16 m = static_cast<__mmask16>((1u << r) - 1u);
  __m512 acc[NV + 1];
  if constexpr (MODE == kEmbMax) {
    __m512i pos[NV + 1];
    const ST* row = tbl + static_cast<int64_t>(idx[p0]) * s.ws;
#pragma GCC unroll 17
    for (int v = 0; v < NV; ++v) {
      acc[v] = load16<WT>(row + 16 * v);
      pos[v] = _mm512_setzero_si512();
    }
    acc[NV] = r ? load_tail<WT>(row + 16 * NV, m) : _mm512_setzero_ps();
    pos[NV] = _mm512_setzero_si512();
    for (int64_t p = p0 + 1; p < p1; ++p) {
      if (prefetch && p + s.pf < s.pend)
        prefetch_row(static_cast<const ST*>(s.tbl) + static_cast<int64_t>(idx[p + s.pf]) * s.ws,
                     s.row_bytes);
      row = tbl + static_cast<int64_t>(idx[p]) * s.ws;
      const __m512i k = _mm512_set1_epi32(static_cast<int>(p - p0));
      // strictly greater: the first max wins ties, like torch
      auto take = [&](int v, __m512 x) {
        const __mmask16 gt = _mm512_cmp_ps_mask(x, acc[v], _CMP_GT_OQ);
        acc[v] = _mm512_mask_blend_ps(gt, acc[v], x);
        pos[v] = _mm512_mask_blend_epi32(gt, pos[v], k);
      };
#pragma GCC unroll 17
      for (int v = 0; v < NV; ++v) take(v, load16<WT>(row + 16 * v));
      if (r) take(NV, load_tail<WT>(row + 16 * NV, m));
    }
    store_block<NV, NT>(o + c0, acc, r, m);
    if (am) {
      alignas(64) int32_t pp[16];
      for (int v = 0; v < NV + (r ? 1 : 0); ++v) {
        _mm512_store_si512(pp, pos[v]);
        const int w = v < NV ? 16 : r;
        for (int i = 0; i < w; ++i)
          am[c0 + 16 * v + i] = s.toff + static_cast<int64_t>(idx[p0 + pp[i]]);
      }
    }
  } else {
#pragma GCC unroll 17
    for (int v = 0; v <= NV; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t p = p0; p < p1; ++p) {
      if (prefetch && p + s.pf < s.pend)
        prefetch_row(static_cast<const ST*>(s.tbl) + static_cast<int64_t>(idx[p + s.pf]) * s.ws,
                     s.row_bytes);
      const ST* row = tbl + static_cast<int64_t>(idx[p]) * s.ws;
      if constexpr (PSW) {
        const __m512 w = _mm512_set1_ps(s.psw[p]);
#pragma GCC unroll 17
        for (int v = 0; v < NV; ++v) acc[v] = _mm512_fmadd_ps(load16<WT>(row + 16 * v), w, acc[v]);
        if (r) acc[NV] = _mm512_fmadd_ps(load_tail<WT>(row + 16 * NV, m), w, acc[NV]);
      } else {
#pragma GCC unroll 17
        for (int v = 0; v < NV; ++v) acc[v] = _mm512_add_ps(acc[v], load16<WT>(row + 16 * v));
        if (r) acc[NV] = _mm512_add_ps(acc[NV], load_tail<WT>(row + 16 * NV, m));
      }
    }
    if constexpr (MODE == kEmbMean) {
      const __m512 inv = _mm512_set1_ps(1.0f / static_cast<float>(p1 - p0));
#pragma GCC unroll 17
      for (int v = 0; v <= NV; ++v) acc[v] = _mm512_mul_ps(acc[v], inv);
    }
    store_block<NV, NT>(o + c0, acc, r, m);
  }
}

}  // namespace
}  // namespace avx512

namespace detail {

void forward_avx512(const EmbFwdArgs& a) { avx512::forward_simd<avx512::Kernel>(a); }

}  // namespace detail
}  // namespace pdb::cpu

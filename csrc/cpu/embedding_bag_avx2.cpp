// AVX2+FMA+F16C embedding bags. The forward pools each bag in registers: D is cut
// into column blocks (fp32 sum/mean: up to 128 floats in 16 ymm accumulators, else
// 64), rows convert to fp32 on load (bf16 by a 16-bit shift, fp16 by vcvtph2ps), and
// rows 32 lookups ahead are prefetched into L2 (the gather is latency bound: one random
// row per lookup). Outputs too big for the threads' L2 go out through streaming stores
// (see stream_output).
#define PDB_EMB_NS avx2
#include "cpu/embedding_bag_impl.h"

#include <immintrin.h>

#include <cstdint>

#include "common/cpu_features.h"

namespace pdb::cpu {
namespace avx2 {
namespace {

// Lookups to prefetch ahead, into L2. A T0 (L1) prefetch holds one of the core's ~16
// L1 fill buffers until its line arrives, which capped the rows in flight at about two
// whatever the distance; L2 tracks more misses at once. emb_A (4M rows x 512 B, batch
// 65536, L = 30), Granite Rapids-class VM, one build each in a C++ driver, two runs:
// T0 at 8 rows 54-55% of STREAM; T1 at 24 rows 69-75%, 32 rows 73-80%, 48 rows 77-79%.
constexpr int kPrefetchDistance = 32;
// Bags ahead whose output lines are prefetched into L1. Each bag's output is D floats
// one row of (B, T*D) apart from the previous one, a stride the hardware prefetchers do
// not follow, so every store missed. dlrm-mlperf one-hot (26 tables capped at 1M rows,
// batch 2048), median of 50 calls, two runs: 2.60/2.51 ms without, 1.90/2.09 ms at 4
// bags, 2.02/2.03 at 8, 2.12/2.07 at 16; an L2 (T1) prefetch at 8: 2.66/2.49.
constexpr int kOutPrefetchBags = 8;

struct Bf16 {};
struct F16 {};
template <class WT> struct Storage { using type = float; };
template <> struct Storage<Bf16> { using type = uint16_t; };
template <> struct Storage<F16> { using type = uint16_t; };

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

inline void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(c + o, _MM_HINT_T1);
  _mm_prefetch(c + bytes - 1, _MM_HINT_T1);  // the row's last line when it is unaligned
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

// Streaming output stores when the output is too big to stay in the threads' L2 for the
// next layer anyway, and every bag's D floats fill whole 64-byte lines. A plain store
// first reads its line for ownership: dlrm-mlperf one-hot (26 tables, batch 2048, 27 MB
// of output), C++ loop, median of 60 calls, plain vs streaming: 2.3-2.4 vs 1.6-1.8 ms
// with the caches warm, 3.5-3.8 vs 2.3-2.5 ms after 256 MB of other traffic; batch 512
// (7 MB) 0.82 vs 0.64 ms after 64 MB. (The output prefetch below is then skipped: it
// would read the lines the stores bypass.) DLRM dlrm-mlperf end to end, whose
// interaction reads this output next: train 16.8k vs 16.0k ex/s, infer 59.7k vs 60.6k
// (one run each, the noise).
bool stream_output(const EmbFwdArgs& a) {
  const int64_t bytes = a.L.B * a.out_stride * static_cast<int64_t>(sizeof(float));
  return a.L.D % 16 == 0 && a.out_stride % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.out) % 64 == 0 &&
         bytes > omp_get_max_threads() * cpu_features().l2_clamped;
}

struct Seg {
  const void* tbl;  // first row of the table, at column c0
  int64_t ws, row_bytes, toff;
  const float* psw;
  int64_t pend;  // end of this run's positions (prefetch bound)
  int pf;
};

// One bag, one column block of NV full vectors plus an r-element tail. The loops over
// the NV accumulators are unrolled by pragma: left to GCC's heuristics, some callers got
// the accumulators kept in memory, and streaming stores fed from stack reloads are slow
// (store_block; with the pragmas 10 of the 1496 streaming stores read the stack, all in
// max or mean modes, against 40 before and 589 in a variant with one more caller).
template <class WT, class IT, int NV, int MODE, bool PSW, bool NT>
void bag_block(const Seg& s, const IT* idx, int64_t p0, int64_t p1, int64_t c0, int r, float* o,
               int64_t* am, bool prefetch) {
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

template <class WT, class IT, int MODE, bool PSW>
void forward_t(const EmbFwdArgs& a) {
  using ST = typename Storage<WT>::type;
  const BagsLayout& L = a.L;
  const IT* idx = static_cast<const IT*>(L.indices);
  const IT* off = static_cast<const IT*>(L.offsets);
  const int64_t D = L.D, B = L.B;
  const int pf = kPrefetchDistance;
  // Column block: fp32 sum/mean rows of up to 128 floats pool in one pass (16 ymm
  // accumulators, loads folded into the adds): one pass per bag instead of two
  // measured 1.06-1.14x on emb_A, one-hot and multi-hot tables.
  constexpr int64_t kBlock = sizeof(ST) == 4 && MODE != kEmbMax ? 128 : 64;
  const bool stream = stream_output(a);
  for_bag_chunks<IT>(L, [&](int64_t t, int64_t g0, int64_t g1) {
    Seg s;
    s.ws = a.w_stride;
    s.toff = L.table_offsets[t];
    s.tbl = static_cast<const ST*>(a.weight) + s.toff * a.w_stride;
    s.row_bytes = D * static_cast<int64_t>(sizeof(ST));
    s.psw = a.psw;
    s.pend = off[g1];
    s.pf = pf;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t b = g - t * B;
      float* o = a.out + b * a.out_stride + t * D;
      if (!stream && g + kOutPrefetchBags < g1) {
        const char* q = reinterpret_cast<const char*>(o + kOutPrefetchBags * a.out_stride);
        for (int64_t x = 0; x < D * 4; x += 64) _mm_prefetch(q + x, _MM_HINT_T0);
      }
      int64_t* am = a.argmax ? a.argmax + b * a.am_stride + t * D : nullptr;
      const int64_t p0 = off[g], p1 = off[g + 1];
      if (write_if_empty(p0, p1, o, am, D)) continue;
      // The first column block prefetches whole rows; later blocks find them cached.
      for (int64_t c0 = 0; c0 < D; c0 += kBlock) {
        const int64_t w = D - c0 < kBlock ? D - c0 : kBlock;
        const int r = static_cast<int>(w & 7);
        const bool pfb = c0 == 0 && pf > 0;
        switch (w >> 3) {
#define PDB_EMB_CASE(nv)                                                        \
  case nv:                                                                      \
    if (stream) bag_block<WT, IT, nv, MODE, PSW, true>(s, idx, p0, p1, c0, r, o, am, pfb); \
    else bag_block<WT, IT, nv, MODE, PSW, false>(s, idx, p0, p1, c0, r, o, am, pfb);       \
    break;
          PDB_EMB_CASE(0)
          PDB_EMB_CASE(1)
          PDB_EMB_CASE(2)
          PDB_EMB_CASE(3)
          PDB_EMB_CASE(4)
          PDB_EMB_CASE(5)
          PDB_EMB_CASE(6)
          PDB_EMB_CASE(7)
          PDB_EMB_CASE(8)
          default:
            if constexpr (kBlock > 64) {
              switch (w >> 3) {
                PDB_EMB_CASE(9)
                PDB_EMB_CASE(10)
                PDB_EMB_CASE(11)
                PDB_EMB_CASE(12)
                PDB_EMB_CASE(13)
                PDB_EMB_CASE(14)
                PDB_EMB_CASE(15)
                PDB_EMB_CASE(16)
              }
            }
#undef PDB_EMB_CASE
        }
      }
    }
    if (stream) _mm_sfence();  // order the streaming stores before the join
  });
}

template <class WT, class IT>
void forward_mode(const EmbFwdArgs& a) {
  switch (a.mode) {
    case kEmbSum:
      if (a.psw) return forward_t<WT, IT, kEmbSum, true>(a);
      return forward_t<WT, IT, kEmbSum, false>(a);
    case kEmbMean: return forward_t<WT, IT, kEmbMean, false>(a);
    default: return forward_t<WT, IT, kEmbMax, false>(a);
  }
}

template <class IT>
void forward_idx(const EmbFwdArgs& a) {
  switch (a.wdtype) {
    case DType::bf16: return forward_mode<Bf16, IT>(a);
    case DType::f16: return forward_mode<F16, IT>(a);
    default: return forward_mode<float, IT>(a);
  }
}

}  // namespace
}  // namespace avx2

namespace detail {

void forward_avx2(const EmbFwdArgs& a) {
  if (a.L.idx64) avx2::forward_idx<int64_t>(a);
  else avx2::forward_idx<int32_t>(a);
}

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

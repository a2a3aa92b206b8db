// The embedding-bag forward shared by the AVX2 and AVX-512 translation units: work
// split over bags, software prefetch of upcoming rows, output prefetch or streaming
// stores, column blocks, and the pooling of one bag's column block in registers. Each
// ISA supplies only its vector operations, as a traits struct V:
//   F, I, Mask          float and int32 vectors, the tail's mask
//   kLanes              floats per vector
//   tail(r)             the mask of the first r < kLanes lanes
//   zero(), izero(), set1(f), iset1(i), add, fmadd, mul
//   load<WT>(p), load_tail<WT>(p, r, m)   rows to fp32; masked-off lanes 0, never read
//   take_if_greater(acc, pos, x, k)       lanes where x > acc take x and k
//   store<NT>(o, x), store_tail(o, m, x), istore(int32_t[kLanes], I)
// Like embedding_bag_impl.h (included first), this is compiled once per TU with that
// TU's flags, inside its PDB_EMB_NS namespace.
#ifndef PDB_EMB_NS
#error "include embedding_bag_impl.h (which needs PDB_EMB_NS) before embedding_bag_simd.h"
#endif
#include <immintrin.h>

#include <cstdint>

#include "common/cpu_features.h"

namespace pdb::cpu {
namespace PDB_EMB_NS {
namespace {

// Lookups to prefetch ahead, into L2. A T0 (L1) prefetch holds one of the core's ~16
// L1 fill buffers until its line arrives, which capped the rows in flight at about two
// whatever the distance; L2 tracks more misses at once. emb_A (4M rows x 512 B, batch
// 65536, L = 30), Granite Rapids-class VM, one build each in a C++ driver, two runs:
// T0 at 8 rows 54-55% of STREAM; T1 at 24 rows 69-75%, 32 rows 73-80%, 48 rows 77-79%.
// Zen 4 (AVX-512 kernel, builds alternating in one process, median of 60 calls, fp32,
// one run): 32 against none 1.21x (emb_A), 1.39x (dlrm-dcnv2), 1.58x (dlrm-mlperf
// one-hot); 16 and 64 within 1.6% of 32 on all three. Xeon (cpuid model 207, AVX-512),
// distances alternating in one process, median of 8 rounds of 16 calls, fp32, two runs,
// 64 against 32: emb_A 1.005-1.15x (batch 512 to 65536), dlrm-mlperf 1.003-1.08x,
// dlrm-dcnv2 0.994-1.04x; 96 read 0.99-1.18x there, but was not measured on Zen 4.
constexpr int kPrefetchDistance = 64;  // and kGatherAhead, the gather roof's (cpu/roofline.h)
// Bags ahead whose output lines are prefetched into L1. Each bag's output is D floats
// one row of (B, T*D) apart from the previous one, a stride the hardware prefetchers do
// not follow, so every store missed. dlrm-mlperf one-hot (26 tables capped at 1M rows,
// batch 2048), median of 50 calls, two runs: 2.60/2.51 ms without, 1.90/2.09 ms at 4
// bags, 2.02/2.03 at 8, 2.12/2.07 at 16; an L2 (T1) prefetch at 8: 2.66/2.49.
constexpr int kOutPrefetchBags = 8;

struct Bf16 {};
struct F16 {};
// 8-bit rowwise-quantized rows in FBGEMM's fused layout: D uint8 codes, then the row's
// fp32 scale and bias (value = scale * code + bias).
struct Q8 {};
template <class WT> struct Storage { using type = float; };
template <> struct Storage<Bf16> { using type = uint16_t; };
template <> struct Storage<F16> { using type = uint16_t; };
template <> struct Storage<Q8> { using type = uint8_t; };

// A Q8 row's scale and bias (unaligned: a row is D + 8 bytes).
inline void q8_params(const uint8_t* row, int64_t D, float& scale, float& bias) {
  __builtin_memcpy(&scale, row + D, 4);
  __builtin_memcpy(&bias, row + D + 4, 4);
}

inline void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(c + o, _MM_HINT_T1);
  _mm_prefetch(c + bytes - 1, _MM_HINT_T1);  // the row's last line when it is unaligned
}

// Streaming output stores when the output is too big to stay in the threads' L2 for the
// next layer anyway, and every bag's D floats fill whole 64-byte lines. A plain store
// first reads its line for ownership: dlrm-mlperf one-hot (26 tables, batch 2048, 27 MB
// of output), C++ loop, median of 60 calls, plain vs streaming: 2.3-2.4 vs 1.6-1.8 ms
// with the caches warm, 3.5-3.8 vs 2.3-2.5 ms after 256 MB of other traffic; batch 512
// (7 MB) 0.82 vs 0.64 ms after 64 MB. (The output prefetch below is then skipped: it
// would read the lines the stores bypass.) DLRM dlrm-mlperf end to end, whose
// interaction reads this output next: train 16.8k vs 16.0k ex/s, infer 59.7k vs 60.6k
// (one run each, the noise). Zen 4, AVX-512 kernel, the same in-process A/B as for the
// prefetch distance (one run): streaming against plain stores 1.49x on dlrm-mlperf
// one-hot, 1.13x on dlrm-dcnv2, 1.01x on emb_A (its 32 MB of output is 1/30 of the rows
// read). The kernels' streaming stores need 64-byte aligned blocks: every block starts a
// multiple of 16 floats into an aligned bag.
bool stream_output(const EmbFwdArgs& a) {
  const int64_t bytes = a.L.B * a.out_stride * static_cast<int64_t>(sizeof(float));
  return a.L.D % 16 == 0 && a.out_stride % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.out) % 64 == 0 &&
         bytes > omp_get_max_threads() * cpu_features().l2_clamped;
}

struct Seg {
  const void* tbl;  // first row of the table, at column c0
  int64_t ws, row_bytes, toff;
  int64_t D;  // Q8: the byte offset of a row's scale from its first code
  const float* psw;
  int64_t pend;  // end of this run's positions (prefetch bound)
  int pf;
};

// Vectors per column block: 16 accumulators for fp32 sum/mean (AVX2 128 floats, AVX-512
// 256, in 16 of its 32 registers); 8 for bf16/fp16 rows and for max (whose winning
// positions take as many registers again).
template <class ST, int MODE>
constexpr int max_nv() {
  return sizeof(ST) == 4 && MODE != kEmbMax ? 16 : 8;
}

// The pooled block to o. NT: streaming stores (o is aligned to the vector: see
// stream_output). A compile-time choice: with a runtime one GCC kept the accumulators
// on the stack, and streaming stores fed from stack reloads took 6.2 ms where plain
// stores took 3.6 and register-fed streaming stores 2.4 (AVX2, dlrm-mlperf one-hot
// after 256 MB of other traffic, C++ loop).
template <class V, int NV, bool NT>
inline void store_block(float* o, const typename V::F (&acc)[NV + 1], int r, typename V::Mask m) {
#pragma GCC unroll 17
  for (int v = 0; v < NV; ++v) V::template store<NT>(o + V::kLanes * v, acc[v]);
  if (r) V::store_tail(o + V::kLanes * NV, m, acc[NV]);
}

// One bag, one column block of NV full vectors plus an r-element tail. The loops over
// the NV accumulators are unrolled by pragma: left to GCC's heuristics, some callers got
// the accumulators kept in memory, and streaming stores fed from stack reloads are slow
// (store_block; AVX2, with the pragmas 10 of the 1496 streaming stores read the stack,
// all in max or mean modes, against 40 before and 589 in a variant with one more caller).
template <class V, class WT, class IT, int NV, int MODE, bool PSW, bool NT>
void pool_block(const Seg& s, const IT* idx, int64_t p0, int64_t p1, int64_t c0, int r, float* o,
                int64_t* am, bool prefetch) {
  using ST = typename Storage<WT>::type;
  using F = typename V::F;
  constexpr int L = V::kLanes;
  constexpr bool kQ8 = __is_same(WT, Q8);
  const ST* tbl = static_cast<const ST*>(s.tbl) + c0;
  // Q8 rows dequantize as scale * code + bias, one FMA per vector, before they are
  // pooled: folding the scale into the row's weight and adding the bag's summed biases
  // once saved that add, but the two sums cancel (codes are unsigned, biases the row
  // minima) and lost digits: dlrm-dcnv2's longest bags missed 1e-4 against the float64
  // pooling of the same rows, which FBGEMM's op meets.
  float scale = 1.0f, bias = 0.0f;
  auto params = [&](int64_t p) __attribute__((always_inline)) {
    if constexpr (kQ8)
      q8_params(static_cast<const ST*>(s.tbl) + static_cast<int64_t>(idx[p]) * s.ws, s.D, scale, bias);
  };
  // A loaded vector's values: Q8 codes dequantized (with the last params()), others as is.
  auto value = [&](F x) __attribute__((always_inline)) {
    if constexpr (kQ8) return V::fmadd(x, V::set1(scale), V::set1(bias));
    else return x;
  };
  // A full-width block has no tail: telling the compiler keeps the dead tail
  // accumulator from spilling the others.
  if constexpr (NV == max_nv<ST, MODE>()) r = 0;
  const typename V::Mask m = V::tail(r);
  F acc[NV + 1];
  if constexpr (MODE == kEmbMax) {
    typename V::I pos[NV + 1];
    const ST* row = tbl + static_cast<int64_t>(idx[p0]) * s.ws;
    params(p0);
#pragma GCC unroll 17
    for (int v = 0; v < NV; ++v) {
      acc[v] = value(V::template load<WT>(row + L * v));
      pos[v] = V::izero();
    }
    // The tail slot is set even without a tail: GCC cannot tell it is then never read.
    acc[NV] = r ? value(V::template load_tail<WT>(row + L * NV, r, m)) : V::zero();
    pos[NV] = V::izero();
    for (int64_t p = p0 + 1; p < p1; ++p) {
      if (prefetch && p + s.pf < s.pend)
        prefetch_row(static_cast<const ST*>(s.tbl) + static_cast<int64_t>(idx[p + s.pf]) * s.ws,
                     s.row_bytes);
      row = tbl + static_cast<int64_t>(idx[p]) * s.ws;
      params(p);
      const typename V::I k = V::iset1(static_cast<int>(p - p0));
      // strictly greater: the first max wins ties, like torch
#pragma GCC unroll 17
      for (int v = 0; v < NV; ++v)
        V::take_if_greater(acc[v], pos[v], value(V::template load<WT>(row + L * v)), k);
      if (r)
        V::take_if_greater(acc[NV], pos[NV], value(V::template load_tail<WT>(row + L * NV, r, m)), k);
    }
    store_block<V, NV, NT>(o + c0, acc, r, m);
    if (am) {
      alignas(64) int32_t pp[L];
      for (int v = 0; v < NV + (r ? 1 : 0); ++v) {
        V::istore(pp, pos[v]);
        const int w = v < NV ? L : r;
        for (int i = 0; i < w; ++i)
          am[c0 + L * v + i] = s.toff + static_cast<int64_t>(idx[p0 + pp[i]]);
      }
    }
  } else {
#pragma GCC unroll 17
    for (int v = 0; v <= NV; ++v) acc[v] = V::zero();
    for (int64_t p = p0; p < p1; ++p) {
      if (prefetch && p + s.pf < s.pend)
        prefetch_row(static_cast<const ST*>(s.tbl) + static_cast<int64_t>(idx[p + s.pf]) * s.ws,
                     s.row_bytes);
      const ST* row = tbl + static_cast<int64_t>(idx[p]) * s.ws;
      params(p);
      if constexpr (PSW) {
        const F w = V::set1(s.psw[p]);
#pragma GCC unroll 17
        for (int v = 0; v < NV; ++v)
          acc[v] = V::fmadd(value(V::template load<WT>(row + L * v)), w, acc[v]);
        if (r)
          acc[NV] = V::fmadd(value(V::template load_tail<WT>(row + L * NV, r, m)), w, acc[NV]);
      } else {
#pragma GCC unroll 17
        for (int v = 0; v < NV; ++v)
          acc[v] = V::add(acc[v], value(V::template load<WT>(row + L * v)));
        if (r) acc[NV] = V::add(acc[NV], value(V::template load_tail<WT>(row + L * NV, r, m)));
      }
    }
    if constexpr (MODE == kEmbMean) {
      const F inv = V::set1(1.0f / static_cast<float>(p1 - p0));
#pragma GCC unroll 17
      for (int v = 0; v <= NV; ++v) acc[v] = V::mul(acc[v], inv);
    }
    store_block<V, NV, NT>(o + c0, acc, r, m);
  }
}

// pool_block for the column block's vector count nv in [0, NV].
template <class V, class WT, class IT, int MODE, bool PSW, bool NT, int NV>
inline void block_for(int nv, const Seg& s, const IT* idx, int64_t p0, int64_t p1, int64_t c0,
                      int r, float* o, int64_t* am, bool prefetch) {
  if (nv == NV)
    return pool_block<V, WT, IT, NV, MODE, PSW, NT>(s, idx, p0, p1, c0, r, o, am, prefetch);
  if constexpr (NV > 0)
    block_for<V, WT, IT, MODE, PSW, NT, NV - 1>(nv, s, idx, p0, p1, c0, r, o, am, prefetch);
}

template <class V, class WT, class IT, int MODE, bool PSW>
void forward_t(const EmbFwdArgs& a) {
  using ST = typename Storage<WT>::type;
  const BagsLayout& L = a.L;
  const IT* idx = static_cast<const IT*>(L.indices);
  const IT* off = static_cast<const IT*>(L.offsets);
  const int64_t D = L.D, B = L.B;
  const int pf = kPrefetchDistance;
  // Column block: as wide as the kernel's accumulators allow (AVX2 fp32 sum/mean: 128
  // floats in 16 ymm, loads folded into the adds; one pass per bag instead of two
  // measured 1.06-1.14x on emb_A, one-hot and multi-hot tables).
  constexpr int kMaxNV = max_nv<ST, MODE>();
  constexpr int64_t kBlock = int64_t{V::kLanes} * kMaxNV;
  const bool stream = stream_output(a);
  for_bag_chunks<IT>(L, [&](int64_t t, int64_t g0, int64_t g1) {
    Seg s;
    s.ws = a.w_stride;
    s.toff = L.table_offsets[t];
    s.tbl = static_cast<const ST*>(a.weight) + s.toff * a.w_stride;
    s.row_bytes = D * static_cast<int64_t>(sizeof(ST)) + (__is_same(WT, Q8) ? 8 : 0);
    s.D = D;
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
        const int64_t w = imin(D - c0, kBlock);
        const int nv = static_cast<int>(w / V::kLanes), r = static_cast<int>(w % V::kLanes);
        const bool pfb = c0 == 0 && pf > 0;
        if (stream)
          block_for<V, WT, IT, MODE, PSW, true, kMaxNV>(nv, s, idx, p0, p1, c0, r, o, am, pfb);
        else
          block_for<V, WT, IT, MODE, PSW, false, kMaxNV>(nv, s, idx, p0, p1, c0, r, o, am, pfb);
      }
    }
    if (stream) _mm_sfence();  // order the streaming stores before the join
  });
}

template <class V, class WT, class IT>
void forward_mode(const EmbFwdArgs& a) {
  switch (a.mode) {
    case kEmbSum:
      if (a.psw) return forward_t<V, WT, IT, kEmbSum, true>(a);
      return forward_t<V, WT, IT, kEmbSum, false>(a);
    case kEmbMean: return forward_t<V, WT, IT, kEmbMean, false>(a);
    default: return forward_t<V, WT, IT, kEmbMax, false>(a);
  }
}

template <class V, class IT>
void forward_idx(const EmbFwdArgs& a) {
  switch (a.wdtype) {
    case DType::bf16: return forward_mode<V, Bf16, IT>(a);
    case DType::f16: return forward_mode<V, F16, IT>(a);
    case DType::u8: return forward_mode<V, Q8, IT>(a);
    default: return forward_mode<V, float, IT>(a);
  }
}

template <class V>
void forward_simd(const EmbFwdArgs& a) {
  if (a.L.idx64) forward_idx<V, int64_t>(a);
  else forward_idx<V, int32_t>(a);
}

}  // namespace
}  // namespace PDB_EMB_NS
}  // namespace pdb::cpu

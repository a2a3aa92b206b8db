// AVX2+FMA GEMM kernels: a 6x16 fp32 register tile (12 ymm accumulators, 2 B loads,
// 1 A broadcast), SIMD packing (8x8 transposes for operands contiguous along K), and
// the small-M / small-N paths that stream the large operand without packing it.
// bf16 operands are widened to fp32 while packing (or while streaming), so one fp32
// microkernel serves both dtypes; the epilogue rounds to bf16 (RNE) in registers.
#define PDB_GEMM_INTERNAL
#include <immintrin.h>

#include <type_traits>

#include "common/cpu_features.h"
#include "cpu/gemm.h"
#include "cpu/gemm_simd256.h"

namespace pdb::cpu::detail {
namespace {

constexpr int kMR = 6, kNR = 16;

// 8 fp32 -> 8 bf16 (round to nearest even, NaN kept quiet), same as f32_to_bf16.
inline __m128i f32x8_to_bf16(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i q = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
  const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  r = _mm256_blendv_epi8(r, q, _mm256_castps_si256(nan));
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

// ---- register tile: acc[R][NV] (R rows x NV*8 columns) -----------------------------

// acc = sum_k a[k*lda_k + i] * b[k*ldb + 0 .. 8*NV)
template <int R, int NV, typename BIn>
inline void tile_kloop(int64_t kc, const float* a, int64_t lda_k, const typename BIn::T* b,
                       int64_t ldb, __m256 (&acc)[R][NV]) {
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    __m256 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = BIn::load8(b + 8 * v);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
    }
    a += lda_k;
    b += ldb;
  }
}

// A full tile's epilogue. Acc/Final are template arguments and the fields are read into
// locals before the first store, so the unrolled stores (which may alias anything, e
// included) neither re-test nor reload them.
template <int R, int NV, bool Acc, bool Final>
inline void tile_store_full(__m256 (&acc)[R][NV], const TileEpi& e) {
  float* const w = e.w;
  void* const c = e.c;
  const int64_t ldw = e.ldw, ldc = e.ldc;
  const float* const bias_p = e.bias;
  const bool relu = e.relu, c_bf16 = e.c_bf16;
  const __m256 zero = _mm256_setzero_ps();
  __m256 bias[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v)
    bias[v] = (Final && bias_p) ? _mm256_loadu_ps(bias_p + 8 * v) : zero;
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m256 x = acc[i][v];
      if (Acc) x = _mm256_add_ps(x, _mm256_loadu_ps(w + i * ldw + 8 * v));
      if (!Final) {
        _mm256_storeu_ps(w + i * ldw + 8 * v, x);
        continue;
      }
      x = _mm256_add_ps(x, bias[v]);
      if (relu) x = _mm256_max_ps(zero, x);  // max(0, NaN) = NaN
      if (c_bf16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(c) + i * ldc + 8 * v),
                         f32x8_to_bf16(x));
      else
        _mm256_storeu_ps(static_cast<float*>(c) + i * ldc + 8 * v, x);
    }
  }
}

template <int R, int NV>
inline void tile_store(__m256 (&acc)[R][NV], const TileEpi& e) {
  if (e.m == R && e.n == 8 * NV) {
    with_epi_flags(e, [&](auto acc_flag, auto final_flag) {
      tile_store_full<R, NV, decltype(acc_flag)::value, decltype(final_flag)::value>(acc, e);
    });
    return;
  }
  alignas(32) float tmp[R][8 * NV];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm256_store_ps(&tmp[i][8 * v], acc[i][v]);
  tile_epilogue_ref(&tmp[0][0], 8 * NV, e);
}

// C is not prefetched here: the driver does it for short tiles, and a prefetch at the
// start of the tile cost 8% on 2048x512x13 beside it (PYDEEPBENCH_ISA=avx2, Granite
// Rapids-class VM: 131 vs 143 GFLOP/s) with no gain on long ones.
void micro_6x16(int64_t kpad, const void* a, const void* b, const TileEpi& e) {
  __m256 acc[kMR][2];
  tile_kloop<kMR, 2, F32In>(kpad, static_cast<const float*>(a), kMR,
                            static_cast<const float*>(b), kNR, acc);
  tile_store<kMR, 2>(acc, e);
}

// ---- packing ---------------------------------------------------------------------

// One full 6-row A panel whose rows are contiguous along K: 8x8 transposes. Each
// store writes 8 floats at a 6-float pitch; the 2 extra lanes are rewritten by the
// next store (and the last one lands in the buffer's slack).
template <typename In>
void pack_a_rows6(const typename In::T* A, int64_t sam, int64_t k, float* p) {
  const typename In::T* r[6];
  for (int i = 0; i < 6; ++i) r[i] = A + i * sam;
  int64_t kk = 0;
  for (; kk + 8 <= k; kk += 8) {
    __m256 v[8];
    for (int i = 0; i < 6; ++i) v[i] = In::load8(r[i] + kk);
    v[6] = v[7] = _mm256_setzero_ps();
    transpose8(v);
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(p + (kk + j) * 6, v[j]);
  }
  for (; kk < k; ++kk)
    for (int i = 0; i < 6; ++i) p[kk * 6 + i] = to_f32(r[i][kk]);
}

template <typename In>
void pack_a_t(const In* A, int64_t sam, int64_t sak, int64_t m, int64_t k, float* d) {
  for (int64_t i0 = 0; i0 < m; i0 += kMR) {
    float* p = d + (i0 / kMR) * k * kMR;
    const int64_t mm = imin(kMR, m - i0);
    if (mm == kMR && sak == 1) {
      if constexpr (sizeof(In) == 2) pack_a_rows6<Bf16In>(A + i0 * sam, sam, k, p);
      else pack_a_rows6<F32In>(A + i0 * sam, sam, k, p);
    } else {
      pack_panel_ref<In, float, 1>(A + i0 * sam, sam, sak, mm, k, kMR, p);
    }
  }
}

void pack_a_avx2(const void* A, int64_t sam, int64_t sak, bool bf16, int64_t m, int64_t k,
                 void* dst) {
  if (bf16) pack_a_t(static_cast<const uint16_t*>(A), sam, sak, m, k, static_cast<float*>(dst));
  else pack_a_t(static_cast<const float*>(A), sam, sak, m, k, static_cast<float*>(dst));
}

template <typename BIn>
void pack_b_t(const typename BIn::T* B, int64_t sbk, int64_t sbn, int64_t k, int64_t n,
              float* d) {
  using In = typename BIn::T;
  if (sbn == 1) {
    // Row-major B: walk each row of B contiguously (prefetch/TLB friendly), scattering
    // 16-float pieces to the panels; the partial last panel goes through the scalar packer.
    const int64_t nfull = n / kNR;
    for (int64_t kk = 0; kk < k; ++kk) {
      const In* src = B + kk * sbk;
      float* p = d + kk * kNR;
      for (int64_t jp = 0; jp < nfull; ++jp, src += kNR, p += k * kNR) {
        _mm256_store_ps(p, BIn::load8(src));
        _mm256_store_ps(p + 8, BIn::load8(src + 8));
      }
    }
    if (nfull * kNR < n)
      pack_panel_ref<In, float, 1>(B + nfull * kNR, 1, sbk, n - nfull * kNR, k, kNR,
                                   d + nfull * k * kNR);
    return;
  }
  for (int64_t j0 = 0; j0 < n; j0 += kNR) {
    float* p = d + (j0 / kNR) * k * kNR;
    const int64_t nn = imin(kNR, n - j0);
    const In* src = B + j0 * sbn;
    if (nn == kNR && sbk == 1) {
      for (int h = 0; h < 2; ++h) {
        const In* r[8];
        for (int j = 0; j < 8; ++j) r[j] = src + (8 * h + j) * sbn;
        int64_t kk = 0;
        for (; kk + 8 <= k; kk += 8) {
          __m256 v[8];
          for (int j = 0; j < 8; ++j) v[j] = BIn::load8(r[j] + kk);
          transpose8(v);
          for (int t = 0; t < 8; ++t) _mm256_store_ps(p + (kk + t) * kNR + 8 * h, v[t]);
        }
        for (; kk < k; ++kk)
          for (int j = 0; j < 8; ++j) p[kk * kNR + 8 * h + j] = to_f32(r[j][kk]);
      }
    } else {
      pack_panel_ref<In, float, 1>(src, sbn, sbk, nn, k, kNR, p);
    }
  }
}

void pack_b_avx2(const void* B, int64_t sbk, int64_t sbn, bool bf16, int64_t k, int64_t n,
                 void* dst) {
  if (bf16) pack_b_t<Bf16In>(static_cast<const uint16_t*>(B), sbk, sbn, k, n, static_cast<float*>(dst));
  else pack_b_t<F32In>(static_cast<const float*>(B), sbk, sbn, k, n, static_cast<float*>(dst));
}

const PackedKernel kAvx2Kernel = {kMR, kNR, 1, 4, 50, 512, 50, pack_a_avx2, pack_b_avx2,
                                  micro_6x16, "avx2:packed6x16", nullptr, nullptr, nullptr};

// ---- tiny M (<= 4), B contiguous along N: row streaming ---------------------------
// C rows are accumulated in memory (an L1-sized column block at a time) while KU rows
// of B are streamed contiguously, so every page of B is read once and sequentially
// (a 16-column register strip would touch one cache line per page per row).

// One pass adds KU rows of B: acc = (in, or zero when in is null) + the KU terms
// (+ add, when not null), then written to out, or, when out is null, finished: + bias,
// ReLU, stored to C (as fp32 or bf16).
template <int R, int KU, typename BIn>
void rowstream_pass(const typename BIn::T* a, int64_t sam, int64_t sak,
                    const typename BIn::T* b, int64_t sbk,
                    int64_t ncols, const float* in, int64_t ld_in, const float* add,
                    int64_t ld_add, float* out, int64_t ld_out, const TileEpi& e) {
  __m256 av[R][KU];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int u = 0; u < KU; ++u) av[r][u] = _mm256_set1_ps(to_f32(a[r * sam + u * sak]));
  const __m256 zero = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= ncols; j += 8) {
    __m256 acc[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r] = in ? _mm256_loadu_ps(in + r * ld_in + j) : zero;
#pragma GCC unroll 8
    for (int u = 0; u < KU; ++u) {
      const __m256 bv = BIn::load8(b + u * sbk + j);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(av[r][u], bv, acc[r]);
    }
    if (add) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
        acc[r] = _mm256_add_ps(acc[r], _mm256_loadu_ps(add + r * ld_add + j));
    }
    if (out) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + r * ld_out + j, acc[r]);
      continue;
    }
    const __m256 bias = e.bias ? _mm256_loadu_ps(e.bias + j) : zero;
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __m256 x = _mm256_add_ps(acc[r], bias);
      if (e.relu) x = _mm256_max_ps(zero, x);
      if (e.c_bf16)
        _mm_storeu_si128(
            reinterpret_cast<__m128i*>(static_cast<uint16_t*>(e.c) + r * e.ldc + j),
            f32x8_to_bf16(x));
      else
        _mm256_storeu_ps(static_cast<float*>(e.c) + r * e.ldc + j, x);
    }
  }
  // Column tail (< 8): scalar, same order of operations.
  for (; j < ncols; ++j) {
    for (int r = 0; r < R; ++r) {
      float x = in ? in[r * ld_in + j] : 0.f;
      for (int u = 0; u < KU; ++u) x += to_f32(a[r * sam + u * sak]) * to_f32(b[u * sbk + j]);
      if (add) x += add[r * ld_add + j];
      if (out) {
        out[r * ld_out + j] = x;
        continue;
      }
      if (e.bias) x += e.bias[j];
      if (e.relu && x < 0.f) x = 0.f;
      if (e.c_bf16) static_cast<uint16_t*>(e.c)[r * e.ldc + j] = f32_to_bf16(x);
      else static_cast<float*>(e.c)[r * e.ldc + j] = x;
    }
  }
}

// K in blocks of kSumBlock (gemm.h): the first block's terms are summed in w, each later
// block's in the zeroed partial p, which its last pass adds to w.

template <int R, typename BIn>
void rowstream_block(const typename BIn::T* a, int64_t sam, int64_t sak, int64_t K,
                     const typename BIn::T* b, int64_t sbk, int64_t ncols, float* w,
                     int64_t ldw, float* p, int64_t ldp, const TileEpi& e) {
  constexpr int KU = R == 1 ? 8 : (R == 2 ? 4 : 2);
  static_assert(kSumBlock % KU == 0, "passes must not straddle blocks");
  for (int64_t k0 = 0; k0 < K; k0 += kSumBlock) {
    const int64_t k1 = imin(K, k0 + kSumBlock);
    float* acc = k0 == 0 ? w : p;
    const int64_t ld_acc = k0 == 0 ? ldw : ldp;
    for (int64_t k = k0; k < k1;) {
      const int64_t step = k + KU <= k1 ? KU : 1;
      const bool end = k + step == k1;
      const float* in = k == k0 ? nullptr : acc;
      const float* add = end && k0 > 0 ? w : nullptr;
      float* out = end ? (k1 == K ? nullptr : w) : acc;
      const int64_t ld_out = end ? ldw : ld_acc;
      if (step == KU)
        rowstream_pass<R, KU, BIn>(a + k * sak, sam, sak, b + k * sbk, sbk, ncols, in,
                                   ld_acc, add, ldw, out, ld_out, e);
      else
        rowstream_pass<R, 1, BIn>(a + k * sak, sam, sak, b + k * sbk, sbk, ncols, in,
                                  ld_acc, add, ldw, out, ld_out, e);
      k += step;
    }
  }
}

// C[0:R, strip] for a strip of 8V columns (V vectors), or of `width` < 8 columns with
// V = 0 (scalar): the R x 8V sums stay in registers over each K block of B's rows (K in
// blocks of kSumBlock, added to the strip's totals between blocks), B read in place.
template <int R, int V, typename BIn>
void rowb_strip(const typename BIn::T* a, int64_t sam, int64_t sak, int64_t K,
                const typename BIn::T* b, int64_t sbk, int width, const TileEpi& e) {
  constexpr int W = V > 0 ? 8 * V : 8;
  alignas(32) float tot[R][W] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kSumBlock) {
    const int64_t k1 = imin(K, k0 + kSumBlock);
    if constexpr (V == 0) {
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < width; ++j) {
          float s = 0.f;
          for (int64_t k = k0; k < k1; ++k) s += to_f32(a[r * sam + k * sak]) * to_f32(b[k * sbk + j]);
          tot[r][j] += s;
        }
    } else {
      __m256 acc[R][V];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
      for (int64_t k = k0; k < k1; ++k) {
        __m256 bv[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) bv[v] = BIn::load8(b + k * sbk + 8 * v);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m256 av = _mm256_set1_ps(to_f32(a[r * sam + k * sak]));
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v)
          _mm256_store_ps(&tot[r][8 * v], _mm256_add_ps(_mm256_load_ps(&tot[r][8 * v]), acc[r][v]));
    }
  }
  TileEpi t = e;
  t.m = R;
  t.n = width;
  tile_epilogue_ref(&tot[0][0], W, t);
}

// Columns [n0, n1) of C for M = R rows in register strips (rowb_strip): 8V columns, then
// 8, then the last few scalar.
template <int R, typename BIn>
void rowb_strips(const GemmArgs& g, int64_t n0, int64_t n1, size_t cb) {
  constexpr int V = R == 2 ? 4 : 2;  // 8 ymm sums (+ V loads, a broadcast)
  const auto* A = static_cast<const typename BIn::T*>(g.A);
  const auto* B = static_cast<const typename BIn::T*>(g.B);
  TileEpi e{};
  e.final = true;
  e.relu = g.relu;
  e.c_bf16 = cb == 2;
  e.ldc = g.ldc;
  auto strip = [&](int64_t j, int width, auto vs) {
    e.c = static_cast<char*>(g.C) + j * cb;
    e.bias = g.bias ? g.bias + j : nullptr;
    rowb_strip<R, decltype(vs)::value, BIn>(A, g.sam, g.sak, g.K, B + j * g.sbn, g.sbk, width, e);
  };
  int64_t j = n0;
  for (; j + 8 * V <= n1; j += 8 * V) strip(j, 8 * V, std::integral_constant<int, V>{});
  for (; j + 8 <= n1; j += 8) strip(j, 8, std::integral_constant<int, 1>{});
  if (j < n1) strip(j, static_cast<int>(n1 - j), std::integral_constant<int, 0>{});
}

template <typename In>
bool small_m_rowb_t(const GemmArgs& g, int64_t n0, int64_t n1, bool bf16) {
  using BIn = std::conditional_t<sizeof(In) == 2, Bf16In, F32In>;
  // 2-4 rows and a thread's slice of B within its L2: C's strips in registers, B read
  // once in place. Row streaming (below) keeps C's rows in L1 and reloads them for every
  // few rows of B. Ice Lake, one loop against torch.matmul, two runs: 4x512x512 0.32-0.34x
  // -> 0.79-0.85x, 2x512x512 0.47-0.50x -> 1.02-1.29x, 4x1024x512 0.42-0.49x -> 0.71-0.82x;
  // but 1x512x512 1.06-1.14x -> 0.75-0.83x (one row: 8 rows of B per pass over C), and for
  // a larger B the rows are read in order.
  if (g.M >= 2 && g.K * (n1 - n0) * static_cast<int64_t>(sizeof(In)) <= cpu_features().l2_clamped) {
    const size_t cb = bf16 ? 2 : 4;
    switch (g.M) {
      case 2: rowb_strips<2, BIn>(g, n0, n1, cb); break;
      case 3: rowb_strips<3, BIn>(g, n0, n1, cb); break;
      default: rowb_strips<4, BIn>(g, n0, n1, cb); break;
    }
    return true;
  }
  constexpr int64_t kNB = 8192;  // columns per block: 32 KB of each B row
  const int64_t M = g.M, K = g.K;
  const In* A = static_cast<const In*>(g.A);
  const In* B = static_cast<const In*>(g.B);
  // A is read in place: each pass broadcasts R x KU of its elements, at any strides. (A
  // fp32 copy of A, allocated and touched on every call once large scratch was freed,
  // took bf16 4 x 16 x 2^22 on one thread to 57-75 ms; in place 27-29 ms, against 34-48
  // for the copy kept across calls.) fp32 sums: C itself for f32, else scratch [M][kNB];
  // the later K blocks' partial sums [M][kNB] (see rowstream_block).
  float* scratch = bf16 ? static_cast<float*>(tls_buffer(kBufSmallB, f32_bytes(M, kNB)))
                        : nullptr;
  float* partial =
      K > kSumBlock ? static_cast<float*>(tls_buffer(kBufSum, f32_bytes(M, kNB))) : nullptr;
  if ((bf16 && !scratch) || (K > kSumBlock && !partial)) return false;
  const size_t cb = bf16 ? 2 : 4;
  for (int64_t j = n0; j < n1; j += kNB) {
    const int64_t nc = imin(kNB, n1 - j);
    TileEpi e{};
    e.c = static_cast<char*>(g.C) + j * cb;
    e.ldc = g.ldc;
    e.bias = g.bias ? g.bias + j : nullptr;
    e.relu = g.relu;
    e.c_bf16 = bf16;
    float* w = bf16 ? scratch : static_cast<float*>(g.C) + j;
    const int64_t ldw = bf16 ? kNB : g.ldc;
    const In* bj = B + j;
    auto rows = [&](auto r) {
      rowstream_block<decltype(r)::value, BIn>(A, g.sam, g.sak, K, bj, g.sbk, nc, w, ldw,
                                               partial, kNB, e);
    };
    switch (M) {
      case 1: rows(std::integral_constant<int, 1>{}); break;
      case 2: rows(std::integral_constant<int, 2>{}); break;
      case 3: rows(std::integral_constant<int, 3>{}); break;
      default: rows(std::integral_constant<int, 4>{}); break;
    }
  }
  return true;
}

// ---- dot-product form (both operands contiguous along K) -------------------------

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// out[i][j] = sum_k x[i*ldx + k] * y[j*ldy + k], K in blocks of kSumBlock (gemm.h): one
// running sum per lane over all of K read 1.6e-4 at N = 2, K = 2^25 (torch 7.6e-6; the
// fp32 gate is 1e-4).
template <int MX, int NY, typename XIn, typename YIn>
void dot_tile(int64_t K, const typename XIn::T* x, int64_t ldx, const typename YIn::T* y,
              int64_t ldy, float* out) {
  float tot[MX][NY] = {};
  const int64_t k8 = K / 8 * 8;
  for (int64_t k0 = 0; k0 < k8; k0 += kSumBlock) {
    const int64_t k1 = imin(k8, k0 + kSumBlock);
    __m256 acc[MX][NY];
#pragma GCC unroll 8
    for (int i = 0; i < MX; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NY; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t k = k0; k < k1; k += 8) {
      __m256 xv[MX];
#pragma GCC unroll 8
      for (int i = 0; i < MX; ++i) xv[i] = XIn::load8(x + i * ldx + k);
#pragma GCC unroll 8
      for (int j = 0; j < NY; ++j) {
        const __m256 yv = YIn::load8(y + j * ldy + k);
#pragma GCC unroll 8
        for (int i = 0; i < MX; ++i) acc[i][j] = _mm256_fmadd_ps(xv[i], yv, acc[i][j]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MX; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NY; ++j) tot[i][j] += hsum(acc[i][j]);
  }
  for (int i = 0; i < MX; ++i)
    for (int j = 0; j < NY; ++j) {
      float s = tot[i][j];
      for (int64_t kk = k8; kk < K; ++kk) s += to_f32(x[i * ldx + kk]) * to_f32(y[j * ldy + kk]);
      out[i * NY + j] = s;
    }
}

template <typename XIn, typename YIn>
void dot_dispatch(int mx, int ny, int64_t K, const typename XIn::T* x, int64_t ldx,
                  const typename YIn::T* y, int64_t ldy, float* out) {
#define PDB_DOT(MX, NY) \
  case (MX) * 16 + (NY): dot_tile<MX, NY, XIn, YIn>(K, x, ldx, y, ldy, out); break;
  switch (mx * 16 + ny) {
    PDB_DOT(1, 1) PDB_DOT(1, 2) PDB_DOT(1, 3) PDB_DOT(1, 4)
    PDB_DOT(1, 5) PDB_DOT(1, 6) PDB_DOT(1, 7) PDB_DOT(1, 8)
    PDB_DOT(2, 1) PDB_DOT(2, 2) PDB_DOT(2, 3) PDB_DOT(2, 4)
    PDB_DOT(3, 1) PDB_DOT(3, 2) PDB_DOT(3, 3) PDB_DOT(3, 4)
    PDB_DOT(4, 1) PDB_DOT(5, 1) PDB_DOT(6, 1) PDB_DOT(7, 1) PDB_DOT(8, 1)
    default: break;
  }
#undef PDB_DOT
}

template <typename In>
bool small_dot_t(const GemmArgs& g, bool bf16, bool over_n, int64_t r0, int64_t r1) {
  const int64_t M = g.M, N = g.N, K = g.K;
  const size_t cb = bf16 ? 2 : 4;
  const In* A = static_cast<const In*>(g.A);
  const In* B = static_cast<const In*>(g.B);
  TileEpi e{};
  e.ldc = g.ldc;
  e.final = true;
  e.relu = g.relu;
  e.c_bf16 = bf16;
  alignas(32) float out[32];
  if (over_n) {
    // X = A rows as contiguous fp32 (M small), Y = rows of B^T streamed (sbk == 1).
    const float* x;
    int64_t ldx;
    if (!bf16 && g.sak == 1) {
      x = reinterpret_cast<const float*>(A);
      ldx = g.sam;
    } else {
      float* xp = static_cast<float*>(tls_buffer(kBufSmallA, f32_bytes(M, K)));
      if (!xp) return false;
      pack_panel_ref<In, float, 1>(A, g.sak, g.sam, K, M, K, xp);
      x = xp;
      ldx = K;
    }
    const int mxmax = M == 1 ? 1 : 3, nymax = M == 1 ? 8 : 4;
    for (int64_t n = r0; n < r1; n += nymax) {
      const int ny = static_cast<int>(imin(nymax, r1 - n));
      for (int64_t m = 0; m < M; m += mxmax) {
        const int mx = static_cast<int>(imin(mxmax, M - m));
        if constexpr (sizeof(In) == 2)
          dot_dispatch<F32In, Bf16In>(mx, ny, K, x + m * ldx, ldx, B + n * g.sbn, g.sbn, out);
        else
          dot_dispatch<F32In, F32In>(mx, ny, K, x + m * ldx, ldx, B + n * g.sbn, g.sbn, out);
        e.m = mx;
        e.n = ny;
        e.c = static_cast<char*>(g.C) + (m * g.ldc + n) * cb;
        e.bias = g.bias ? g.bias + n : nullptr;
        tile_epilogue_ref(out, ny, e);
      }
    }
  } else {
    // X = rows of A streamed (sak == 1), Y = B^T as contiguous fp32 (N small).
    float* yp = static_cast<float*>(tls_buffer(kBufSmallB, f32_bytes(N, K)));
    if (!yp) return false;
    // yp[n*K + k] = B[k, n]: a "panel" of width K over the n dimension.
    pack_panel_ref<In, float, 1>(B, g.sbk, g.sbn, K, N, K, yp);
    // N = 1 (a GEMV): 8 rows at a time, so 8 FMA chains cover the FMA latency (3 rows
    // were latency bound: 2048x1x256 took 45 us against MKL's 16).
    const int mxmax = N == 1 ? 8 : 3, nymax = N == 1 ? 1 : 4;
    for (int64_t m = r0; m < r1; m += mxmax) {
      const int mx = static_cast<int>(imin(mxmax, r1 - m));
      for (int64_t n = 0; n < N; n += nymax) {
        const int ny = static_cast<int>(imin(nymax, N - n));
        if constexpr (sizeof(In) == 2)
          dot_dispatch<Bf16In, F32In>(mx, ny, K, A + m * g.sam, g.sam, yp + n * K, K, out);
        else
          dot_dispatch<F32In, F32In>(mx, ny, K, A + m * g.sam, g.sam, yp + n * K, K, out);
        e.m = mx;
        e.n = ny;
        e.c = static_cast<char*>(g.C) + (m * g.ldc + n) * cb;
        e.bias = g.bias ? g.bias + n : nullptr;
        tile_epilogue_ref(out, ny, e);
      }
    }
  }
  return true;
}

}  // namespace

const PackedKernel* packed_kernel_avx2() { return &kAvx2Kernel; }

bool small_m_rowb_avx2(const GemmArgs& g, bool bf16, int64_t n0, int64_t n1) {
  return bf16 ? small_m_rowb_t<uint16_t>(g, n0, n1, true) : small_m_rowb_t<float>(g, n0, n1, false);
}

bool small_dot_avx2(const GemmArgs& g, bool bf16, bool over_n, int64_t r0, int64_t r1) {
  return bf16 ? small_dot_t<uint16_t>(g, true, over_n, r0, r1)
              : small_dot_t<float>(g, false, over_n, r0, r1);
}

}  // namespace pdb::cpu::detail

// AVX2+FMA+F16C embedding bags: the vector operations of the shared forward
// (embedding_bag_simd.h: column blocks pooled in registers, up to 128 floats in 16 ymm
// accumulators for fp32 sum/mean, else 64; rows 64 lookups ahead prefetched into L2;
// streaming output stores), with bf16 rows widened by a 16-bit shift and fp16 by
// vcvtph2ps. The dense backward and the sparse step (embedding_bag_impl.h) are compiled
// here with these flags; the dense backward runs on AVX-512 CPUs too, the sparse step
// has an AVX-512 build (embedding_bag_avx512.cpp).
#define PDB_EMB_NS avx2
#include "cpu/embedding_bag_impl.h"
#include "cpu/embedding_bag_simd.h"

#include <immintrin.h>

#include <cstdint>

namespace pdb::cpu {
namespace avx2 {
namespace {

// The AVX2 vector operations of the shared forward (embedding_bag_simd.h).
struct Vec {
  using F = __m256;
  using I = __m256i;
  using Mask = __m256i;
  static constexpr int kLanes = 8;
  static Mask tail(int r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F zero() { return _mm256_setzero_ps(); }
  static I izero() { return _mm256_setzero_si256(); }
  static F set1(float f) { return _mm256_set1_ps(f); }
  static I iset1(int i) { return _mm256_set1_epi32(i); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  template <class WT>
  static F load(const typename Storage<WT>::type* p) {
    if constexpr (__is_same(WT, Q8)) {
      return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    } else if constexpr (sizeof(typename Storage<WT>::type) == 4) {
      return _mm256_loadu_ps(p);
    } else if constexpr (__is_same(WT, Bf16)) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
  }
  // 8- and 16-bit rows have no masked load in AVX2: the r elements go through a zeroed
  // copy.
  template <class WT>
  static F load_tail(const typename Storage<WT>::type* p, int r, Mask m) {
    if constexpr (sizeof(typename Storage<WT>::type) == 4) {
      return _mm256_maskload_ps(p, m);
    } else {
      alignas(16) typename Storage<WT>::type tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int i = 0; i < r; ++i) tmp[i] = p[i];
      return load<WT>(tmp);
    }
  }
  static void take_if_greater(F& acc, I& pos, F x, I k) {
    const F gt = _mm256_cmp_ps(x, acc, _CMP_GT_OQ);
    acc = _mm256_blendv_ps(acc, x, gt);
    pos = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(pos), _mm256_castsi256_ps(k), gt));
  }
  template <bool NT>
  static void store(float* o, F x) {
    if constexpr (NT) _mm256_stream_ps(o, x);
    else _mm256_storeu_ps(o, x);
  }
  static void store_tail(float* o, Mask m, F x) { _mm256_maskstore_ps(o, m, x); }
  static void istore(int32_t* p, I x) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), x); }
};

}  // namespace
}  // namespace avx2

namespace detail {

void forward_avx2(const EmbFwdArgs& a) { avx2::forward_simd<avx2::Vec>(a); }

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

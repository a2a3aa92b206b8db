// AVX-512 embedding-bag forward (built with CMake's AVX-512 flag set, which includes
// BF16 for the GEMM's sake; no BF16 intrinsic here, and it runs on
// AVX-512 CPUs without BF16, e.g. Ice Lake): the vector operations of the shared
// forward (embedding_bag_simd.h) with 16-float vectors, twice the columns per
// accumulator of AVX2, and masked loads and stores for the tails (no bytewise tail
// copies). The fused sparse step (embedding_bag_impl.h) is compiled here too; the dense
// backward runs the AVX2 code on AVX-512 CPUs.
//
// The sparse step's portable loops under these flags against the AVX2 build, calls
// alternating in one process, median of 30 each, Zen 4: SGD 1.13-1.20x on dlrm-mlperf,
// 1.03-1.14x on dlrm-dcnv2, 1.04x / 0.97x on emb_B (batch 2048 / 8192), 0.99-1.09x on
// dlrm-kaggle (dim 16, uniform and Zipf); row-wise Adagrad 1.07-1.14x, 0.92-1.09x,
// 1.11x / 0.99x, 1.07-1.26x. The weights come out bit-identical.
//
// fp32 sum, Zen 4 (2 cores), this forward against the AVX2 one from the same tree, calls
// alternating in one process, median of 80 each, two runs: emb_A (4M rows x 128, batch
// 65536, 30 lookups) 1.16x / 1.14x, dlrm-dcnv2 multi-hot 1.08-1.12x, dlrm-mlperf one-hot
// 0.99x / 1.01x (a one-row bag has nothing to accumulate: its time is the row's miss).
// Those were two hand-written kernels; the shared pool_block that replaced them read
// 0.94-0.99x of the AVX-512 one (3 runs) and 0.98-1.03x of the AVX2 one.
#define PDB_EMB_NS avx512
#include "cpu/embedding_bag_impl.h"
#include "cpu/embedding_bag_simd.h"

#include <immintrin.h>

#include <cstdint>

namespace pdb::cpu {
namespace avx512 {
namespace {

// The AVX-512 vector operations of the shared forward (embedding_bag_simd.h).
struct Vec {
  using F = __m512;
  using I = __m512i;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static Mask tail(int r) { return static_cast<Mask>((1u << r) - 1u); }
  static F zero() { return _mm512_setzero_ps(); }
  static I izero() { return _mm512_setzero_si512(); }
  static F set1(float f) { return _mm512_set1_ps(f); }
  static I iset1(int i) { return _mm512_set1_epi32(i); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  template <class WT>
  static F widen(__m256i h) {
    if constexpr (__is_same(WT, Bf16))
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else return _mm512_cvtph_ps(h);
  }
  template <class WT>
  static F load(const typename Storage<WT>::type* p) {
    if constexpr (__is_same(WT, Q8))
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    else if constexpr (sizeof(typename Storage<WT>::type) == 4) return _mm512_loadu_ps(p);
    else return widen<WT>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  template <class WT>
  static F load_tail(const typename Storage<WT>::type* p, int, Mask m) {
    if constexpr (__is_same(WT, Q8))
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p)));
    else if constexpr (sizeof(typename Storage<WT>::type) == 4) return _mm512_maskz_loadu_ps(m, p);
    else return widen<WT>(_mm256_maskz_loadu_epi16(m, p));
  }
  static void take_if_greater(F& acc, I& pos, F x, I k) {
    const __mmask16 gt = _mm512_cmp_ps_mask(x, acc, _CMP_GT_OQ);
    acc = _mm512_mask_blend_ps(gt, acc, x);
    pos = _mm512_mask_blend_epi32(gt, pos, k);
  }
  template <bool NT>
  static void store(float* o, F x) {
    if constexpr (NT) _mm512_stream_ps(o, x);
    else _mm512_storeu_ps(o, x);
  }
  static void store_tail(float* o, Mask m, F x) { _mm512_mask_storeu_ps(o, m, x); }
  static void istore(int32_t* p, I x) { _mm512_store_si512(p, x); }
};

}  // namespace
}  // namespace avx512

namespace detail {

void forward_avx512(const EmbFwdArgs& a) { avx512::forward_simd<avx512::Vec>(a); }
void sparse_apply_avx512(const EmbSparseStepArgs& a, const uint64_t* keys, const uint32_t* bag_of,
                         float* gbuf, int64_t gbuf_stride) {
  if (a.L.idx64) avx512::sparse_apply_dispatch<int64_t>(a, keys, bag_of, gbuf, gbuf_stride);
  else avx512::sparse_apply_dispatch<int32_t>(a, keys, bag_of, gbuf, gbuf_stride);
}

}  // namespace detail
}  // namespace pdb::cpu

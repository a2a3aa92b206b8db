// Embedding bags: validation, the portable forward, ISA dispatch, and the sort
// that groups duplicate rows for the fused sparse optimizer steps.
#define PDB_EMB_NS generic
#include "cpu/embedding_bag_impl.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/cpu_features.h"

namespace pdb::cpu {
namespace {

// IEEE half -> float without F16C (subnormals, inf and NaN included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal: normalize
    exp = 113;
    while (!(man & 0x400u)) {
      man <<= 1;
      --exp;
    }
    u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class WT>
inline float to_f32(WT v);
template <>
inline float to_f32<float>(float v) { return v; }
struct Bf16 { uint16_t v; };
struct F16 { uint16_t v; };
template <>
inline float to_f32<Bf16>(Bf16 v) { return bf16_to_f32(v.v); }
template <>
inline float to_f32<F16>(F16 v) { return half_to_float(v.v); }
// 8-bit rowwise-quantized rows: D codes, then the row's fp32 scale and bias.
struct Q8 { uint8_t v; };

// Row `row`'s values as fp32 (r[d]); Q8 rows dequantize as scale * code + bias.
template <class WT>
struct RowValues {
  const WT* row;
  RowValues(const WT* r, int64_t) : row(r) {}
  float operator[](int64_t d) const { return to_f32(row[d]); }
};
template <>
struct RowValues<Q8> {
  const Q8* row;
  float scale, bias;
  RowValues(const Q8* r, int64_t D) : row(r) {
    std::memcpy(&scale, r + D, 4);
    std::memcpy(&bias, r + D + 4, 4);
  }
  float operator[](int64_t d) const { return scale * static_cast<float>(row[d].v) + bias; }
};

// ---- validation -------------------------------------------------------------

template <class IT>
void validate_impl(const BagsLayout& L) {
  const int64_t* toff = L.table_offsets;
  const IT* off = static_cast<const IT*>(L.offsets);
  const IT* idx = static_cast<const IT*>(L.indices);
  const int64_t T = L.T, TB = L.T * L.B, N = L.N;
  PDB_CHECK(toff[0] == 0, "table_offsets[0] must be 0, got ", toff[0]);
  for (int64_t t = 0; t < T; ++t)
    PDB_CHECK(toff[t + 1] >= toff[t], "table_offsets must be non-decreasing: table_offsets[", t + 1,
              "] = ", toff[t + 1], " < table_offsets[", t, "] = ", toff[t]);
  PDB_CHECK(toff[T] == L.R_total, "table_offsets[-1] = ", toff[T],
            " must equal the number of weight rows ", L.R_total);
  PDB_CHECK(off[0] == 0, "offsets[0] must be 0, got ", static_cast<int64_t>(off[0]));
  PDB_CHECK(static_cast<int64_t>(off[TB]) == N, "offsets[-1] = ", static_cast<int64_t>(off[TB]),
            " must equal the number of indices ", N);

  // First decreasing offset, in parallel.
  int64_t bad = TB;
#pragma omp parallel for reduction(min : bad) schedule(static) if (TB > 65536)
  for (int64_t g = 0; g < TB; ++g)
    if (off[g + 1] < off[g] && g < bad) bad = g;
  PDB_CHECK(bad == TB, "offsets must be non-decreasing: offsets[", bad + 1, "] = ",
            static_cast<int64_t>(off[bad + 1]), " < offsets[", bad, "] = ",
            static_cast<int64_t>(off[bad]), " (table ", bad / std::max<int64_t>(L.B, 1), ", bag ",
            bad % std::max<int64_t>(L.B, 1), ")");

  // First out-of-range index: each thread walks a contiguous slice of positions,
  // advancing the table as it crosses table boundaries (offsets[t*B]).
  bad = N;
  if (N > 0 && T > 0) {
    auto tpos = [&](int64_t t) { return static_cast<int64_t>(off[t * L.B]); };
#pragma omp parallel reduction(min : bad) if (N > 65536)
    {
      const int64_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
      const int64_t p0 = N * tid / nt, p1 = N * (tid + 1) / nt;
      if (p0 < p1) {
        // Last table whose first position is <= p0.
        int64_t lo = 0, hi = T - 1;
        while (lo < hi) {
          const int64_t mid = (lo + hi + 1) / 2;
          if (tpos(mid) <= p0) lo = mid;
          else hi = mid - 1;
        }
        int64_t t = lo;
        int64_t tend = tpos(t + 1), rows = toff[t + 1] - toff[t];
        for (int64_t p = p0; p < p1; ++p) {
          while (p >= tend) {
            ++t;
            tend = tpos(t + 1);
            rows = toff[t + 1] - toff[t];
          }
          const int64_t v = static_cast<int64_t>(idx[p]);
          if (v < 0 || v >= rows) {
            bad = p;
            break;
          }
        }
      }
    }
  }
  if (bad < N) {
    int64_t t = 0;
    while (static_cast<int64_t>(off[(t + 1) * L.B]) <= bad) ++t;
    PDB_CHECK(false, "indices[", bad, "] = ", static_cast<int64_t>(idx[bad]),
              " is out of range for table ", t, " with ", toff[t + 1] - toff[t], " rows");
  }
}

// ---- portable forward ------------------------------------------------------

template <class WT, class IT>
void forward_generic_t(const EmbFwdArgs& a) {
  const BagsLayout& L = a.L;
  const IT* idx = static_cast<const IT*>(L.indices);
  const IT* off = static_cast<const IT*>(L.offsets);
  const WT* W = static_cast<const WT*>(a.weight);
  const int64_t D = L.D, B = L.B;
  generic::for_bag_chunks<IT>(L, [&](int64_t t, int64_t g0, int64_t g1) {
    const int64_t toff = L.table_offsets[t];
    const WT* tbl = W + toff * a.w_stride;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t b = g - t * B;
      float* o = a.out + b * a.out_stride + t * D;
      int64_t* am = a.argmax ? a.argmax + b * a.am_stride + t * D : nullptr;
      const int64_t p0 = off[g], p1 = off[g + 1];
      if (generic::write_if_empty(p0, p1, o, am, D)) continue;
      if (a.mode == kEmbMax) {
        const RowValues<WT> first(tbl + static_cast<int64_t>(idx[p0]) * a.w_stride, D);
        for (int64_t d = 0; d < D; ++d) o[d] = first[d];
        if (am)
          for (int64_t d = 0; d < D; ++d) am[d] = toff + static_cast<int64_t>(idx[p0]);
        for (int64_t p = p0 + 1; p < p1; ++p) {
          const RowValues<WT> r(tbl + static_cast<int64_t>(idx[p]) * a.w_stride, D);
          for (int64_t d = 0; d < D; ++d) {
            const float v = r[d];
            if (v > o[d]) {
              o[d] = v;
              if (am) am[d] = toff + static_cast<int64_t>(idx[p]);
            }
          }
        }
        continue;
      }
      for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
      for (int64_t p = p0; p < p1; ++p) {
        const RowValues<WT> r(tbl + static_cast<int64_t>(idx[p]) * a.w_stride, D);
        if (p + 4 < p1) __builtin_prefetch(tbl + static_cast<int64_t>(idx[p + 4]) * a.w_stride);
        const float s = a.psw ? a.psw[p] : 1.0f;
        for (int64_t d = 0; d < D; ++d) o[d] += s * r[d];
      }
      if (a.mode == kEmbMean) {
        const float inv = 1.0f / static_cast<float>(p1 - p0);
        for (int64_t d = 0; d < D; ++d) o[d] *= inv;
      }
    }
  });
}

template <class IT>
void forward_generic(const EmbFwdArgs& a) {
  switch (a.wdtype) {
    case DType::u8: return forward_generic_t<Q8, IT>(a);
    case DType::f32: return forward_generic_t<float, IT>(a);
    case DType::bf16: return forward_generic_t<Bf16, IT>(a);
    case DType::f16: return forward_generic_t<F16, IT>(a);
    default: PDB_CHECK(false, "embedding_bags: unsupported weight dtype ", dtype_name(a.wdtype));
  }
}

// ---- sort for the sparse step -----------------------------------------------

// Scratch reused across calls by the calling thread: fresh buffers would be page
// faulted in on every step.
struct Scratch {
  std::vector<uint64_t> k0, k1;
  std::vector<uint32_t> bag_of;
  std::vector<float> gbuf;
  std::vector<int64_t> hist;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

template <class IT>
void fill_keys(const BagsLayout& L, uint64_t* keys, uint32_t* bag_of) {
  const IT* idx = static_cast<const IT*>(L.indices);
  const IT* off = static_cast<const IT*>(L.offsets);
  generic::for_bag_chunks<IT>(L, [&](int64_t t, int64_t g0, int64_t g1) {
    const uint64_t base = static_cast<uint64_t>(L.table_offsets[t]);
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t p = off[g], pe = off[g + 1]; p < pe; ++p) {
        keys[p] = ((base + static_cast<uint64_t>(idx[p])) << 32) | static_cast<uint64_t>(p);
        bag_of[p] = static_cast<uint32_t>(g);
      }
  });
}

// Stable LSD radix sort of n keys on bits [32, 32 + bits). Returns the buffer
// holding the result (a or tmp).
uint64_t* radix_sort_hi(uint64_t* a, uint64_t* tmp, int64_t n, int bits, std::vector<int64_t>& hist) {
  if (bits <= 0 || n <= 1) return a;
  const int passes = (bits + 10) / 11;
  const int digit = (bits + passes - 1) / passes;
  const int64_t radix = int64_t{1} << digit;
  const int maxt = omp_get_max_threads();
  hist.assign(static_cast<size_t>(maxt) * radix, 0);
  int64_t* H = hist.data();
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = 32 + pass * digit;
    const uint64_t mask = static_cast<uint64_t>(radix - 1);
#pragma omp parallel if (n > 65536)
    {
      const int64_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
      const int64_t s = n * tid / nt, e = n * (tid + 1) / nt;
      int64_t* h = H + tid * radix;
      std::fill(h, h + radix, 0);
      for (int64_t i = s; i < e; ++i) ++h[(a[i] >> shift) & mask];
#pragma omp barrier
#pragma omp single
      {
        int64_t sum = 0;
        for (int64_t d = 0; d < radix; ++d)
          for (int64_t th = 0; th < nt; ++th) {
            const int64_t c = H[th * radix + d];
            H[th * radix + d] = sum;
            sum += c;
          }
      }
      for (int64_t i = s; i < e; ++i) tmp[h[(a[i] >> shift) & mask]++] = a[i];
    }
    std::swap(a, tmp);
  }
  return a;
}

template <class IT>
void sparse_step_t(const EmbSparseStepArgs& a) {
  const BagsLayout& L = a.L;
  const int64_t n = L.N;
  if (n == 0 || L.D == 0) return;
  Scratch& S = scratch();
  if (static_cast<int64_t>(S.k0.size()) < n) {
    S.k0.resize(n);
    S.k1.resize(n);
    S.bag_of.resize(n);
  }
  const int maxt = omp_get_max_threads();
  const int64_t gstride = (L.D + 15) / 16 * 16;
  S.gbuf.resize(static_cast<size_t>(maxt) * gstride);
  fill_keys<IT>(L, S.k0.data(), S.bag_of.data());
  int bits = 0;
  while (bits < 32 && (int64_t{1} << bits) < L.R_total) ++bits;
  const uint64_t* keys = radix_sort_hi(S.k0.data(), S.k1.data(), n, bits, S.hist);
  if (active_isa() >= Isa::avx512)
    detail::sparse_apply_avx512(a, keys, S.bag_of.data(), S.gbuf.data(), gstride);
  else if (active_isa() >= Isa::avx2)
    detail::sparse_apply_avx2(a, keys, S.bag_of.data(), S.gbuf.data(), gstride);
  else
    generic::sparse_apply_dispatch<IT>(a, keys, S.bag_of.data(), S.gbuf.data(), gstride);
}

}  // namespace

void validate_bags(const BagsLayout& L) {
  if (L.idx64) validate_impl<int64_t>(L);
  else validate_impl<int32_t>(L);
}

void validate_argmax(const BagsLayout& L, const int64_t* argmax, int64_t am_stride) {
  const int64_t B = L.B, T = L.T, D = L.D;
  int64_t bad = B * T * D;
#pragma omp parallel for reduction(min : bad) schedule(static) if (B * T * D > 65536)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t r = argmax[b * am_stride + t * D + d];
        if (r != -1 && (r < L.table_offsets[t] || r >= L.table_offsets[t + 1])) {
          const int64_t e = (b * T + t) * D + d;
          if (e < bad) bad = e;
        }
      }
  if (bad < B * T * D) {
    const int64_t b = bad / (T * D), c = bad % (T * D);
    PDB_CHECK(false, "argmax[", b, ", ", c, "] = ", argmax[b * am_stride + c],
              " is not -1 or a row of table ", c / D, " (rows ", L.table_offsets[c / D], " to ",
              L.table_offsets[c / D + 1] - 1, ")");
  }
}

void embedding_bags_forward(const EmbFwdArgs& a) {
  // No output element (T * D == 0): out may be an empty tensor's null pointer, which the
  // kernels would offset per bag. The indices were validated by the binding.
  if (a.L.B * a.L.T * a.L.D == 0) return;
  if (active_isa() >= Isa::avx512) return detail::forward_avx512(a);
  if (active_isa() >= Isa::avx2) return detail::forward_avx2(a);
  if (a.L.idx64) forward_generic<int64_t>(a);
  else forward_generic<int32_t>(a);
}

void embedding_bags_backward_dense(const EmbBwdArgs& a) {
  if (active_isa() >= Isa::avx2) return detail::backward_dense_avx2(a);
  if (a.L.idx64) generic::backward_dense_impl<int64_t>(a);
  else generic::backward_dense_impl<int32_t>(a);
}

void embedding_bags_sparse_step(const EmbSparseStepArgs& a) {
  PDB_CHECK(a.mode == kEmbSum || a.mode == kEmbMean, "sparse steps support mode sum or mean");
  PDB_CHECK(a.wdtype == DType::f32 || a.wdtype == DType::bf16,
            "sparse steps support float32 or bfloat16 weights");
  PDB_CHECK(a.L.R_total <= (int64_t{1} << 32) && a.L.N < (int64_t{1} << 32) &&
                a.L.T * a.L.B < (int64_t{1} << 32),
            "sparse steps support fewer than 2^32 rows, indices and bags");
  if (a.L.idx64) sparse_step_t<int64_t>(a);
  else sparse_step_t<int32_t>(a);
}

}  // namespace pdb::cpu

// CUDA EmbeddingBag forward.
//
// One group of G threads per bag, G a power of two <= 32 sized to the row: a warp serves
// 32 / G bags when D is small, one bag when it is large. Each thread owns a chunk of kVec
// consecutive columns (16-byte loads when the weight rows allow it, scalar otherwise),
// walks the bag's indices (4 rows in flight) accumulating in fp32, and moves to the next
// chunk G * kVec columns on if D is wider than one pass. No shared memory, no barriers.
// uint8 weights are 8-bit rowwise rows (FBGEMM's fused layout: D codes, then the row's
// fp32 scale and bias, at byte offset D, so unaligned): each gathered row's scale and bias
// are assembled from byte loads and its codes dequantized (one FMA) before pooling.
#include "cuda/embedding_bag.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "common/check.h"
#include "cuda/launch.h"

namespace pdb::cuda {
namespace {

constexpr int kThreads = 256;

struct Params {
  const void* weight; int64_t ldw; int D;
  const void* indices; int64_t n_indices;
  const void* offsets; int64_t n_offsets;
  int64_t bags;
  int mode;
  const void* psw; bool psw_f32;
  float* out; int64_t ldo;
  int log2_group;
  bool out_vec_ok;  // out rows allow 16-byte stores
};

template <typename T> __device__ __forceinline__ float to_f32(T x);
template <> __device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <> __device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f32<uint8_t>(uint8_t x) { return x; }

// The little-endian fp32 at byte pointer q (any alignment).
__device__ __forceinline__ float ld_f32_bytes(const uint8_t* q) {
  uint32_t bits = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) bits |= static_cast<uint32_t>(__ldg(q + k)) << (8 * k);
  return __uint_as_float(bits);
}

// kVec consecutive elements of a weight row as floats: one 16-byte load when kVec > 1
// (a 4-byte one for 4 uint8 codes).
template <typename T, int kVec>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[kVec]) {
  if constexpr (kVec == 1) {
    v[0] = to_f32(__ldg(p));
  } else if constexpr (kVec * sizeof(T) == 4) {
    const unsigned raw = __ldg(reinterpret_cast<const unsigned*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = to_f32(e[i]);
  } else {
    static_assert(kVec * sizeof(T) == 16, "vector loads are 4 or 16 bytes");
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = to_f32(e[i]);
  }
}

template <typename T>
__device__ __forceinline__ float load_psw(const Params& p, int64_t e) {
  return p.psw_f32 ? __ldg(static_cast<const float*>(p.psw) + e)
                   : to_f32(__ldg(static_cast<const T*>(p.psw) + e));
}

template <typename T, typename Idx, int kVec>
__global__ void __launch_bounds__(kThreads) embedding_bag_kernel(const Params p) {
  const int group = 1 << p.log2_group;
  const int64_t bag =
      static_cast<int64_t>(blockIdx.x) * (kThreads >> p.log2_group) + (threadIdx.x >> p.log2_group);
  if (bag >= p.bags) return;  // no barriers below: whole groups leave together
  const int lane = threadIdx.x & (group - 1);

  const Idx* indices = static_cast<const Idx*>(p.indices);
  const Idx* offsets = static_cast<const Idx*>(p.offsets);
  // bag + 1 < n_offsets keeps the read inside offsets; without include_last_offset the
  // last bag ends at n_indices. Clamped so that indices is never read out of range.
  int64_t start = static_cast<int64_t>(__ldg(offsets + bag));
  int64_t end = bag + 1 < p.n_offsets ? static_cast<int64_t>(__ldg(offsets + bag + 1))
                                      : p.n_indices;
  start = start < 0 ? 0 : (start > p.n_indices ? p.n_indices : start);
  end = end < start ? start : (end > p.n_indices ? p.n_indices : end);

  const T* weight = static_cast<const T*>(p.weight);
  constexpr bool kQ8 = std::is_same_v<T, uint8_t>;
  const bool is_max = p.mode == 2, has_psw = p.psw != nullptr;
  const float scale = (p.mode == 1 && end > start) ? 1.f / static_cast<float>(end - start) : 1.f;
  float* out = p.out + bag * p.ldo;

  for (int col = lane * kVec; col < p.D; col += group * kVec) {
    float acc[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[i] = 0.f;  // max: replaced by the first row
    const T* base = weight + col;

    // max as torch takes it: from the bag's first row, then a row only when strictly
    // greater (ties keep the first; a NaN wins only as the first row). fmaxf would drop
    // a first-row NaN.
    auto accumulate = [&](const float (&v)[kVec], float w, bool first) {
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        acc[i] = is_max ? (first || v[i] > acc[i] ? v[i] : acc[i]) : fmaf(w, v[i], acc[i]);
    };
    // Row r's kVec values at this chunk (uint8 rows dequantized).
    auto load_row = [&](int64_t r, float (&v)[kVec]) {
      load_vec<T, kVec>(base + r * p.ldw, v);
      if constexpr (kQ8) {
        const uint8_t* params = weight + r * p.ldw + p.D;
        const float s = ld_f32_bytes(params), b = ld_f32_bytes(params + 4);
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[i] = fmaf(v[i], s, b);
      }
    };
    int64_t e = start;
    for (; e + 4 <= end; e += 4) {  // four rows in flight
      float v[4][kVec];
#pragma unroll
      for (int u = 0; u < 4; ++u) load_row(static_cast<int64_t>(__ldg(indices + e + u)), v[u]);
#pragma unroll
      for (int u = 0; u < 4; ++u)
        accumulate(v[u], has_psw ? load_psw<T>(p, e + u) : 1.f, e + u == start);
    }
    for (; e < end; ++e) {
      float v[kVec];
      load_row(static_cast<int64_t>(__ldg(indices + e)), v);
      accumulate(v, has_psw ? load_psw<T>(p, e) : 1.f, e == start);
    }

#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[i] = end > start ? acc[i] * scale : 0.f;
    if constexpr (kVec % 4 == 0) {
      if (p.out_vec_ok) {
#pragma unroll
        for (int i = 0; i < kVec; i += 4)
          *reinterpret_cast<float4*>(out + col + i) =
              make_float4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]);
        continue;
      }
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[col + i] = acc[i];
  }
}

int log2_group_for(int64_t chunks) {
  int lg = 0;
  while (lg < 5 && (int64_t{1} << lg) < chunks) ++lg;
  return lg;
}

template <typename T, typename Idx, int kVec>
void launch(Params p, cudaStream_t stream) {
  p.log2_group = log2_group_for(p.D / kVec);
  const int64_t bags_per_block = kThreads >> p.log2_group;
  const int64_t blocks = (p.bags + bags_per_block - 1) / bags_per_block;
  PDB_CHECK(blocks <= INT_MAX, "embedding_bag: too many bags (", p.bags, ")");
  embedding_bag_kernel<T, Idx, kVec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  check_launch("embedding_bag kernel launch");
}

// vec: bytes per load (16, 4 for uint8 rows only, or 1 for scalar loads).
template <typename T, typename Idx>
void dispatch_vec(const Params& p, int vec, cudaStream_t stream) {
  if (vec == 16) launch<T, Idx, 16 / sizeof(T)>(p, stream);
  else if constexpr (sizeof(T) == 1) {
    if (vec == 4) return launch<T, Idx, 4>(p, stream);
    launch<T, Idx, 1>(p, stream);
  } else launch<T, Idx, 1>(p, stream);
}

template <typename T>
void dispatch_idx(const Params& p, DType idx, int vec, cudaStream_t stream) {
  if (idx == DType::i32) dispatch_vec<T, int32_t>(p, vec, stream);
  else dispatch_vec<T, int64_t>(p, vec, stream);
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }
bool aligned16(const void* ptr) { return aligned(ptr, 16); }

// Bytes per load that the weight rows allow: every row start and chunk aligned to them.
int vec_bytes(const EmbeddingBagArgs& a, int bytes) {
  const int64_t esize = dtype_size(a.weight_dtype);
  const bool ok = aligned(a.weight, bytes) && (a.D * esize) % bytes == 0 &&
                  (a.rows <= 1 || (a.ldw * esize) % bytes == 0);
  return ok ? bytes : 1;
}

}  // namespace

void embedding_bag(const EmbeddingBagArgs& a, void* stream_ptr) {
  PDB_CHECK(a.weight_dtype == DType::f32 || a.weight_dtype == DType::bf16 ||
                a.weight_dtype == DType::f16 || a.weight_dtype == DType::u8,
            "embedding_bag: weight must be float32, bfloat16, float16 or uint8 (8-bit rowwise), "
            "got ", dtype_name(a.weight_dtype));
  PDB_CHECK(a.weight_dtype != DType::u8 || a.per_sample_weights == nullptr ||
                a.psw_dtype == DType::f32,
            "embedding_bag: per_sample_weights for uint8 rows must be float32");
  PDB_CHECK(a.index_dtype == DType::i32 || a.index_dtype == DType::i64,
            "embedding_bag: indices must be int32 or int64, got ", dtype_name(a.index_dtype));
  PDB_CHECK(static_cast<int>(a.mode) >= 0 && static_cast<int>(a.mode) <= 2,
            "embedding_bag: mode must be 0 (sum), 1 (mean) or 2 (max)");
  PDB_CHECK(a.per_sample_weights == nullptr || a.mode == BagMode::sum,
            "embedding_bag: per_sample_weights are only supported with mode sum");
  PDB_CHECK(a.per_sample_weights == nullptr || a.psw_dtype == DType::f32 ||
                a.psw_dtype == a.weight_dtype,
            "embedding_bag: per_sample_weights must be float32 or the weight's dtype");
  // The column loop steps an int by up to a warp of 16-byte vectors past D.
  PDB_CHECK(a.D >= 0 && a.D <= INT_MAX - 1024, "embedding_bag: D must be at most 2^31 - 1025");
  PDB_CHECK(!a.include_last_offset || a.n_offsets >= 1,
            "embedding_bag: include_last_offset needs at least one offset");
  const int64_t bags = a.include_last_offset ? a.n_offsets - 1 : a.n_offsets;
  if (bags <= 0 || a.D == 0) return;
  PDB_CHECK(a.out != nullptr && a.offsets != nullptr, "embedding_bag: null out or offsets");
  PDB_CHECK(a.n_indices == 0 || a.indices != nullptr, "embedding_bag: null indices");
  PDB_CHECK(a.n_indices == 0 || a.rows > 0, "embedding_bag: indices into an empty weight");

  Params p{};
  p.weight = a.weight;
  p.ldw = a.ldw;
  p.D = static_cast<int>(a.D);
  p.indices = a.indices;
  p.n_indices = a.n_indices;
  p.offsets = a.offsets;
  p.n_offsets = a.n_offsets;
  p.bags = bags;
  p.mode = static_cast<int>(a.mode);
  p.psw = a.per_sample_weights;
  p.psw_f32 = a.psw_dtype == DType::f32;
  p.out = a.out;
  p.ldo = a.ldo;

  // uint8 rows of D + 8 bytes take 16-byte loads only when padded to a multiple of 16 (D
  // and the row stride both are then): 4-byte loads otherwise, when D % 4 == 0.
  int vec = vec_bytes(a, 16);
  if (vec == 1 && a.weight_dtype == DType::u8) vec = vec_bytes(a, 4);
  p.out_vec_ok = aligned16(a.out) && (bags <= 1 || a.ldo % 4 == 0);
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  switch (a.weight_dtype) {
    case DType::f32: dispatch_idx<float>(p, a.index_dtype, vec, stream); break;
    case DType::bf16: dispatch_idx<__nv_bfloat16>(p, a.index_dtype, vec, stream); break;
    case DType::u8: dispatch_idx<uint8_t>(p, a.index_dtype, vec, stream); break;
    default: dispatch_idx<__half>(p, a.index_dtype, vec, stream); break;
  }
}

}  // namespace pdb::cuda

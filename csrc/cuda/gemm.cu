// CUDA GEMM kernels: C[M,N] = act(A[M,K] @ B[K,N] + bias[N]).
//
// Tensor-core path (bf16, fp16 with mma.sync m16n8k16; fp32 as TF32 with m16n8k8):
//   CTA tile 128x128, 8 warps as 2 (M) x 4 (N), warp tile 64x32, fp32 accumulators in
//   registers. A and B tiles go to shared memory in their global layout (the unit-stride
//   dimension stays contiguous), padded by 16 or 32 bytes per row against bank
//   conflicts, through a 3-stage cp.async pipeline. 16-bit fragments are read with
//   ldmatrix (.trans where the smem tile is M- or N-contiguous), TF32 fragments with
//   plain shared loads and cvt.rna.tf32. The epilogue adds bias, applies ReLU and
//   stores straight from the accumulator registers.
//   Edges: any M, N, K. 16-byte cp.async chunks that cross the end of the contiguous
//   dimension copy only the valid bytes and zero-fill the rest; chunks outside the
//   matrix are zero-filled without reading. When an operand's base pointer is not
//   16-byte aligned, or its leading stride is not a multiple of 16 bytes (e.g. a
//   contiguous K that is not a multiple of 8 for 16-bit types), that operand's tiles
//   are loaded element by element with bounds checks instead (slow, always correct).
//
// SIMT path (fp32 without TF32): CTA tile 128x128x8, 256 threads with 8x8 outputs each,
//   register-staged double-buffered shared memory, bounds-checked loads.
#include "cuda/gemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>

#include "common/check.h"
#include "cuda/launch.h"

namespace pdb::cuda {
namespace {

constexpr int kBM = 128, kBN = 128, kThreads = 256, kStages = 3;
constexpr int kWarpM = 64, kWarpN = 32;  // 2 x 4 warps
constexpr int kMTiles = kWarpM / 16;     // m16 tiles per warp
constexpr int kNTiles = kWarpN / 8;      // n8 tiles per warp
constexpr int kOperandBytes = 10240;     // smem per operand per stage (largest layout)
constexpr int kTcSmemBytes = kStages * 2 * kOperandBytes;
static_assert(kTcSmemBytes == PDB_GEMM_TC_DYNAMIC_SMEM_BYTES, "update gemm.h");

struct Params {
  int M, N, K;
  const void* A; int64_t lda;  // stride of A's non-unit-stride dimension
  const void* B; int64_t ldb;  // stride of B's non-unit-stride dimension
  void* C; int64_t ldc;
  const float* bias;
  bool relu;
  // Tensor-core path, per operand: 16-byte cp.async chunks allowed. One flag for both
  // sent an aligned operand down the element-by-element path beside a misaligned one
  // (DeepBench's NN bf16 5124x700x2048: B's 1400-byte rows slowed A's loads too).
  bool a_aligned, b_aligned;
  bool pair_ok;   // C allows 2-element stores (TC) / 4-element stores (SIMT)
};

enum class Kind { bf16, f16, tf32 };

template <Kind kind> struct TcTraits {
  using T = uint16_t;  // storage type: raw 16-bit patterns
  static constexpr int kBK = 32;
  static constexpr int kVec = 8;  // elements per 16-byte chunk
};
template <> struct TcTraits<Kind::tf32> {
  using T = float;
  static constexpr int kBK = 16;
  static constexpr int kVec = 4;
};

// A shared-memory tile of one operand. kKMajor: K is the contiguous dimension, the
// tile is [MN rows][BK cols]; otherwise it is [BK rows][MN cols] (M or N contiguous).
template <Kind kind, bool kKMajor>
struct Tile {
  using T = typename TcTraits<kind>::T;
  static constexpr int kBK = TcTraits<kind>::kBK;
  static constexpr int kRows = kKMajor ? 128 : kBK;
  static constexpr int kCols = kKMajor ? kBK : 128;
  static constexpr int kPitch = kKMajor ? kBK + 16 / int(sizeof(T)) : 128 + 8;
  static_assert(kRows * kPitch * int(sizeof(T)) <= kOperandBytes, "tile does not fit");
  static_assert((kPitch * int(sizeof(T))) % 16 == 0, "rows must stay 16-byte aligned");
  __device__ static __forceinline__ int off(int mn, int k) {
    return kKMajor ? mn * kPitch + k : k * kPitch + mn;
  }
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

template <Kind kind>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (kind == Kind::bf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (kind == Kind::f16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// Load one operand tile: smem row r <-> global outer index outer0 + r, smem column c
// <-> global inner (unit-stride) index inner0 + c; element (o, i) at g[o * ld + i].
template <Kind kind, bool kKMajor>
__device__ __forceinline__ void load_tile(typename TcTraits<kind>::T* s,
                                          const typename TcTraits<kind>::T* g, int64_t ld,
                                          int outer0, int outer_lim, int inner0,
                                          int inner_lim, bool aligned, int tid) {
  using Tl = Tile<kind, kKMajor>;
  using T = typename TcTraits<kind>::T;
  constexpr int kVec = TcTraits<kind>::kVec;
  if (aligned) {
    constexpr int kChunksPerRow = Tl::kCols / kVec;
    constexpr int kChunks = Tl::kRows * kChunksPerRow;
    static_assert(kChunks % kThreads == 0, "chunks must split evenly over the threads");
#pragma unroll
    for (int it = 0; it < kChunks / kThreads; ++it) {
      const int c = tid + it * kThreads;
      const int r = c / kChunksPerRow;
      const int cc = (c % kChunksPerRow) * kVec;
      const int o = outer0 + r, i = inner0 + cc;
      const T* src = g;  // never read when src_bytes == 0
      int src_bytes = 0;
      if (o < outer_lim && i < inner_lim) {
        src = g + static_cast<int64_t>(o) * ld + i;
        src_bytes = min(kVec, inner_lim - i) * int(sizeof(T));
      }
      cp_async16(smem_u32(s + r * Tl::kPitch + cc), src, src_bytes);
    }
  } else {
    constexpr int kElems = Tl::kRows * Tl::kCols;
    static_assert(kElems % kThreads == 0, "elements must split evenly over the threads");
#pragma unroll 4
    for (int it = 0; it < kElems / kThreads; ++it) {
      const int e = tid + it * kThreads;
      const int r = e / Tl::kCols, cc = e % Tl::kCols;
      const int o = outer0 + r, i = inner0 + cc;
      T v = T(0);
      if (o < outer_lim && i < inner_lim) v = g[static_cast<int64_t>(o) * ld + i];
      s[r * Tl::kPitch + cc] = v;
    }
  }
}

// Not fmaxf, which returns 0 for a NaN: torch.relu (and the CPU kernels) keep it.
__device__ __forceinline__ float relu(float v) { return v < 0.f ? 0.f : v; }

template <Kind kind>
__device__ __forceinline__ void store_out(typename TcTraits<kind>::T* p, float v) {
  if constexpr (kind == Kind::bf16) *p = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  else if constexpr (kind == Kind::f16) *p = __half_as_ushort(__float2half_rn(v));
  else *p = v;
}
template <Kind kind>
__device__ __forceinline__ void store_out2(typename TcTraits<kind>::T* p, float v0, float v1) {
  if constexpr (kind == Kind::bf16) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v0, v1);
  } else if constexpr (kind == Kind::f16) {
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(v0, v1);
  } else {
    *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
  }
}

// kAKMajor: A is row-major-like (unit stride along K); else unit stride along M.
// kBKMajor: B is a transposed view (unit stride along K); else unit stride along N.
template <Kind kind, bool kAKMajor, bool kBKMajor>
__global__ void __launch_bounds__(kThreads, 2) gemm_tc_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using T = typename TcTraits<kind>::T;
  using TA = Tile<kind, kAKMajor>;
  using TB = Tile<kind, kBKMajor>;
  constexpr int kBK = TcTraits<kind>::kBK;
  constexpr int kStageElems = kOperandBytes / int(sizeof(T));

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);  // stage s: A at 2s, B at 2s+1

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = (warp >> 2) * kWarpM, wn = (warp & 3) * kWarpN;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const T* A = static_cast<const T*>(p.A);
  const T* B = static_cast<const T*>(p.B);

  auto load_stage = [&](int stage, int kt) {
    T* sa = smem + (2 * stage) * kStageElems;
    T* sb = smem + (2 * stage + 1) * kStageElems;
    const int k0 = kt * kBK;
    if constexpr (kAKMajor) load_tile<kind, true>(sa, A, p.lda, m0, p.M, k0, p.K, p.a_aligned, tid);
    else load_tile<kind, false>(sa, A, p.lda, k0, p.K, m0, p.M, p.a_aligned, tid);
    if constexpr (kBKMajor) load_tile<kind, true>(sb, B, p.ldb, n0, p.N, k0, p.K, p.b_aligned, tid);
    else load_tile<kind, false>(sb, B, p.ldb, k0, p.K, n0, p.N, p.b_aligned, tid);
  };

  float acc[kMTiles][kNTiles][4];
#pragma unroll
  for (int i = 0; i < kMTiles; ++i)
#pragma unroll
    for (int j = 0; j < kNTiles; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  const int ktiles = (p.K + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }

  const int g = lane >> 2, t = lane & 3;           // mma fragment coordinates
  const int lm_mat = lane >> 3, lm_row = lane & 7;  // ldmatrix: which 8x8 matrix, which row

  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();  // tile kt has landed (this thread's copies)
    __syncthreads();               // ... everyone's; and stage (kt-1)%S is free again
    {
      const int nk = kt + kStages - 1;
      if (nk < ktiles) load_stage(nk % kStages, nk);
      cp_async_commit();
    }
    const int stage = kt % kStages;
    const T* sa = smem + (2 * stage) * kStageElems;
    const T* sb = smem + (2 * stage + 1) * kStageElems;

    if constexpr (kind == Kind::tf32) {
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 8) {
        uint32_t af[kMTiles][4], bfr[kNTiles][2];
#pragma unroll
        for (int i = 0; i < kMTiles; ++i) {
          const int m = wm + i * 16 + g, k = kk + t;
          af[i][0] = to_tf32(sa[TA::off(m, k)]);
          af[i][1] = to_tf32(sa[TA::off(m + 8, k)]);
          af[i][2] = to_tf32(sa[TA::off(m, k + 4)]);
          af[i][3] = to_tf32(sa[TA::off(m + 8, k + 4)]);
        }
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          const int n = wn + j * 8 + g, k = kk + t;
          bfr[j][0] = to_tf32(sb[TB::off(n, k)]);
          bfr[j][1] = to_tf32(sb[TB::off(n, k + 4)]);
        }
#pragma unroll
        for (int i = 0; i < kMTiles; ++i)
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) mma<kind>(acc[i][j], af[i], bfr[j]);
      }
    } else {
      const uint32_t sa_u32 = smem_u32(sa), sb_u32 = smem_u32(sb);
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        uint32_t af[kMTiles][4], bfr[kNTiles][2];
#pragma unroll
        for (int i = 0; i < kMTiles; ++i) {
          // x4 matrices: 0 = (m 0-7, k 0-7), 1 = (m 8-15, k 0-7), 2 = (m 0-7, k 8-15),
          // 3 = (m 8-15, k 8-15), i.e. fragment registers a0..a3 of m16n8k16.
          if constexpr (kAKMajor) {
            const int m = wm + i * 16 + (lane & 15), k = kk + (lane >> 4) * 8;
            ldsm_x4(af[i], sa_u32 + TA::off(m, k) * 2);
          } else {
            const int m = wm + i * 16 + (lm_mat & 1) * 8, k = kk + lm_row + (lm_mat >> 1) * 8;
            ldsm_x4_trans(af[i], sa_u32 + TA::off(m, k) * 2);
          }
        }
#pragma unroll
        for (int j = 0; j < kNTiles / 2; ++j) {
          // x4 matrices: 0 = (n 0-7, k 0-7), 1 = (n 0-7, k 8-15), 2 = (n 8-15, k 0-7),
          // 3 = (n 8-15, k 8-15): b0, b1 of n-tile 2j, then b0, b1 of n-tile 2j+1.
          uint32_t r[4];
          if constexpr (kBKMajor) {
            const int n = wn + j * 16 + lm_row + (lm_mat >> 1) * 8, k = kk + (lm_mat & 1) * 8;
            ldsm_x4(r, sb_u32 + TB::off(n, k) * 2);
          } else {
            const int n = wn + j * 16 + (lm_mat >> 1) * 8, k = kk + lm_row + (lm_mat & 1) * 8;
            ldsm_x4_trans(r, sb_u32 + TB::off(n, k) * 2);
          }
          bfr[2 * j][0] = r[0];
          bfr[2 * j][1] = r[1];
          bfr[2 * j + 1][0] = r[2];
          bfr[2 * j + 1][1] = r[3];
        }
#pragma unroll
        for (int i = 0; i < kMTiles; ++i)
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) mma<kind>(acc[i][j], af[i], bfr[j]);
      }
    }
  }
  cp_async_wait<0>();

  // Epilogue from registers: acc[i][j][2h + e] is C(row, col + e) with
  // row = m0 + wm + 16 i + g + 8 h and col = n0 + wn + 8 j + 2 t.
  T* C = static_cast<T*>(p.C);
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) {
    const int col = n0 + wn + j * 8 + 2 * t;
    float b0 = 0.f, b1 = 0.f;
    if (p.bias != nullptr) {
      if (col < p.N) b0 = __ldg(p.bias + col);
      if (col + 1 < p.N) b1 = __ldg(p.bias + col + 1);
    }
#pragma unroll
    for (int i = 0; i < kMTiles; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + wm + i * 16 + g + 8 * h;
        if (row >= p.M || col >= p.N) continue;
        float v0 = acc[i][j][2 * h] + b0, v1 = acc[i][j][2 * h + 1] + b1;
        if (p.relu) {
          v0 = relu(v0);
          v1 = relu(v1);
        }
        T* out = C + static_cast<int64_t>(row) * p.ldc + col;
        if (col + 1 < p.N) {
          if (p.pair_ok) {
            store_out2<kind>(out, v0, v1);
          } else {
            store_out<kind>(out, v0);
            store_out<kind>(out + 1, v1);
          }
        } else {
          store_out<kind>(out, v0);
        }
      }
  }
#else
  __trap();  // tensor-core kernels need sm_80+; the launcher checks the device first
#endif
}

// ---- fp32 SIMT ---------------------------------------------------------------
constexpr int kSimtBK = 8, kSimtPad = 4;

template <bool kAKMajor, bool kBKMajor>
__global__ void __launch_bounds__(kThreads, 2) gemm_f32_simt_kernel(const Params p) {
  __shared__ __align__(16) float As[2][kSimtBK][kBM + kSimtPad];
  __shared__ __align__(16) float Bs[2][kSimtBK][kBN + kSimtPad];

  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const float* A = static_cast<const float*>(p.A);
  const float* B = static_cast<const float*>(p.B);

  // Thread -> (k, m|n) for the 4 elements of A and of B it stages per k-tile, chosen so
  // that consecutive threads read consecutive addresses in global memory.
  auto a_coord = [&](int it, int& k, int& m) {
    const int e = tid + it * kThreads;
    if constexpr (kAKMajor) { k = e & (kSimtBK - 1); m = e / kSimtBK; }
    else { m = e & (kBM - 1); k = e / kBM; }
  };
  auto b_coord = [&](int it, int& k, int& n) {
    const int e = tid + it * kThreads;
    if constexpr (kBKMajor) { k = e & (kSimtBK - 1); n = e / kSimtBK; }
    else { n = e & (kBN - 1); k = e / kBN; }
  };
  float ra[4], rb[4];
  auto load_global = [&](int kt) {
    const int k0 = kt * kSimtBK;
#pragma unroll
    for (int it = 0; it < 4; ++it) {
      int k, m, n;
      a_coord(it, k, m);
      const int gm = m0 + m, gk = k0 + k;
      ra[it] = 0.f;
      if (gm < p.M && gk < p.K)
        ra[it] = kAKMajor ? A[static_cast<int64_t>(gm) * p.lda + gk]
                          : A[static_cast<int64_t>(gk) * p.lda + gm];
      b_coord(it, k, n);
      const int gn = n0 + n, gk2 = k0 + k;
      rb[it] = 0.f;
      if (gn < p.N && gk2 < p.K)
        rb[it] = kBKMajor ? B[static_cast<int64_t>(gn) * p.ldb + gk2]
                          : B[static_cast<int64_t>(gk2) * p.ldb + gn];
    }
  };
  auto store_smem = [&](int buf) {
#pragma unroll
    for (int it = 0; it < 4; ++it) {
      int k, m, n;
      a_coord(it, k, m);
      As[buf][k][m] = ra[it];
      b_coord(it, k, n);
      Bs[buf][k][n] = rb[it];
    }
  };

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  const int ktiles = (p.K + kSimtBK - 1) / kSimtBK;
  if (ktiles > 0) {
    load_global(0);
    store_smem(0);
  }
  __syncthreads();
  for (int kt = 0; kt < ktiles; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < ktiles) load_global(kt + 1);
#pragma unroll
    for (int k = 0; k < kSimtBK; ++k) {
      float a[8], b[8];
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][k][64 + tx * 4]);
      a[0] = a0.x; a[1] = a0.y; a[2] = a0.z; a[3] = a0.w;
      a[4] = a1.x; a[5] = a1.y; a[6] = a1.z; a[7] = a1.w;
      b[0] = b0.x; b[1] = b0.y; b[2] = b0.z; b[3] = b0.w;
      b[4] = b1.x; b[5] = b1.y; b[6] = b1.z; b[7] = b1.w;
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    // Buffer buf^1 was last read in iteration kt-1, which every thread has finished
    // (the barrier below closed it), so it can be overwritten now.
    if (kt + 1 < ktiles) store_smem(buf ^ 1);
    __syncthreads();
  }

  // acc[i][j]: row m0 + ty*4 + (i&3) + 64*(i>>2), col n0 + tx*4 + (j&3) + 64*(j>>2).
  float* C = static_cast<float*>(p.C);
#pragma unroll
  for (int jh = 0; jh < 2; ++jh) {
    const int col = n0 + tx * 4 + 64 * jh;
    float bias[4] = {0.f, 0.f, 0.f, 0.f};
    if (p.bias != nullptr) {
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (col + q < p.N) bias[q] = __ldg(p.bias + col + q);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int row = m0 + ty * 4 + (i & 3) + 64 * (i >> 2);
      if (row >= p.M || col >= p.N) continue;
      float v[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        v[q] = acc[i][4 * jh + q] + bias[q];
        if (p.relu) v[q] = relu(v[q]);
      }
      float* out = C + static_cast<int64_t>(row) * p.ldc + col;
      if (p.pair_ok && col + 3 < p.N) {
        *reinterpret_cast<float4*>(out) = make_float4(v[0], v[1], v[2], v[3]);
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q)
          if (col + q < p.N) out[q] = v[q];
      }
    }
  }
}

// ---- host --------------------------------------------------------------------

// Which dimension of a strided 2-D view has unit stride. A dimension of size <= 1 can
// take any stride, so it counts as unit-stride when that helps.
// Returns true when dim 1 is the contiguous one (row-major-like), false for dim 0.
bool inner_is_dim1(int64_t rows, int64_t cols, int64_t s0, int64_t s1, const char* name) {
  if (cols <= 1 && rows > 1 && s0 == 1) return false;  // a contiguous column vector
  if (s1 == 1 || cols <= 1) return true;
  if (s0 == 1 || rows <= 1) return false;
  pdb::fail(__FILE__, __LINE__, "gemm: ", name,
            " needs unit stride along one dimension (make it contiguous first), strides (", s0,
            ", ", s1, ")");
}

template <typename Kernel>
void launch(Kernel kernel, const Params& p, int smem, cudaStream_t stream, int dev,
            std::atomic<uint64_t>& smem_done) {
  ensure_dynamic_smem(kernel, smem, dev, smem_done);
  const dim3 grid((p.N + kBN - 1) / kBN, (p.M + kBM - 1) / kBM);
  kernel<<<grid, kThreads, smem, stream>>>(p);
  check_launch("gemm kernel launch");
}

template <Kind kind, bool kAK, bool kBK>
void launch_tc(const Params& p, cudaStream_t stream, int dev) {
  static std::atomic<uint64_t> done{0};
  launch(gemm_tc_kernel<kind, kAK, kBK>, p, kTcSmemBytes, stream, dev, done);
}

template <Kind kind>
void dispatch_tc(const Params& p, bool a_kmajor, bool b_kmajor, cudaStream_t stream, int dev) {
  if (a_kmajor && b_kmajor) launch_tc<kind, true, true>(p, stream, dev);
  else if (a_kmajor) launch_tc<kind, true, false>(p, stream, dev);
  else if (b_kmajor) launch_tc<kind, false, true>(p, stream, dev);
  else launch_tc<kind, false, false>(p, stream, dev);
}

template <bool kAK, bool kBK>
void launch_simt(const Params& p, cudaStream_t stream, int dev) {
  static std::atomic<uint64_t> done{0};
  launch(gemm_f32_simt_kernel<kAK, kBK>, p, 0, stream, dev, done);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void gemm(const GemmArgs& g, DType dtype, bool allow_tf32, void* stream_ptr) {
  PDB_CHECK(dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16,
            "gemm: unsupported dtype ", dtype_name(dtype));
  PDB_CHECK(g.M >= 0 && g.N >= 0 && g.K >= 0, "gemm: negative size");
  // The kernels count tiles in int ((K + kBK - 1) / kBK, (N + kBN - 1) / kBN): keep those
  // sums below INT_MAX.
  constexpr int64_t kMaxDim = INT_MAX - 1024;
  PDB_CHECK(g.M <= kMaxDim && g.N <= kMaxDim && g.K <= kMaxDim,
            "gemm: M, N and K must be at most 2^31 - 1025");
  if (g.M == 0 || g.N == 0) return;
  PDB_CHECK(g.C != nullptr, "gemm: null output");
  PDB_CHECK(g.K == 0 || (g.A != nullptr && g.B != nullptr), "gemm: null operand");

  const bool a_kmajor = inner_is_dim1(g.M, g.K, g.sam, g.sak, "a");
  const bool b_kmajor = !inner_is_dim1(g.K, g.N, g.sbk, g.sbn, "b");
  Params p{};
  p.M = static_cast<int>(g.M);
  p.N = static_cast<int>(g.N);
  p.K = static_cast<int>(g.K);
  p.A = g.A;
  p.lda = a_kmajor ? g.sam : g.sak;
  p.B = g.B;
  p.ldb = b_kmajor ? g.sbn : g.sbk;
  p.C = g.C;
  p.ldc = g.ldc;
  p.bias = g.bias;
  p.relu = g.relu;

  const int64_t esize = dtype_size(dtype);
  const int64_t vec = 16 / esize;
  // The outer (non-unit-stride) dimension's size: its stride only matters when > 1.
  const int64_t a_outer = a_kmajor ? g.M : g.K, b_outer = b_kmajor ? g.N : g.K;
  p.a_aligned = aligned16(g.A) && (a_outer <= 1 || p.lda % vec == 0);
  p.b_aligned = aligned16(g.B) && (b_outer <= 1 || p.ldb % vec == 0);

  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const int dev = current_device();
  const bool tensor_cores = dtype != DType::f32 || allow_tf32;
  if (tensor_cores) {
    const int major = compute_capability_major(dev);
    PDB_CHECK(major >= 8, "gemm: the ", dtype == DType::f32 ? "tf32" : dtype_name(dtype),
              " tensor-core kernels need compute capability 8.0+, device ", dev, " has ", major,
              ".x");
    const int64_t pair = 2 * esize;
    p.pair_ok = reinterpret_cast<uintptr_t>(g.C) % pair == 0 && (g.M <= 1 || g.ldc % 2 == 0);
  } else {
    p.pair_ok = aligned16(g.C) && (g.M <= 1 || g.ldc % 4 == 0);
  }
  // M's tiles go on gridDim.y (at most 65535): taller problems run as slices of rows, one
  // launch each. A slice starts 2^22 rows on, a multiple of 16 bytes into A (its row
  // stride is a multiple of 16 bytes when `a_aligned`, or A is contiguous along M) and of
  // the store width into C (ldc is even / a multiple of 4 when `pair_ok`).
  constexpr int64_t kSliceRows = int64_t{1} << 22;
  static_assert(kSliceRows / kBM <= 65535, "a slice's row tiles must fit gridDim.y");
  for (int64_t m0 = 0; m0 < g.M; m0 += kSliceRows) {
    Params q = p;
    q.M = static_cast<int>(std::min(kSliceRows, g.M - m0));
    q.A = static_cast<const char*>(g.A) + m0 * g.sam * esize;
    q.C = static_cast<char*>(g.C) + m0 * g.ldc * esize;
    if (tensor_cores) {
      if (dtype == DType::bf16) dispatch_tc<Kind::bf16>(q, a_kmajor, b_kmajor, stream, dev);
      else if (dtype == DType::f16) dispatch_tc<Kind::f16>(q, a_kmajor, b_kmajor, stream, dev);
      else dispatch_tc<Kind::tf32>(q, a_kmajor, b_kmajor, stream, dev);
    } else if (a_kmajor && b_kmajor) {
      launch_simt<true, true>(q, stream, dev);
    } else if (a_kmajor) {
      launch_simt<true, false>(q, stream, dev);
    } else if (b_kmajor) {
      launch_simt<false, true>(q, stream, dev);
    } else {
      launch_simt<false, false>(q, stream, dev);
    }
  }
}

}  // namespace pdb::cuda

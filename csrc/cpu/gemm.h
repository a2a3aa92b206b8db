// CPU GEMM: C[M,N] = act(A[M,K] @ B[K,N] + bias[N]).
// A and B are arbitrary strided views (so transposed operands need no copy);
// C is row-major with leading dimension ldc. Accumulation is always fp32.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/tensor.h"

namespace pdb::cpu {

struct GemmArgs {
  int64_t M, N, K;
  const void* A; int64_t sam, sak;  // element strides of A along M and K
  const void* B; int64_t sbk, sbn;  // element strides of B along K and N
  void* C; int64_t ldc;             // C row-major, unit stride along N
  const float* bias;                // N floats, or nullptr
  bool relu;
};

// dtype: f32 (A, B, C fp32) or bf16 (A, B, C bf16, fp32 accumulate).
void gemm(const GemmArgs& args, DType dtype);

// Which code path gemm() takes for these arguments and the active ISA, e.g.
// "avx2:packed6x16", "avx2:small_m_rowb", "generic:packed4x8", "zero_k" (for tests and
// benchmarks; the string is static).
const char* gemm_path(const GemmArgs& args, DType dtype);

}  // namespace pdb::cpu

// ---- Internal interface between the driver (gemm.cpp) and the per-ISA kernel
// translation units (gemm_avx2.cpp, gemm_avx512.cpp). Only those files define
// PDB_GEMM_INTERNAL before including this header.
#ifdef PDB_GEMM_INTERNAL
#include <type_traits>

namespace pdb::cpu::detail {

// What to do with one MR x NR register tile once its K block is summed.
struct TileEpi {
  float* w;          // fp32 partial sums: C itself for f32; for bf16 a scratch block
                     // whose rows and columns come in whole MR x NR tiles (edge tiles
                     // included), nullptr when K is one block
  int64_t ldw;
  void* c;           // final destination (fp32 or bf16), row-major
  int64_t ldc;
  const float* bias; // bias at the tile's first column, or nullptr
  int m, n;          // valid rows / columns of the tile (<= MR / NR)
  bool accumulate;   // add w (not the first K block)
  bool final;        // last K block: + bias, relu, write c; otherwise write w
  bool relu;
  bool c_bf16;
};

// A register-tiled microkernel with its packing routines.
// Packed panels: A as ceil(m/mr) panels of [kpad/kpack][mr][kpack], B as ceil(n/nr)
// panels of [kpad/kpack][nr][kpack], kpad = k rounded up to kpack, zero padded.
struct PackedKernel {
  int mr, nr;
  int kpack;       // K is padded to a multiple of this: 1; 2 for K-pair-interleaved bf16
                   // panels (vdpbf16ps); 32 for AMX (a tile row holds 32 bf16 of K)
  int elem_bytes;  // bytes of one packed element (4 fp32, 2 bf16)
  // KC: the B micro-panel (KC x NR) may take this percentage of L1, KC at most kc_max;
  // MC: the A block (MC x KC) this percentage of L2 (measured per kernel; see their
  // definitions).
  int kc_l1_pct, kc_max, mc_l2_pct;
  void (*pack_a)(const void* A, int64_t sam, int64_t sak, bool in_bf16, int64_t m, int64_t k,
                 void* dst);
  void (*pack_b)(const void* B, int64_t sbk, int64_t sbn, bool in_bf16, int64_t k, int64_t n,
                 void* dst);
  void (*micro)(int64_t kpad, const void* a, const void* b, const TileEpi& e);
  const char* name;
  // Per-thread state around a run of micro calls (AMX: load the tile configuration,
  // then release the tiles), or nullptr.
  void (*begin)();
  void (*end)();
  // fp32 only, or nullptr: micro with A read in place instead of from a packed panel
  // (mr full rows lda apart, unit stride along K), for blocks whose A packing would be
  // used by too few B panels to pay for itself.
  void (*micro_direct)(int64_t k, const float* a, int64_t lda, const void* b,
                       const TileEpi& e);
};

const PackedKernel* packed_kernel_avx2();
// vdpbf16ps panels when bf16_dot; fp32 panels 16 wide when n <= 16, else 32.
const PackedKernel* packed_kernel_avx512(bool bf16_dot, int64_t n);
// bf16 on AMX tiles; nullptr when the compiler could not build the AMX translation unit.
const PackedKernel* packed_kernel_amx();

// Tiny M (<= 4), B unit stride along N: computes C[:, n0:n1] streaming rows of B
// (no B packing; C rows accumulate in memory).
// Returns false if a scratch buffer could not be allocated.
bool small_m_rowb_avx2(const GemmArgs& g, bool bf16, int64_t n0, int64_t n1);
// Dot-product form for operands contiguous along K. over_n: small M, B^T rows streamed
// (sbk == 1), computes C[:, r0:r1]. Otherwise small N, A rows streamed (sak == 1),
// computes C[r0:r1, :]. Returns false if a scratch buffer could not be allocated.
bool small_dot_avx2(const GemmArgs& g, bool bf16, bool over_n, int64_t r0, int64_t r1);
// fp32 C[r0:r1, 0] for N = 1 with A and B contiguous along K (sak == sbk == 1), AVX-512.
void gemv_f32(const GemmArgs& g, int64_t r0, int64_t r1);

// The streaming paths (row streaming, dot products, GEMV) sum K in blocks of this many
// terms, each in zeroed accumulators added to the running totals at the block's end: one
// running sum over all of K let the rounding error grow with K (M = 4, K = 2^25: 3.4e-4
// against MKL's 8.5e-6 and the packed path's 1.1e-5, whose K blocks are summed the same
// way).
constexpr int64_t kSumBlock = 512;

// Thread-local, 64-byte aligned scratch per slot, grown on demand and reused across
// calls (with 256 bytes of slack past `bytes`). nullptr if allocation failed.
enum : int {
  kBufA = 0, kBufB = 1, kBufC = 2, kBufSmallA = 3, kBufSmallB = 4, kBufSum = 5, kBufSlots = 6
};
void* tls_buffer(int slot, size_t bytes);
// Frees this thread's buffers whose capacity exceeds kKeepScratchBytes (each gemm task
// ends with it): kept, a small-M call's fp32 copy of a long A stayed allocated in every
// thread that ran one (512 MiB a thread for a bf16 16 x 2^23 input). Such a call then
// allocates and touches its copy again each time (the dot form's bf16 or strided A; the
// row-streaming path reads A in place).
constexpr size_t kKeepScratchBytes = size_t{32} << 20;
void tls_release_large();
// Bytes of a x b floats, or SIZE_MAX when that overflows (stride-0 views make any K
// possible), which tls_buffer then fails to allocate instead of wrapping to a small size.
inline size_t f32_bytes(int64_t a, int64_t b) {
  size_t n;
  if (a < 0 || b < 0 ||
      __builtin_mul_overflow(static_cast<size_t>(a), static_cast<size_t>(b), &n) ||
      __builtin_mul_overflow(n, sizeof(float), &n))
    return SIZE_MAX;
  return n;
}

// Internal linkage on purpose: every TU gets its own copy compiled with its own target
// flags, so the linker can never pick an AVX-512 instance for the generic path.
namespace {

template <typename T> inline float to_f32(T v);
template <> inline float to_f32<float>(float v) { return v; }
template <> inline float to_f32<uint16_t>(uint16_t v) { return bf16_to_f32(v); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// One packed panel of width `width` (mr or nr) from a strided source: element (i, kk)
// at src[i * s_mn + kk * s_k]; i < mn, kk < k are real, the rest is zero. 64-bit width:
// the small-M/N paths pack a transposed operand with width K (an int cast truncated
// K >= 2^31 and gave wrong sums).
template <typename In, typename Out, int KP>
void pack_panel_ref(const In* src, int64_t s_mn, int64_t s_k, int64_t mn, int64_t k,
                    int64_t width, Out* p) {
  const int64_t kpad = round_up(k, KP);
  for (int64_t kk = 0; kk < kpad; ++kk) {
    Out* row = p + (kk / KP) * width * KP + kk % KP;
    for (int64_t i = 0; i < width; ++i) {
      Out v = Out(0);
      if (i < mn && kk < k) {
        if constexpr (sizeof(Out) == sizeof(In)) v = src[i * s_mn + kk * s_k];  // same type
        else v = to_f32(src[i * s_mn + kk * s_k]);
      }
      row[i * KP] = v;
    }
  }
}

// Calls fn with TileEpi's accumulate and final flags as std::bool_constant arguments, so a
// microkernel compiles its full-tile store once per combination of the two.
template <typename Fn>
inline void with_epi_flags(const TileEpi& e, Fn&& fn) {
  using T = std::true_type;
  using F = std::false_type;
  if (e.final) e.accumulate ? fn(T{}, T{}) : fn(F{}, T{});
  else e.accumulate ? fn(T{}, F{}) : fn(F{}, F{});
}

// Scalar epilogue for edge tiles (and the reference for the vector ones).
inline void tile_epilogue_ref(const float* acc, int64_t lda, const TileEpi& e) {
  for (int i = 0; i < e.m; ++i) {
    for (int j = 0; j < e.n; ++j) {
      float v = acc[i * lda + j];
      if (e.accumulate) v += e.w[i * e.ldw + j];
      if (!e.final) {
        e.w[i * e.ldw + j] = v;
        continue;
      }
      if (e.bias) v += e.bias[j];
      if (e.relu && v < 0.f) v = 0.f;  // NaN passes through, like torch.relu
      if (e.c_bf16) static_cast<uint16_t*>(e.c)[i * e.ldc + j] = f32_to_bf16(v);
      else static_cast<float*>(e.c)[i * e.ldc + j] = v;
    }
  }
}

}  // namespace
}  // namespace pdb::cpu::detail
#endif  // PDB_GEMM_INTERNAL

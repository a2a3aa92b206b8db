// AMX bf16 GEMM microkernel: a 32x32 fp32 C block in four 16x16 accumulator tiles, fed
// per 32-deep K step by two A tiles (16 rows x 32 bf16 of K) and two B tiles (16 K-pairs
// x 16 columns). tdpbf16ps does 16x16x32 multiply-adds, 256x a 512-bit vdpbf16ps.
// Panels: A as [kpad/32][32 rows][32 k] (a tile row is 64 contiguous bytes), B as the
// K-pair panels [kpad/2][32 cols][2] of the AVX512_BF16 kernel, padded to kpad = K
// rounded up to 32, so B tile j is the 64-byte half j of each 128-byte pair row.
// After the last K block the accumulators go through a 4 KiB stack block into the
// shared AVX-512 epilogue (bias, ReLU, bf16 rounding, masked edges).
#define PDB_GEMM_INTERNAL
#include <immintrin.h>

#include <type_traits>

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see gemm_avx512.cpp

#include "cpu/amx_tiles.h"
#include "cpu/gemm.h"
#include "cpu/gemm_simd512.h"

namespace pdb::cpu::detail {
namespace {

constexpr int kMR = 32, kNR = 32, kKStep = 32;

// Partial sums across K blocks (bf16 output: e.w is the driver's fp32 scratch, whose
// rows and columns are allocated in whole tiles, edge tiles included) move between the
// scratch and the accumulator tiles directly; only the last K block goes through the
// vector epilogue.
void micro_amx_32x32(int64_t kpad, const void* a_, const void* b_, const TileEpi& e) {
  const char* a = static_cast<const char*>(a_);
  const char* b = static_cast<const char*>(b_);
  amx_memory_fence();  // the panels must be in memory before the tile loads read them
  const int64_t ldw = e.ldw * 4;
  if (e.accumulate) {
    _tile_loadd(0, e.w, ldw);
    _tile_loadd(1, e.w + 16, ldw);
    _tile_loadd(2, e.w + 16 * e.ldw, ldw);
    _tile_loadd(3, e.w + 16 * e.ldw + 16, ldw);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k = 0; k < kpad; k += kKStep) {
    _tile_loadd(4, a, 64);
    _tile_loadd(6, b, 128);
    _tile_loadd(7, b + 64, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a + 16 * 64, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
    a += kMR * 64;
    b += 16 * 128;
  }
  if (!e.final) {
    _tile_stored(0, e.w, ldw);
    _tile_stored(1, e.w + 16, ldw);
    _tile_stored(2, e.w + 16 * e.ldw, ldw);
    _tile_stored(3, e.w + 16 * e.ldw + 16, ldw);
    return;
  }
  alignas(64) float buf[kMR * kNR];
  _tile_stored(0, buf, 4 * kNR);
  _tile_stored(1, buf + 16, 4 * kNR);
  _tile_stored(2, buf + 16 * kNR, 4 * kNR);
  _tile_stored(3, buf + 16 * kNR + 16, 4 * kNR);
  const int64_t c_row_bytes = e.ldc * (e.c_bf16 ? 2 : 4);
  // 8 rows at a time: 16 zmm of sums, the rest of the register file for the epilogue.
  auto store_rows = [&](auto edge_flag) {
    constexpr bool kEdge = decltype(edge_flag)::value;
    for (int r0 = 0; r0 < e.m; r0 += 8) {
      TileEpi q = e;
      q.m = e.m - r0 < 8 ? e.m - r0 : 8;
      q.c = static_cast<char*>(e.c) + r0 * c_row_bytes;
      __m512 acc[8][2];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        acc[i][0] = _mm512_load_ps(buf + (r0 + i) * kNR);
        acc[i][1] = _mm512_load_ps(buf + (r0 + i) * kNR + 16);
      }
      tile_store<8, 2, false, true, kEdge, f32x16_to_bf16_native>(acc, q);
    }
  };
  if (e.m != kMR || e.n != kNR) store_rows(std::true_type{});
  else store_rows(std::false_type{});
}

// A panels [kpad/32][32][32]: rows contiguous along K are copied 32 bf16 at a time.
void pack_a_amx(const void* A, int64_t sam, int64_t sak, bool, int64_t m, int64_t k,
                void* dst) {
  const uint16_t* src = static_cast<const uint16_t*>(A);
  uint16_t* d = static_cast<uint16_t*>(dst);
  const int64_t kpad = round_up(k, kKStep);
  for (int64_t i0 = 0; i0 < m; i0 += kMR) {
    const int valid = static_cast<int>(imin(kMR, m - i0));
    uint16_t* p = d + (i0 / kMR) * kpad * kMR;
    for (int64_t k0 = 0; k0 < kpad; k0 += kKStep) {
      uint16_t* blk = p + k0 * kMR;
      if (sak == 1) {
        const __mmask32 km = lanes32(k - k0);
        for (int i = 0; i < kMR; ++i)
          _mm512_storeu_si512(blk + i * kKStep,
                              i < valid ? _mm512_maskz_loadu_epi16(km, src + (i0 + i) * sam + k0)
                                        : _mm512_setzero_si512());
      } else {
        for (int i = 0; i < kMR; ++i)
          for (int kk = 0; kk < kKStep; ++kk)
            blk[i * kKStep + kk] = i < valid && k0 + kk < k
                                       ? src[(i0 + i) * sam + (k0 + kk) * sak]
                                       : uint16_t(0);
      }
    }
  }
}

void pack_b_amx(const void* B, int64_t sbk, int64_t sbn, bool, int64_t k, int64_t n, void* dst) {
  pack_pair_panels<kKStep>(static_cast<const uint16_t*>(B), sbn, sbk, n, k, kNR,
                           static_cast<uint16_t*>(dst));
}

// KC 1024 (a 64 KiB B panel, partly from L2): partial sums would otherwise round-trip
// through the fp32 scratch, which cost more (2048x1024x1024 on one thread: 1158 vs
// 851 GFLOP/s at KC 384; KC 512 and 768 measured 1.5-1.6 TFLOP/s on two threads
// against 2.2 at 1024). The A block takes a quarter of L2, not half: the B panels
// stream from L2 beside it (2048x1024x479, one thread: 1206 vs 840 GFLOP/s).
const PackedKernel kAmxKernel = {kMR,        kNR,        kKStep,     2,
                                 200,        1024,       25,         pack_a_amx,
                                 pack_b_amx, micro_amx_32x32, "amx:bf16_32x32", amx_configure,
                                 amx_release, nullptr};

}  // namespace

const PackedKernel* packed_kernel_amx() { return &kAmxKernel; }

}  // namespace pdb::cpu::detail

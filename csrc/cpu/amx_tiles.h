// The one AMX tile configuration used by pydeepbench (GEMM kernel and roofline probe):
// all 8 tiles 16 rows x 64 bytes (16 x 16 fp32 accumulators, 16 x 32 bf16 A rows, or
// 16 K-pairs x 16 columns of B). Included only by *_amx.cpp translation units.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace pdb::cpu {
namespace {

struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// GCC's tile intrinsics are asm statements that declare no memory they read (ldtilecfg
// names 8 of its 64 bytes, tileloadd none), so stores the compiler sees feeding them
// would be dropped as dead without this barrier.
inline void amx_memory_fence() { __asm__ __volatile__("" ::: "memory"); }

// Per thread, before the first tile instruction: another library (oneDNN) may have
// loaded its own configuration on this thread since our last call.
inline void amx_configure() {
  AmxTileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  amx_memory_fence();
  _tile_loadconfig(&cfg);
}

// Back to the init state, so the OS need not save 8 KiB of tiles on a context switch.
inline void amx_release() { _tile_release(); }

}  // namespace
}  // namespace pdb::cpu

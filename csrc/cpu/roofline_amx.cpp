// AMX bf16 peak: six independent tdpbf16ps accumulator chains (16x16x32 multiply-adds
// each) on two input tiles, enough in flight to cover the instruction's latency.
#include "cpu/amx_tiles.h"
#include "cpu/roofline.h"

namespace pdb::cpu {

double amx_bf16_chains(int64_t iters, double* flops) {
  // bf16 1e-3 (0x3a83): 32 products of 1e-6 per step keep the sums small and normal.
  alignas(64) uint16_t in[16 * 32];
  for (auto& v : in) v = 0x3a83;
  alignas(64) float out[6][16 * 16];
  amx_configure();
  amx_memory_fence();
  _tile_loadd(6, in, 64);
  _tile_loadd(7, in, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  for (int64_t it = 0; it < iters; ++it) {
    _tile_dpbf16ps(0, 6, 7);
    _tile_dpbf16ps(1, 6, 7);
    _tile_dpbf16ps(2, 6, 7);
    _tile_dpbf16ps(3, 6, 7);
    _tile_dpbf16ps(4, 6, 7);
    _tile_dpbf16ps(5, 6, 7);
  }
  _tile_stored(0, out[0], 64);
  _tile_stored(1, out[1], 64);
  _tile_stored(2, out[2], 64);
  _tile_stored(3, out[3], 64);
  _tile_stored(4, out[4], 64);
  _tile_stored(5, out[5], 64);
  amx_release();
  double s = 0;
  for (const auto& t : out) s += t[0] + t[255];
  *flops = 2.0 * 16 * 16 * 32 * 6 * static_cast<double>(iters);
  return s;
}

}  // namespace pdb::cpu

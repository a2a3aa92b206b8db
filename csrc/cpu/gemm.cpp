// GEMM driver: path selection, cache blocking, OpenMP partitioning, and the portable
// C++ microkernel. The per-ISA microkernels and packers live in gemm_avx2.cpp,
// gemm_avx512.cpp and gemm_amx.cpp (compiled with their own target flags, picked at
// run time).
//
// Packed path (per thread, on its own rectangle of C; no barriers):
//   for jc in N by NC:      pack B[:, jc:jc+NC] for all of K (KC blocks of NR panels)
//     for ic in M by MC:
//       for pc in K by KC:  pack A[ic:ic+MC, pc:pc+KC] into MR panels (fp32 A with unit
//                           stride along K and few B panels: read in place instead)
//         for jr, ir:       MR x NR microkernel; the last K block applies bias/ReLU
//                           and rounds to bf16 in registers. (for ir, jr when the K
//                           block of B fits in half of L2; A is then packed one MR
//                           panel at a time, right before its tiles.)
// f32 partial sums across K blocks live in C itself; bf16 ones in an fp32 MC x NC scratch.
#define PDB_GEMM_INTERNAL
#include "cpu/gemm.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "common/cpu_features.h"

namespace pdb::cpu {

namespace detail {

namespace {
struct TlsBuffers {
  void* p[kBufSlots] = {};
  size_t cap[kBufSlots] = {};
  ~TlsBuffers() {
    for (void* q : p) std::free(q);
  }
};
thread_local TlsBuffers tls_buffers;
}  // namespace

void* tls_buffer(int slot, size_t bytes) {
  TlsBuffers& b = tls_buffers;
  if (bytes > SIZE_MAX / 2) return nullptr;  // the headroom below would wrap
  if (b.cap[slot] < bytes || !b.p[slot]) {
    std::free(b.p[slot]);
    b.p[slot] = nullptr;
    b.cap[slot] = 0;
    size_t cap = bytes + bytes / 4;                   // some headroom for the next call
    cap = (cap + 256 + 63) / 64 * 64;                 // + slack for overlapping stores
    void* q = std::aligned_alloc(64, cap);
    if (!q) return nullptr;
    b.p[slot] = q;
    b.cap[slot] = cap - 256;
  }
  return b.p[slot];
}

void tls_release_large() {
  TlsBuffers& b = tls_buffers;
  for (int slot = 0; slot < kBufSlots; ++slot)
    if (b.cap[slot] > kKeepScratchBytes) {
      std::free(b.p[slot]);
      b.p[slot] = nullptr;
      b.cap[slot] = 0;
    }
}

#if !PDB_HAVE_AMX
// The compiler could not build gemm_amx.cpp: bf16 stays on the AVX512_BF16 kernel.
const PackedKernel* packed_kernel_amx() { return nullptr; }
#endif

}  // namespace detail

namespace {
using namespace detail;

// ---- portable kernel ---------------------------------------------------------------
constexpr int kGenMR = 4, kGenNR = 8;

template <typename In>
void gen_pack(const In* src, int64_t s_mn, int64_t s_k, int64_t mn, int64_t k, int width,
              float* d) {
  for (int64_t i0 = 0; i0 < mn; i0 += width)
    pack_panel_ref<In, float, 1>(src + i0 * s_mn, s_mn, s_k, imin(width, mn - i0), k, width,
                                 d + (i0 / width) * k * width);
}
void gen_pack_a(const void* A, int64_t sam, int64_t sak, bool bf16, int64_t m, int64_t k,
                void* dst) {
  if (bf16) gen_pack(static_cast<const uint16_t*>(A), sam, sak, m, k, kGenMR, static_cast<float*>(dst));
  else gen_pack(static_cast<const float*>(A), sam, sak, m, k, kGenMR, static_cast<float*>(dst));
}
void gen_pack_b(const void* B, int64_t sbk, int64_t sbn, bool bf16, int64_t k, int64_t n,
                void* dst) {
  if (bf16) gen_pack(static_cast<const uint16_t*>(B), sbn, sbk, n, k, kGenNR, static_cast<float*>(dst));
  else gen_pack(static_cast<const float*>(B), sbn, sbk, n, k, kGenNR, static_cast<float*>(dst));
}
void gen_micro(int64_t kpad, const void* a_, const void* b_, const TileEpi& e) {
  const float* a = static_cast<const float*>(a_);
  const float* b = static_cast<const float*>(b_);
  float acc[kGenMR][kGenNR] = {};
  for (int64_t k = 0; k < kpad; ++k, a += kGenMR, b += kGenNR)
    for (int i = 0; i < kGenMR; ++i)
      for (int j = 0; j < kGenNR; ++j) acc[i][j] += a[i] * b[j];
  tile_epilogue_ref(&acc[0][0], kGenNR, e);
}
const PackedKernel kGenericKernel = {kGenMR,    kGenNR,    1,          4,
                                     50,        512,       50,         gen_pack_a,
                                     gen_pack_b, gen_micro, "generic:packed4x8", nullptr,
                                     nullptr,   nullptr};

// ---- path selection ----------------------------------------------------------------
// Small M: B contiguous along K (x @ W.t()) -> dot form streaming W rows, parallel over
// N; B contiguous along N -> row streaming for M <= 4, else the packed path (which then
// splits N across threads and packs B one KC block at a time).
constexpr int64_t kSmallM = 16;
constexpr int64_t kSmallN = 8;      // columns up to which A rows are streamed (dot form)
constexpr int64_t kRowStreamM = 4;  // rows up to which row-major B is streamed row-wise

enum class Path { empty, zero_k, small_rowb, small_dot_n, small_dot_m, gemv, packed };

Path choose_path(const GemmArgs& g, Isa isa, bool bf16) {
  if (g.M <= 0 || g.N <= 0) return Path::empty;
  if (g.K <= 0) return Path::zero_k;
  // fp32 GEMV on AVX-512 (DLRM's last layer) instead of the AVX2 dot form. C++ loop,
  // median of 15, three runs: 128x1x256 (one thread) 37.7-37.9 -> 44.1-44.7 GFLOP/s,
  // 2048x1x256 (two threads) 57.5-61.7 -> 78.2-83.6; 8192 rows and up (DRAM) tie.
  if (isa >= Isa::avx512 && !bf16 && g.N == 1 && g.M > kSmallM && g.sak == 1 && g.sbk == 1)
    return Path::gemv;
  if (isa >= Isa::avx2) {
    if (g.M <= kSmallM) {
      if (g.sbn == 1 && g.N > 1) return g.M <= kRowStreamM ? Path::small_rowb : Path::packed;
      if (g.sbk == 1) return Path::small_dot_n;
      if (g.sbn == 1 && g.M <= kRowStreamM) return Path::small_rowb;
    }
    if (g.N <= kSmallN && g.sak == 1 && g.K >= 16) return Path::small_dot_m;
  }
  return Path::packed;
}

const PackedKernel* choose_kernel(Isa isa, bool bf16, int64_t n) {
  if (isa >= Isa::amx && bf16 && packed_kernel_amx()) return packed_kernel_amx();
  if (isa >= Isa::avx512_bf16 && bf16) return packed_kernel_avx512(true, n);
  if (isa >= Isa::avx512) return packed_kernel_avx512(false, n);
  if (isa >= Isa::avx2) return packed_kernel_avx2();
  return &kGenericKernel;
}

// Threads worth using: about 256K multiply-adds each at least (~5 µs of work; a
// fork/join costs ~1-2 µs and more when the cores are shared). The streaming paths
// too: split, each thread's share of the streamed operand can stay in its own L2
// (2048x1x256 fp32, Granite Rapids-class VM: 14 us on two threads, 44 us on one; the
// earlier 4 MB-per-thread floor was set for DRAM-bound streams).
int threads_for(const GemmArgs& g) {
  const int nmax = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double work = static_cast<double>(g.M) * g.N * g.K;
  const double t = work / 262144.0;
  return t >= nmax ? nmax : (t < 1 ? 1 : static_cast<int>(t));
}

// ---- blocking ----------------------------------------------------------------------
struct Blocking {
  int64_t kc, mc, nc;
  int64_t rows_outer_bytes;  // a K block of packed B up to this size runs row panels outer
};

int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

Blocking blocking_for(const PackedKernel& pk, int64_t K, int64_t m_thread, int64_t n_thread,
                      int nthr) {
  const CpuFeatures& f = cpu_features();
  const int64_t l1 = f.l1d_clamped, l2 = f.l2_clamped, l3 = f.l3_clamped;
  const int64_t eb = pk.elem_bytes;
  Blocking b;
  // Row panels outer when a K block of B fits in half of L2 (see run_packed).
  b.rows_outer_bytes = l2 / 2;
  // KC: the kernel's share of L1 for one B micro-panel (KC x NR); balanced over K.
  const int64_t kc0 = clampi(l1 * pk.kc_l1_pct / 100 / (pk.nr * eb), 128, pk.kc_max) / 8 * 8;
  const int64_t nkb = ceil_div(K, kc0);
  b.kc = round_up(ceil_div(K, nkb), imax(8, pk.kpack));
  // MC: the kernel's share of L2 for the A block (MC x KC).
  b.mc = clampi(l2 * pk.mc_l2_pct / 100 / (b.kc * eb), pk.mr, 1024) / pk.mr * pk.mr;
  int64_t nc;
  if (m_thread <= b.mc) {
    // One M block: B is packed per K block (KC x NC) and used at once, next to the
    // A block in L2.
    const int64_t a_bytes = round_up(m_thread, pk.mr) * b.kc * eb;
    nc = (l2 * 3 / 4 - a_bytes) / (b.kc * eb) / pk.nr * pk.nr;
  } else {
    // NC: the thread's packed B (all of K x NC) within its share of L3.
    const int64_t budget = clampi(l3 / 2 / nthr, 512 << 10, 8 << 20);
    nc = budget / (round_up(K, 8) * eb) / pk.nr * pk.nr;
    // ... and a K block of it (KC x NC) within half of L2, so that row panels run
    // outer (see run_packed; with an L2 of 256 KiB or less the clamp below keeps 4
    // panels instead). More NC blocks means A is packed more often (once per NC
    // block), and that is still faster. Two threads, best of 15: 2048^3 59-63 -> 53-56
    // ms, 2048x3456x512 25-28 -> 23-24 ms; 2048x1024x1024 (one thread) 28 -> 23-26 ms.
    nc = imin(nc, b.rows_outer_bytes / (b.kc * eb) / pk.nr * pk.nr);
  }
  nc = clampi(nc, 4 * pk.nr, 4096);
  // Even NC blocks over the thread's columns.
  const int64_t nnb = ceil_div(n_thread, nc);
  b.nc = round_up(ceil_div(n_thread, nnb), pk.nr);
  return b;
}

// ---- packed path -------------------------------------------------------------------
// fp32 A is read in place (PackedKernel::micro_direct) for up to this many B panels per
// thread. Granite Rapids-class VM, median of 5+ calls, packed vs direct: 128x16x64 3.3 vs
// 2.1 us (one thread), 2048x64x256 0.49 vs 0.37 ms (one thread), 2048x512x415 2.84 vs
// 2.46 ms, 2048x1024x479 (32 panels a thread) 6.70 vs 5.90 ms; 64 panels were within
// the noise. A row stride that is a multiple of 4 KiB puts a tile's 14 rows in one L1
// set (2048x512x1024, one thread: 13.0 vs 13.9 ms), so those keep packing beyond 2
// panels (2048x64x1024: 2.25 vs 1.76 ms direct).
constexpr int64_t kDirectMaxPanels = 32;
bool reads_a_in_place(const PackedKernel& pk, const GemmArgs& g, bool bf16, int64_t npanels) {
  return pk.micro_direct && !bf16 && g.sak == 1 &&
         (npanels <= 2 || (npanels <= kDirectMaxPanels && (g.sam * 4) % 4096 != 0));
}

bool run_packed(const PackedKernel& pk, const GemmArgs& g, bool bf16, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1, const Blocking& bl) {
  if (m0 >= m1 || n0 >= n1) return true;
  const int mr = pk.mr, nr = pk.nr;
  const int64_t kp = pk.kpack, eb = pk.elem_bytes, ib = bf16 ? 2 : 4;
  const int64_t K = g.K, kc = bl.kc, nkb = ceil_div(K, kc);
  const int64_t kc_pad = round_up(kc, kp);
  const int64_t nc_max = imin(bl.nc, round_up(n1 - n0, nr));
  const int64_t mc_max = imin(bl.mc, round_up(m1 - m0, mr));
  // One M block (small M): pack B one K block at a time, used at once from L2 (the
  // BLIS order). Otherwise pack all of K for this NC block once and reuse it for every
  // M block.
  const bool one_mblock = m1 - m0 <= bl.mc;
  // Read fp32 A in place when each A panel would serve only a few B panels: packing it
  // costs more than the contiguous loads save (see kDirectMaxPanels).
  const bool direct = reads_a_in_place(pk, g, bf16, ceil_div(n1 - n0, nr));
  const int64_t bslots = one_mblock ? 1 : nkb;
  char* bbuf = static_cast<char*>(tls_buffer(kBufB, bslots * kc_pad * nc_max * eb));
  char* abuf = static_cast<char*>(tls_buffer(kBufA, kc_pad * mc_max * eb));
  // mc_max and nc_max are whole tiles, so every tile's partial sums fit (TileEpi::w).
  float* scratch = nullptr;
  const int64_t ldw = nc_max;
  if (bf16 && nkb > 1) {
    scratch = static_cast<float*>(tls_buffer(kBufC, sizeof(float) * mc_max * ldw));
    if (!scratch) return false;
  }
  if (!bbuf || !abuf) return false;
  if (pk.begin) pk.begin();
  const char* A = static_cast<const char*>(g.A);
  const char* B = static_cast<const char*>(g.B);
  char* C = static_cast<char*>(g.C);

  for (int64_t jc = n0; jc < n1; jc += bl.nc) {
    const int64_t ncur = imin(bl.nc, n1 - jc), npan = ceil_div(ncur, nr);
    const int64_t bblk = kc_pad * npan * nr;  // elements per packed K block of B
    auto pack_b_block = [&](int64_t b, char* dst) {
      const int64_t pc = b * kc, kcur = imin(kc, K - pc);
      pk.pack_b(B + (pc * g.sbk + jc * g.sbn) * ib, g.sbk, g.sbn, bf16, kcur, ncur, dst);
    };
    if (!one_mblock)
      for (int64_t b = 0; b < nkb; ++b) pack_b_block(b, bbuf + b * bblk * eb);
    for (int64_t ic = m0; ic < m1; ic += bl.mc) {
      const int64_t mcur = imin(bl.mc, m1 - ic), mpan = ceil_div(mcur, mr);
      for (int64_t b = 0; b < nkb; ++b) {
        const int64_t pc = b * kc, kcur = imin(kc, K - pc), kpad = round_up(kcur, kp);
        if (one_mblock) pack_b_block(b, bbuf);
        const char* bblock = one_mblock ? bbuf : bbuf + b * bblk * eb;
        // Direct: only a partial last row panel is packed; full ones are read in place.
        const int64_t packed_from = direct ? (mcur / mr) * mr : 0;
        const bool rows_outer = kpad * ncur * eb <= bl.rows_outer_bytes;
        // Row panels outer (below) pack A one panel at a time, right before its row of
        // tiles: the packed panel is still in L1 for its first tile, and L2 holds B's K
        // block and one A panel instead of the whole MC x KC block. Ice Lake-SP, two
        // threads, median of per-round ratios over the whole-block packing (11 rounds):
        // 2048^3 1.05x (NN) and 1.07x (NT), 1024^3 1.07x, 4096x1024x1024 1.05x; (7
        // rounds) bf16 1.05x, the AVX2 kernel 1.01x, the dlrm set's layers 0.98-1.04x.
        const bool a_per_panel = rows_outer && !direct;
        if (packed_from < mcur && !a_per_panel)
          pk.pack_a(A + ((ic + packed_from) * g.sam + pc * g.sak) * ib, g.sam, g.sak, bf16,
                    mcur - packed_from, kcur, abuf + packed_from * kpad * eb);
        TileEpi e{};
        e.accumulate = b > 0;
        e.final = b == nkb - 1;
        e.relu = g.relu;
        e.c_bf16 = bf16;
        e.ldc = g.ldc;
        e.ldw = bf16 ? ldw : g.ldc;
        // While panel jp's tiles run, each one prefetches a slice of panel jp+1 into L2:
        // its first tile would otherwise stall on lines from L3 or DRAM (2048^3: +5%).
        const int64_t pan_bytes = kpad * nr * eb, pan_lines = ceil_div(pan_bytes, 64);
        const int64_t pf_lines = ceil_div(pan_lines, mpan);
        // A K block of B within half of L2: each row panel of A runs along all of it
        // (the A panel stays in L1, B streams from L2), so C is written row-block by
        // row-block in ascending lines instead of one 32-column strip at a time.
        // Two threads, median of 20+ calls, column- vs row-panel order: 2048x512x13 0.34
        // vs 0.20 ms, 2048x512x64 0.70 vs 0.51, 2048x512x256 1.88 vs 1.71, 2048x512x415
        // 2.71 vs 2.56; with a 2 MB block (2048x1024x479) 6.3 vs 6.7, so not there.
        auto tile = [&](int64_t jp, int64_t ip, bool pf_next) {
          const int64_t j = jp * nr, col = jc + j, i = ip * mr, row = ic + i;
          const char* bpan = bblock + jp * pan_bytes;
          e.n = static_cast<int>(imin(nr, ncur - j));
          e.bias = g.bias ? g.bias + col : nullptr;
          e.m = static_cast<int>(imin(mr, mcur - i));
          e.c = C + (row * g.ldc + col) * ib;
          e.w = bf16 ? (scratch ? scratch + i * ldw + j : nullptr)
                     : reinterpret_cast<float*>(C) + row * g.ldc + col;
          if (pf_next)
            for (int64_t l = ip * pf_lines; l < imin((ip + 1) * pf_lines, pan_lines); ++l)
              __builtin_prefetch(bpan + pan_bytes + l * 64, 0, 2);
          if (i < packed_from)
            pk.micro_direct(kcur, reinterpret_cast<const float*>(A) + row * g.sam + pc, g.sam,
                            bpan, e);
          else
            pk.micro(kpad, abuf + (a_per_panel ? 0 : ip * kpad * mr * eb), bpan, e);
        };
        if (rows_outer) {
          // These tiles are short (small K blocks), too short to hide C's latency behind
          // their K loop: pull the next tile's C lines into L1 (a read prefetch: this
          // file is built without -mprfchw, so GCC emits prefetcht0) while this one
          // runs (bf16 partial sums go to the scratch, not C). Two threads, median of
          // 300 calls: 2048x512x13 0.21 -> 0.14 ms, 128x512x13 27 -> 22 us, 2048x512x64
          // 0.52 -> 0.46 ms.
          const bool pf_c = !bf16 || e.final;
          // always_inline: GCC 12 drops calls to an out-of-line function that only
          // prefetches (it counts prefetches as having no effect).
          auto prefetch_c = [&](int64_t jp, int64_t ip) __attribute__((always_inline)) {
            const int64_t rows = imin(mr, mcur - ip * mr), bytes = imin(nr, ncur - jp * nr) * ib;
            const char* c = C + ((ic + ip * mr) * g.ldc + jc + jp * nr) * ib;
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + r * g.ldc * ib + o, 1, 3);
          };
          for (int64_t ip = 0; ip < mpan; ++ip) {
            if (a_per_panel)
              pk.pack_a(A + ((ic + ip * mr) * g.sam + pc * g.sak) * ib, g.sam, g.sak, bf16,
                        imin(mr, mcur - ip * mr), kcur, abuf);
            for (int64_t jp = 0; jp < npan; ++jp) {
              if (pf_c && jp + 1 < npan) prefetch_c(jp + 1, ip);
              else if (pf_c && ip + 1 < mpan) prefetch_c(0, ip + 1);
              tile(jp, ip, false);
            }
          }
        } else {
          for (int64_t jp = 0; jp < npan; ++jp)
            for (int64_t ip = 0; ip < mpan; ++ip) tile(jp, ip, jp + 1 < npan);
        }
      }
    }
  }
  if (pk.end) pk.end();
  return true;
}

// Split C into mt x nt thread rectangles (mt * nt = nthr) minimizing the modelled
// per-thread time: compute on padded tiles + packing of the B panel and A blocks (none
// when A is read in place) + C rows shared across threads. Threads whose row segments
// of C are shorter than a 4 KiB page share every page of C and slow each other down
// (likely the L2 streamer fetching lines the other thread owns). Two threads, C++ loop,
// columns vs rows split: 128x512x13 24 vs 11 us, 128x64x256 22 vs 16 us, 2048x64x256
// 0.23 vs 0.17 ms, 2048x128x256 0.47 vs 0.38 ms: 0.4-1.5 ns per C element, charged as
// 2 model units (~0.7 ns each). Columns where A is read in place: 2048x512x3456 21 vs
// 22.8 ms. (The A term still assumes one repack per 1024 columns; with NC capped at 512
// for fp32 K >= 512 it undercounts by about 2x. The model was measured as it is.)
void choose_grid(const GemmArgs& g, const PackedKernel& pk, bool bf16, int nthr, int& mt,
                 int& nt) {
  const int64_t pm = ceil_div(g.M, pk.mr), pn = ceil_div(g.N, pk.nr);
  double best = -1;
  mt = 1;
  nt = nthr;
  for (int a = 1; a <= nthr; ++a) {
    if (nthr % a) continue;
    const int bb = nthr / a;
    const double tm = static_cast<double>(ceil_div(pm, a) * pk.mr);
    const double tn = static_cast<double>(ceil_div(pn, bb) * pk.nr);
    const double flops_per_cycle = 2.0 * pk.mr * pk.nr / (pk.mr + 2);  // rough
    double cost = tm * tn * g.K / flops_per_cycle + tn * g.K;
    if (!reads_a_in_place(pk, g, bf16, static_cast<int64_t>(tn) / pk.nr))
      cost += tm * g.K * ceil_div(static_cast<int64_t>(tn), 1024);
    if (bb > 1 && tn * (bf16 ? 2 : 4) < 4096) cost += 2 * tm * tn;
    if (best < 0 || cost < best) {
      best = cost;
      mt = a;
      nt = bb;
    }
  }
}

void zero_k(const GemmArgs& g, bool bf16) {
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      float v = g.bias ? g.bias[j] : 0.f;
      if (g.relu && v < 0.f) v = 0.f;
      if (bf16) static_cast<uint16_t*>(g.C)[i * g.ldc + j] = f32_to_bf16(v);
      else static_cast<float*>(g.C)[i * g.ldc + j] = v;
    }
}

// Runs fn(t) for t in [0, ntasks) over up to ntasks threads (robust to getting fewer).
template <typename Fn>
bool parallel_tasks(int ntasks, Fn fn) {
  std::atomic<bool> ok{true};
  if (ntasks <= 1) {
    const bool r = fn(0);
    tls_release_large();
    return r;
  }
#pragma omp parallel num_threads(ntasks)
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    for (int t = tid; t < ntasks; t += nt)
      if (!fn(t)) ok.store(false, std::memory_order_relaxed);
    tls_release_large();
  }
  return ok.load();
}

// Range [r0, r1) of task t out of n over `units` aligned units of size `al`.
void split_range(int64_t len, int64_t al, int t, int n, int64_t& r0, int64_t& r1) {
  const int64_t units = ceil_div(len, al);
  r0 = imin(len, units * t / n * al);
  r1 = imin(len, units * (t + 1) / n * al);
}

const char* path_name(const GemmArgs& g, Path p, Isa isa, bool bf16) {
  switch (p) {
    case Path::empty: return "empty";
    case Path::zero_k: return "zero_k";
    case Path::small_rowb: return "avx2:small_m_rowb";
    case Path::small_dot_n: return "avx2:small_m_dot";
    case Path::small_dot_m: return "avx2:small_n_dot";
    case Path::gemv: return "avx512:gemv";
    case Path::packed: return choose_kernel(isa, bf16, g.N)->name;
  }
  return "?";
}

}  // namespace

const char* gemm_path(const GemmArgs& g, DType dtype) {
  const Isa isa = active_isa();
  const bool bf16 = dtype == DType::bf16;
  return path_name(g, choose_path(g, isa, bf16), isa, bf16);
}

void gemm(const GemmArgs& g, DType dtype) {
  const bool bf16 = dtype == DType::bf16;
  const Isa isa = active_isa();
  const Path path = choose_path(g, isa, bf16);
  if (path == Path::empty) return;
  if (path == Path::zero_k) return zero_k(g, bf16);
  int nthr = threads_for(g);
  bool ok = true;
  switch (path) {
    case Path::small_rowb: {
      nthr = static_cast<int>(imin(nthr, ceil_div(g.N, 16)));
      ok = parallel_tasks(nthr, [&](int t) {
        int64_t r0, r1;
        split_range(g.N, 16, t, nthr, r0, r1);
        return r0 >= r1 || small_m_rowb_avx2(g, bf16, r0, r1);
      });
      break;
    }
    case Path::small_dot_n: {
      nthr = static_cast<int>(imin(nthr, ceil_div(g.N, 8)));
      ok = parallel_tasks(nthr, [&](int t) {
        int64_t r0, r1;
        split_range(g.N, 8, t, nthr, r0, r1);
        return r0 >= r1 || small_dot_avx2(g, bf16, true, r0, r1);
      });
      break;
    }
    case Path::small_dot_m: {
      nthr = static_cast<int>(imin(nthr, ceil_div(g.M, 6)));
      ok = parallel_tasks(nthr, [&](int t) {
        int64_t r0, r1;
        split_range(g.M, 6, t, nthr, r0, r1);
        return r0 >= r1 || small_dot_avx2(g, bf16, false, r0, r1);
      });
      break;
    }
    case Path::gemv: {
      nthr = static_cast<int>(imin(nthr, ceil_div(g.M, 8)));
      ok = parallel_tasks(nthr, [&](int t) {
        int64_t r0, r1;
        split_range(g.M, 8, t, nthr, r0, r1);
        if (r0 < r1) gemv_f32(g, r0, r1);
        return true;
      });
      break;
    }
    default: {
      const PackedKernel& pk = *choose_kernel(isa, bf16, g.N);
      int mt, nt;
      choose_grid(g, pk, bf16, nthr, mt, nt);
      const Blocking bl = blocking_for(pk, g.K, round_up(ceil_div(g.M, mt), pk.mr),
                                       round_up(ceil_div(g.N, nt), pk.nr), nthr);
      ok = parallel_tasks(nthr, [&](int t) {
        int64_t m0, m1, n0, n1;
        split_range(g.M, pk.mr, t / nt, mt, m0, m1);
        split_range(g.N, pk.nr, t % nt, nt, n0, n1);
        return run_packed(pk, g, bf16, m0, m1, n0, n1, bl);
      });
      break;
    }
  }
  if (!ok) throw std::bad_alloc();
}

}  // namespace pdb::cpu

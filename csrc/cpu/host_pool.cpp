#include "cpu/host_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace pdb::cpu {
namespace {

constexpr size_t kHuge = size_t{2} << 20;

// Default cache limit: PYDEEPBENCH_HOST_POOL_MB, else 1/8 of physical memory, at most
// 4 GiB (enough for a sweep's largest outputs; small next to its tables).
size_t default_limit() {
  if (const char* s = std::getenv("PYDEEPBENCH_HOST_POOL_MB"))
    return static_cast<size_t>(std::strtoull(s, nullptr, 10)) << 20;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const size_t phys = pages > 0 && page > 0 ? static_cast<size_t>(pages) * page : 0;
  const size_t cap = size_t{4} << 30;
  return phys / 8 < cap ? phys / 8 : cap;
}

struct Pool {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // size -> block
  HostPoolStats stats;
  Pool() { stats.limit_bytes = default_limit(); }

  // Unmaps the largest cached blocks until the cache fits `limit`. Caller holds mu.
  void trim(size_t limit) {
    while (stats.cached_bytes > limit && !free_blocks.empty()) {
      auto it = std::prev(free_blocks.end());
      munmap(it->second, it->first);
      stats.cached_bytes -= it->first;
      free_blocks.erase(it);
    }
  }
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: tensors may release blocks at exit
  return *p;
}

void* map_aligned(size_t cap) {
  // Over-map by 2 MiB and cut the misaligned head and the tail away.
  void* raw = mmap(nullptr, cap + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t r = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t a = (r + kHuge - 1) & ~(kHuge - 1);
  if (a > r) munmap(raw, a - r);
  if (const size_t tail = r + cap + kHuge - (a + cap))
    munmap(reinterpret_cast<void*>(a + cap), tail);
  void* p = reinterpret_cast<void*>(a);
  madvise(p, cap, MADV_HUGEPAGE);  // advice only: without THP the block still works
  return p;
}

}  // namespace

void* host_acquire(size_t bytes, size_t* cap) {
  const size_t want = (bytes + kHuge - 1) / kHuge * kHuge;
  Pool& P = pool();
  {
    std::lock_guard<std::mutex> g(P.mu);
    // The smallest cached block that fits and wastes at most a quarter of itself.
    auto it = P.free_blocks.lower_bound(want);
    if (it != P.free_blocks.end() && it->first - want <= it->first / 4) {
      void* p = it->second;
      *cap = it->first;
      P.stats.cached_bytes -= it->first;
      P.stats.live_bytes += it->first;
      ++P.stats.hits;
      P.free_blocks.erase(it);
      return p;
    }
    ++P.stats.misses;
  }
  void* p = map_aligned(want);
  if (!p) return nullptr;
  *cap = want;
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.live_bytes += want;
  return p;
}

void host_release(void* p, size_t cap) {
  if (!p) return;
  Pool& P = pool();
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.live_bytes -= cap;
  if (cap > P.stats.limit_bytes) {
    munmap(p, cap);
    return;
  }
  // Ahead of equal-sized blocks, so the next acquire of this size (lower_bound) takes
  // the block freed last, the one most likely still in cache: a sweep's repeated calls
  // then reuse one output block instead of cycling through every cached one.
  P.free_blocks.emplace_hint(P.free_blocks.lower_bound(cap), cap, p);
  P.stats.cached_bytes += cap;
  P.trim(P.stats.limit_bytes);
}

void host_pool_set_limit(size_t bytes) {
  Pool& P = pool();
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.limit_bytes = bytes;
  P.trim(bytes);
}

void host_pool_release_cached() {
  Pool& P = pool();
  std::lock_guard<std::mutex> g(P.mu);
  P.trim(0);
}

HostPoolStats host_pool_stats() {
  Pool& P = pool();
  std::lock_guard<std::mutex> g(P.mu);
  return P.stats;
}

}  // namespace pdb::cpu

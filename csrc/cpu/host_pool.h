// Host memory for tensors the native ops own: embedding tables and large outputs.
//
// Blocks are mmap'd, 2 MiB aligned and advised MADV_HUGEPAGE, so a table gathered at
// random costs one TLB entry per 2 MiB instead of per 4 KiB (on a VM with nested paging
// each TLB miss is a long page walk; 1.1-1.2x on the dlrm-mlperf gather kernel on our CI
// VM). Freed blocks are kept, up to a limit, and handed out again: glibc returns large
// frees to the OS, so every large torch.empty pays its page faults again (tens of ms per
// 32 MB on such a VM), which PyTorch's CUDA caching allocator avoids on GPUs and nothing
// avoids on CPUs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pdb::cpu {

struct HostPoolStats {
  uint64_t hits = 0, misses = 0;  // acquisitions served from / not from the pool
  size_t cached_bytes = 0;        // freed bytes held for reuse
  size_t live_bytes = 0;          // bytes handed out and not yet released
  size_t limit_bytes = 0;         // most bytes the pool keeps cached
};

// A block of at least `bytes` (rounded up to 2 MiB), 2 MiB aligned; *cap gets its size.
// Returns nullptr when the OS refuses the memory.
void* host_acquire(size_t bytes, size_t* cap);
// Gives a block back: cached for reuse while the cache stays within the limit, else
// unmapped.
void host_release(void* p, size_t cap);
// Sets the cache limit (0: keep nothing), dropping cached blocks over it.
void host_pool_set_limit(size_t bytes);
// Unmaps every cached block (the limit stays): before a memory check, so that memory
// held for reuse by the last case counts as available to the next.
void host_pool_release_cached();
HostPoolStats host_pool_stats();

}  // namespace pdb::cpu

// Host-side helpers shared by the CUDA ops: launch checks that become Python
// exceptions, the current device's compute capability, and the opt-in to more than
// 48 KiB of dynamic shared memory (per kernel and device, done once).
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <sstream>
#include <stdexcept>

namespace pdb::cuda {

// A failed CUDA call surfaces in Python as RuntimeError with the op and the CUDA reason.
inline void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  std::ostringstream os;
  os << what << ": " << cudaGetErrorName(err) << " (" << cudaGetErrorString(err) << ")";
  throw std::runtime_error(os.str());
}

// Call right after a <<<>>> launch: launch-configuration errors are reported here.
inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

inline int current_device() {
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

inline int compute_capability_major(int dev) {
  int major = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev),
             "cudaDeviceGetAttribute");
  return major;
}

// Kernels asking for more than 48 KiB of dynamic shared memory must opt in, once
// per device. `done` is a per-kernel bitmask of devices (the first 64).
template <typename Kernel>
void ensure_dynamic_smem(Kernel kernel, int bytes, int dev, std::atomic<uint64_t>& done) {
  if (bytes <= 48 * 1024) return;
  const uint64_t bit = dev < 64 ? (uint64_t{1} << dev) : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
             "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  done.fetch_or(bit, std::memory_order_acq_rel);
}

}  // namespace pdb::cuda

// Device queries for the Python layer: the CUDA module imports without a driver,
// and these report why no device can be used instead of failing at import.
#include <cuda_runtime.h>

#include <string>

namespace pdb::cuda {

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    *why = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later queries start clean
    return 0;
  }
  return n;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace pdb::cuda

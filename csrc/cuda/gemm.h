// CUDA GEMM: C[M,N] = act(A[M,K] @ B[K,N] + bias[N]), fp32 accumulate.
// A and B are strided views with unit stride along one of their two dimensions
// (row-major or transposed, no copy); C is row-major with leading dimension ldc.
// This header has no CUDA dependency: the pybind11 binding (a host .cpp) includes it.
#pragma once
#include <cstdint>

#include "common/tensor.h"

// Dynamic shared memory requested by the tensor-core GEMM kernels at launch (bytes):
// 3 stages x (A tile + B tile) x 10 KiB. gemm.cu static_asserts it equals the real
// request; tests/test_cuda_build.py reads it and checks it against the sm_80 and sm_90
// per-block limits (163 KiB and 227 KiB). The fp32 SIMT kernel uses static smem only.
#define PDB_GEMM_TC_DYNAMIC_SMEM_BYTES 61440

namespace pdb::cuda {

struct GemmArgs {
  int64_t M, N, K;
  const void* A; int64_t sam, sak;  // element strides of A along M and K (one must be 1)
  const void* B; int64_t sbk, sbn;  // element strides of B along K and N (one must be 1)
  void* C; int64_t ldc;             // C row-major, unit stride along N
  const float* bias;                // N floats on the device, or nullptr
  bool relu;
};

// dtype f32: SIMT fp32 kernel, or TF32 tensor cores when allow_tf32.
// dtype bf16/f16: tensor cores (mma.sync m16n8k16), output in the input dtype.
// Enqueues on `stream` (a cudaStream_t; nullptr = legacy default stream) on the current
// device. Throws std::invalid_argument for unsupported arguments and std::runtime_error
// for CUDA errors.
void gemm(const GemmArgs& args, DType dtype, bool allow_tf32, void* stream);

}  // namespace pdb::cuda

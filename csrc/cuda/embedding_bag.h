// CUDA EmbeddingBag forward, torch.nn.functional.embedding_bag semantics (no padding_idx):
// out[b, :] = reduce_{i in bag b} (psw[i] *) weight[indices[i], :], fp32 accumulate and
// fp32 output. No CUDA dependency: the pybind11 binding includes this header.
#pragma once
#include <cstdint>

#include "common/tensor.h"

namespace pdb::cuda {

enum class BagMode : int { sum = 0, mean = 1, max = 2 };

struct EmbeddingBagArgs {
  const void* weight; int64_t rows, D, ldw;  // weight[rows, D], unit stride along D
  DType weight_dtype;  // f32, bf16 or f16; or u8: 8-bit rowwise rows of D codes followed by
                       // the row's fp32 scale and bias (ldw >= D + 8 bytes)
  const void* indices; int64_t n_indices;     // contiguous, i32 or i64 (= index_dtype)
  const void* offsets; int64_t n_offsets;     // contiguous, same dtype as indices
  DType index_dtype;
  bool include_last_offset;  // bags = n_offsets - 1 and offsets[bags] ends the last bag;
                             // otherwise bags = n_offsets and the last bag ends at n_indices
  BagMode mode;
  const void* per_sample_weights;  // n_indices values (weight_dtype or f32), sum only; or null
  DType psw_dtype;
  float* out; int64_t ldo;  // out[bags, D] fp32, unit stride along D
};

// Enqueues on `stream` (cudaStream_t; nullptr = legacy default stream) on the current
// device. Indices must be in [0, rows): the caller validates them (the kernel does not
// clamp them). Bag bounds taken from offsets are clamped to [0, n_indices], and offsets is
// never read past its n_offsets entries. Empty bags give zeros in every mode.
void embedding_bag(const EmbeddingBagArgs& args, void* stream);

}  // namespace pdb::cuda

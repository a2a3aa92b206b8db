// Batched multi-table embedding bags (TorchRec KJT-like layout) on the CPU.
//
// T tables share one row-major weight (R_total, D); table t owns global rows
// [table_offsets[t], table_offsets[t+1]). indices (N) hold LOCAL row ids, offsets
// (T*B+1) delimit bags, table-major: bag (t, b) is g = t*B + b and spans
// indices[offsets[g] : offsets[g+1]]. The pooled output is (B, T*D) with bag (t, b)
// at out[b, t*D : (t+1)*D].
//
// Every entry point assumes validate_bags() passed (the binding calls it first):
// kernels trust the offsets and indices and never re-check them.
#pragma once
#include <cstdint>

#include "common/tensor.h"

namespace pdb::cpu {

enum : int { kEmbSum = 0, kEmbMean = 1, kEmbMax = 2 };

struct BagsLayout {
  const int64_t* table_offsets;  // T+1, non-decreasing, [0] == 0, [T] == R_total
  int64_t T, B, N, D, R_total;
  const void* indices;  // N local row ids, int32 or int64 (idx64)
  const void* offsets;  // T*B+1 values of the same dtype as indices
  bool idx64;
};

// Throws std::invalid_argument (ValueError) naming the first bad table offset,
// bag offset or index. Reads only table_offsets[0..T], offsets[0..T*B], indices[0..N).
void validate_bags(const BagsLayout& L);

// argmax values for the max-mode backward must be -1 or a row of bag (t, b)'s table.
void validate_argmax(const BagsLayout& L, const int64_t* argmax, int64_t am_stride);

struct EmbFwdArgs {
  BagsLayout L;
  // f32 / bf16 / f16 rows, row stride w_stride, unit column stride; or u8: 8-bit
  // rowwise-quantized rows in FBGEMM's fused layout, D uint8 codes then the row's fp32
  // scale and bias (value = scale * code + bias; a row is D + 8 bytes, w_stride bytes
  // apart). The output is fp32 for every dtype.
  const void* weight;
  DType wdtype;
  int64_t w_stride;
  float* out;  // (B, T*D), row stride out_stride
  int64_t out_stride;
  int mode;
  const float* psw;  // N weights (sum only) or nullptr
  int64_t* argmax;   // (B, T*D) global winning rows (max only) or nullptr
  int64_t am_stride;
};
void embedding_bags_forward(const EmbFwdArgs& a);

struct EmbBwdArgs {
  BagsLayout L;
  const float* grad_out;  // (B, T*D)
  int64_t go_stride;
  float* grad_weight;  // (R_total, D), accumulated into
  int64_t gw_stride;
  int mode;
  const float* psw;
  const int64_t* argmax;  // max mode
  int64_t am_stride;
};
void embedding_bags_backward_dense(const EmbBwdArgs& a);

// Fused sparse optimizer step: aggregates each touched row's gradient (duplicates
// summed in index order, so the result is deterministic and independent of the
// thread count), then updates that row once. momentum == nullptr: SGD; otherwise
// row-wise Adagrad (momentum has R_total floats). Needs R_total, N and T*B < 2^32.
struct EmbSparseStepArgs {
  BagsLayout L;
  void* weight;  // f32 or bf16
  DType wdtype;
  int64_t w_stride;
  float* momentum;
  const float* grad_out;
  int64_t go_stride;
  float lr, eps;
  int mode;  // sum or mean
  const float* psw;
};
void embedding_bags_sparse_step(const EmbSparseStepArgs& a);

namespace detail {
// Per-ISA pieces (embedding_bag_avx2.cpp is built with -mavx2 -mfma -mf16c,
// embedding_bag_avx512.cpp with CMake's AVX-512 flags, no BF16 intrinsic).
void forward_avx512(const EmbFwdArgs& a);
void forward_avx2(const EmbFwdArgs& a);
void backward_dense_avx2(const EmbBwdArgs& a);
// keys: sorted (global_row << 32 | position), n of them; bag_of[position] = g.
void sparse_apply_avx512(const EmbSparseStepArgs& a, const uint64_t* keys,
                         const uint32_t* bag_of, float* gbuf, int64_t gbuf_stride);
void sparse_apply_avx2(const EmbSparseStepArgs& a, const uint64_t* keys, const uint32_t* bag_of,
                       float* gbuf, int64_t gbuf_stride);
}  // namespace detail

}  // namespace pdb::cpu

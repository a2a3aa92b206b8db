// Python passes each tensor as (data_ptr, sizes, strides, dtype_code): the binding
// layer only validates, dispatches on dtype and calls, and links no libtorch.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "common/check.h"
#include "common/tensor.h"

namespace pdb {

struct TensorArg {
  void* data;
  std::vector<int64_t> sizes, strides;
  DType dtype;

  int64_t dim() const { return static_cast<int64_t>(sizes.size()); }
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : sizes) n *= s;
    return n;
  }
};

inline TensorArg tensor_arg(const pybind11::tuple& t, const char* name) {
  PDB_CHECK(t.size() == 4, name, ": expected (data_ptr, sizes, strides, dtype)");
  TensorArg a;
  a.data = reinterpret_cast<void*>(t[0].cast<uintptr_t>());
  a.sizes = t[1].cast<std::vector<int64_t>>();
  a.strides = t[2].cast<std::vector<int64_t>>();
  const int code = t[3].cast<int>();
  PDB_CHECK(code >= 0 && code <= static_cast<int>(DType::i64), name, ": unknown dtype code ", code);
  a.dtype = static_cast<DType>(code);
  PDB_CHECK(a.sizes.size() == a.strides.size(), name, ": sizes and strides differ in rank");
  for (size_t i = 0; i < a.sizes.size(); ++i) {
    PDB_CHECK(a.sizes[i] >= 0, name, ": negative size");
    PDB_CHECK(a.strides[i] >= 0, name, ": negative strides are not supported");
  }
  PDB_CHECK(a.data != nullptr || a.numel() == 0, name, ": null data pointer");
  return a;
}

inline void check_dtype(const TensorArg& a, DType want, const char* name) {
  PDB_CHECK(a.dtype == want, name, " must be ", dtype_name(want), ", got ", dtype_name(a.dtype));
}

inline void check_rank(const TensorArg& a, int64_t rank, const char* name) {
  PDB_CHECK(a.dim() == rank, name, " must be ", rank, "-D, got ", a.dim(), "-D");
}

// An optional fp32 bias of N contiguous elements (None -> nullptr), as the GEMM epilogues
// of every backend read it.
inline const float* bias_arg(const pybind11::object& bias, int64_t N) {
  if (bias.is_none()) return nullptr;
  const TensorArg t = tensor_arg(bias.cast<pybind11::tuple>(), "bias");
  check_rank(t, 1, "bias");
  check_dtype(t, DType::f32, "bias");
  PDB_CHECK(t.sizes[0] == N && (N <= 1 || t.strides[0] == 1), "bias must be contiguous with ",
            N, " elements, got ", t.sizes[0]);
  return static_cast<const float*>(t.data);
}

}  // namespace pdb

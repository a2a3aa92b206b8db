// Python passes each tensor as (data_ptr, sizes, strides, dtype_code): the binding
// layer only validates, dispatches on dtype and calls, and links no libtorch.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/check.h"
#include "common/tensor.h"

namespace pdb {

struct TensorArg {
  static constexpr int kMaxDim = 8;
  void* data;
  int64_t sizes[kMaxDim], strides[kMaxDim];
  int ndim;
  DType dtype;

  int64_t dim() const { return ndim; }
};

namespace detail {
// Reads a tuple or list of ints (torch.Size, Tensor.stride()) into out; returns its length.
// Plain CPython calls, no temporaries: this runs for every tensor of every native call,
// and at DLRM's smallest layers the call is mostly this kind of overhead.
inline int read_ints(PyObject* seq, int64_t* out, const char* name, const char* what) {
  PDB_CHECK(PyTuple_Check(seq) || PyList_Check(seq), name, ": ", what, " must be a tuple or list");
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PDB_CHECK(n <= TensorArg::kMaxDim, name, ": ", what, " has more than ", TensorArg::kMaxDim,
            " dimensions");
  PyObject** items = PySequence_Fast_ITEMS(seq);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PDB_CHECK(PyLong_Check(items[i]), name, ": ", what, " must be ints");
    out[i] = PyLong_AsLongLong(items[i]);
    if (out[i] == -1 && PyErr_Occurred()) throw pybind11::error_already_set();
  }
  return static_cast<int>(n);
}
}  // namespace detail

inline TensorArg tensor_arg(const pybind11::tuple& t, const char* name) {
  PDB_CHECK(t.size() == 4, name, ": expected (data_ptr, sizes, strides, dtype)");
  PyObject* const* f = &PyTuple_GET_ITEM(t.ptr(), 0);
  PDB_CHECK(PyLong_Check(f[0]) && PyLong_Check(f[3]), name,
            ": data_ptr and dtype code must be ints");
  TensorArg a;
  // Not PyLong_AsVoidPtr: it takes a negative int as an address.
  const unsigned long long ptr = PyLong_AsUnsignedLongLong(f[0]);
  if (ptr == static_cast<unsigned long long>(-1) && PyErr_Occurred())
    throw pybind11::error_already_set();
  a.data = reinterpret_cast<void*>(static_cast<uintptr_t>(ptr));
  a.ndim = detail::read_ints(f[1], a.sizes, name, "sizes");
  const int nstrides = detail::read_ints(f[2], a.strides, name, "strides");
  const long code = PyLong_AsLong(f[3]);
  if (code == -1 && PyErr_Occurred()) throw pybind11::error_already_set();
  PDB_CHECK(code >= 0 && code <= static_cast<int>(DType::u8), name, ": unknown dtype code ", code);
  a.dtype = static_cast<DType>(code);
  PDB_CHECK(a.ndim == nstrides, name, ": sizes and strides differ in rank");
  int64_t numel = 1;
  for (int i = 0; i < a.ndim; ++i) {
    PDB_CHECK(a.sizes[i] >= 0, name, ": negative size");
    PDB_CHECK(a.strides[i] >= 0, name, ": negative strides are not supported");
    // Checked: a wrapped product of huge sizes could read as empty and pass a null
    // pointer below.
    PDB_CHECK(!__builtin_mul_overflow(numel, a.sizes[i], &numel), name,
              ": the number of elements overflows int64");
  }
  PDB_CHECK(a.data != nullptr || numel == 0, name, ": null data pointer");
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

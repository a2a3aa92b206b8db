#include "bindings/tensor_arg.h"
#include "cpu/gemm.h"

namespace py = pybind11;

namespace pdb {

namespace {

// Validates the operands and builds the kernel's arguments (shared by gemm and gemm_path).
cpu::GemmArgs gemm_args(const py::tuple& a_, const py::tuple& b_, const py::tuple& c_,
                        const py::object& bias_, bool relu, DType* dtype) {
  const TensorArg a = tensor_arg(a_, "a"), b = tensor_arg(b_, "b"), c = tensor_arg(c_, "out");
  check_rank(a, 2, "a");
  check_rank(b, 2, "b");
  check_rank(c, 2, "out");
  PDB_CHECK(a.dtype == DType::f32 || a.dtype == DType::bf16,
            "gemm supports float32 and bfloat16, got ", dtype_name(a.dtype));
  check_dtype(b, a.dtype, "b");
  check_dtype(c, a.dtype, "out");
  const int64_t M = a.sizes[0], K = a.sizes[1], N = b.sizes[1];
  PDB_CHECK(b.sizes[0] == K, "gemm: a is ", M, "x", K, " but b is ", b.sizes[0], "x", N);
  PDB_CHECK(c.sizes[0] == M && c.sizes[1] == N, "gemm: out must be ", M, "x", N);
  PDB_CHECK(c.strides[1] == 1 && c.strides[0] >= N, "gemm: out must be row-major");
  const float* bias = bias_arg(bias_, N);
  *dtype = a.dtype;
  return {M,      N,           K,           a.data, a.strides[0], a.strides[1],
          b.data, b.strides[0], b.strides[1], c.data, c.strides[0], bias, relu};
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](py::tuple a, py::tuple b, py::tuple out, py::object bias, bool relu) {
        DType dtype;
        const cpu::GemmArgs g = gemm_args(a, b, out, bias, relu, &dtype);
        py::gil_scoped_release nogil;
        cpu::gemm(g, dtype);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias") = py::none(),
      py::arg("relu") = false, "out = relu?(a @ b + bias), fp32 accumulate");
  m.def(
      "gemm_path",
      [](py::tuple a, py::tuple b, py::tuple out, py::object bias, bool relu) {
        DType dtype;
        // Two statements: argument evaluation order is unspecified, so dtype could be
        // read before gemm_args sets it.
        const cpu::GemmArgs g = gemm_args(a, b, out, bias, relu, &dtype);
        return std::string(cpu::gemm_path(g, dtype));
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias") = py::none(),
      py::arg("relu") = false, "The code path gemm() takes for these operands (for tests)");
}

}  // namespace pdb

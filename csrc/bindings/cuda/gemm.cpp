// _C_cuda.gemm(a, b, out, bias, relu, stream, allow_tf32=False)
// out[M,N] = relu?(a[M,K] @ b[K,N] + bias[N]) on the CUDA stream `stream`.
#include "bindings/tensor_arg.h"
#include "cuda/gemm.h"

namespace py = pybind11;

namespace pdb {
namespace {

// Unit stride along one dimension; a dimension of size <= 1 may have any stride.
bool has_unit_stride(const TensorArg& t) {
  for (int d = 0; d < 2; ++d)
    if (t.strides[d] == 1 || t.sizes[d] <= 1) return true;
  return false;
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](py::tuple a_, py::tuple b_, py::tuple c_, py::object bias_, bool relu, uintptr_t stream,
         bool allow_tf32) {
        const TensorArg a = tensor_arg(a_, "a"), b = tensor_arg(b_, "b"), c = tensor_arg(c_, "out");
        check_rank(a, 2, "a");
        check_rank(b, 2, "b");
        check_rank(c, 2, "out");
        PDB_CHECK(a.dtype == DType::f32 || a.dtype == DType::bf16 || a.dtype == DType::f16,
                  "gemm supports float32, bfloat16 and float16, got ", dtype_name(a.dtype));
        check_dtype(b, a.dtype, "b");
        check_dtype(c, a.dtype, "out");
        const int64_t M = a.sizes[0], K = a.sizes[1], N = b.sizes[1];
        PDB_CHECK(b.sizes[0] == K, "gemm: a is ", M, "x", K, " but b is ", b.sizes[0], "x", N);
        PDB_CHECK(c.sizes[0] == M && c.sizes[1] == N, "gemm: out must be ", M, "x", N, ", got ",
                  c.sizes[0], "x", c.sizes[1]);
        PDB_CHECK(has_unit_stride(a), "gemm: a needs unit stride along one dimension, strides (",
                  a.strides[0], ", ", a.strides[1], "); make it contiguous first");
        PDB_CHECK(has_unit_stride(b), "gemm: b needs unit stride along one dimension, strides (",
                  b.strides[0], ", ", b.strides[1], "); make it contiguous first");
        PDB_CHECK((c.strides[1] == 1 || N <= 1) && (c.strides[0] >= N || M <= 1),
                  "gemm: out must be row-major, strides (", c.strides[0], ", ", c.strides[1], ")");
        const float* bias = bias_arg(bias_, N);
        cuda::GemmArgs g{M,      N,            K,            a.data, a.strides[0], a.strides[1],
                         b.data, b.strides[0], b.strides[1], c.data, c.strides[0], bias, relu};
        py::gil_scoped_release nogil;
        cuda::gemm(g, a.dtype, allow_tf32, reinterpret_cast<void*>(stream));
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"), py::arg("relu"),
      py::arg("stream"), py::arg("allow_tf32") = false,
      "out = relu?(a @ b + bias) on CUDA stream `stream` (an int, e.g. "
      "torch.cuda.current_stream().cuda_stream), fp32 accumulate. a, b: (data_ptr, sizes, "
      "strides, dtype) with unit stride along one dimension; out row-major; bias fp32 [N] or "
      "None. float32 uses TF32 tensor cores only when allow_tf32.");
}

}  // namespace pdb

// pydeepbench._C_cuda: the CUDA extension. One bind_<op> per op, each in its own file.
#include <pybind11/pybind11.h>

#include <string>

namespace py = pybind11;

namespace pdb::cuda {
int device_count(std::string* why);
int runtime_version();
}  // namespace pdb::cuda

namespace pdb {
void bind_gemm(py::module_& m);
void bind_embedding_bag(py::module_& m);
}  // namespace pdb

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "pydeepbench CUDA kernels";
  m.def("device_count", [] {
    std::string why;
    const int n = pdb::cuda::device_count(&why);
    return py::make_tuple(n, why);
  }, "(number of CUDA devices, reason when none)");
  m.def("runtime_version", &pdb::cuda::runtime_version);
#ifdef PDB_CUDA_ARCHS
  m.attr("archs") = PDB_CUDA_ARCHS;
#endif
  pdb::bind_gemm(m);
  pdb::bind_embedding_bag(m);
}

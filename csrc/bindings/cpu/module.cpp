// pydeepbench._C: the CPU extension. One bind_<op> per op, each in its own file.
#include <pybind11/pybind11.h>

#include "common/cpu_features.h"

namespace py = pybind11;

namespace pdb {
void bind_gemm(py::module_& m);
void bind_roofline(py::module_& m);
void bind_embedding_bag(py::module_& m);
void bind_host_pool(py::module_& m);
void bind_interaction(py::module_& m);
}  // namespace pdb

PYBIND11_MODULE(_C, m) {
  m.doc() = "pydeepbench CPU kernels";
  m.def("isa", [] { return std::string(pdb::isa_name(pdb::active_isa())); },
        "ISA the CPU kernels dispatch to (capped by PYDEEPBENCH_ISA)");
  m.def("cpu_info", [] {
    const auto& f = pdb::cpu_features();
    py::dict d;
    d["brand"] = f.brand;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512vl"] = f.avx512vl;
    d["avx512_bf16"] = f.avx512_bf16;
    d["amx_bf16"] = f.amx_bf16;
    d["l1d_bytes"] = f.l1d_bytes;
    d["l2_bytes"] = f.l2_bytes;
    d["l3_bytes"] = f.l3_bytes;
    d["l2_clamped"] = f.l2_clamped;  // what the kernels size by (cpu_features.h)
    return d;
  });
  m.attr("compiler") = PDB_COMPILER;
  m.attr("build_commit") = PDB_BUILD_COMMIT;  // "" when not built from a git checkout
  pdb::bind_gemm(m);
  pdb::bind_roofline(m);
  pdb::bind_embedding_bag(m);
  pdb::bind_host_pool(m);
  pdb::bind_interaction(m);
}

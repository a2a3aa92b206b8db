#include "bindings/tensor_arg.h"
#include "cpu/roofline.h"

namespace py = pybind11;

namespace pdb {
namespace {
float* contiguous_f32(const TensorArg& t, const char* name) {
  check_dtype(t, DType::f32, name);
  check_rank(t, 1, name);
  PDB_CHECK(t.sizes[0] <= 1 || t.strides[0] == 1, name, " must be contiguous");
  return static_cast<float*>(t.data);
}
}  // namespace

void bind_roofline(py::module_& m) {
  m.def("fma_probe_supported", [](const std::string& dtype) {
    return cpu::fma_probe_supported(dtype.c_str());
  });
  m.def("fma_probe_kind", [](const std::string& dtype) {
    return std::string(cpu::fma_probe_kind(dtype.c_str()));
  });
  m.def(
      "fma_probe",
      [](const std::string& dtype, int64_t iters) {
        cpu::ProbeResult r;
        {
          py::gil_scoped_release nogil;
          r = cpu::fma_probe(dtype.c_str(), iters);
        }
        return py::make_tuple(r.flops, r.checksum, r.threads);
      },
      py::arg("dtype"), py::arg("iters"), "Returns (flops, checksum, threads)");
  m.def("stream_copy", [](py::tuple dst_, py::tuple src_) {
    const TensorArg dst = tensor_arg(dst_, "dst"), src = tensor_arg(src_, "src");
    float* d = contiguous_f32(dst, "dst");
    const float* s = contiguous_f32(src, "src");
    PDB_CHECK(dst.sizes[0] == src.sizes[0], "stream_copy: length mismatch");
    py::gil_scoped_release nogil;
    cpu::stream_copy(d, s, dst.sizes[0]);
  });
  m.def("stream_triad", [](py::tuple a_, py::tuple b_, py::tuple c_, float scalar) {
    const TensorArg a = tensor_arg(a_, "a"), b = tensor_arg(b_, "b"), c = tensor_arg(c_, "c");
    float* pa = contiguous_f32(a, "a");
    const float* pb = contiguous_f32(b, "b");
    const float* pc = contiguous_f32(c, "c");
    PDB_CHECK(a.sizes[0] == b.sizes[0] && a.sizes[0] == c.sizes[0], "stream_triad: length mismatch");
    py::gil_scoped_release nogil;
    cpu::stream_triad(pa, pb, pc, scalar, a.sizes[0]);
  });
  m.attr("GATHER_AHEAD") = cpu::kGatherAhead;
  m.attr("GATHER_STRIDE") = cpu::kGatherStride;
  m.attr("GATHER_ROW_FLOATS") = cpu::kGatherRowFloats;
  m.def(
      "gather_probe",
      [](py::tuple table_, py::tuple idx_) {
        const TensorArg t = tensor_arg(table_, "table"), ix = tensor_arg(idx_, "idx");
        check_dtype(t, DType::f32, "table");
        check_rank(t, 2, "table");
        PDB_CHECK(t.strides[1] == 1 && (t.sizes[0] <= 1 || t.strides[0] == t.sizes[1]),
                  "gather_probe: table must be contiguous");
        check_dtype(ix, DType::i64, "idx");
        check_rank(ix, 1, "idx");
        PDB_CHECK(ix.sizes[0] <= 1 || ix.strides[0] == 1, "gather_probe: idx must be contiguous");
        py::gil_scoped_release nogil;
        return cpu::gather_probe(static_cast<const float*>(t.data), t.sizes[0], t.sizes[1],
                                 static_cast<const int64_t*>(ix.data), ix.sizes[0]);
      },
      py::arg("table"), py::arg("idx"),
      "Sum of table[idx][:, roofline.gather_columns(row_len)]: the random-row gather probe");
}

}  // namespace pdb

#include "bindings/tensor_arg.h"
#include "cpu/interaction.h"

namespace py = pybind11;

namespace pdb {

void bind_interaction(py::module_& m) {
  m.def(
      "dot_interaction",
      [](py::tuple x_, py::tuple emb_, py::tuple out_) {
        const TensorArg x = tensor_arg(x_, "x"), e = tensor_arg(emb_, "emb"),
                        o = tensor_arg(out_, "out");
        for (const TensorArg* t : {&x, &e, &o}) check_rank(*t, 2, "dot_interaction operands");
        check_dtype(x, DType::f32, "x");
        check_dtype(e, DType::f32, "emb");
        check_dtype(o, DType::f32, "out");
        const int64_t B = x.sizes[0], D = x.sizes[1];
        PDB_CHECK(D >= 1, "dot_interaction: x must have at least one column");
        PDB_CHECK(e.sizes[0] == B, "dot_interaction: emb has ", e.sizes[0], " rows, x has ", B);
        PDB_CHECK(e.sizes[1] % D == 0, "dot_interaction: emb width ", e.sizes[1],
                  " is not a multiple of D=", D);
        const int64_t F = 1 + e.sizes[1] / D;
        PDB_CHECK(o.sizes[0] == B && o.sizes[1] == D + F * (F - 1) / 2,
                  "dot_interaction: out must be ", B, "x", D + F * (F - 1) / 2);
        for (const TensorArg* t : {&x, &e, &o})
          PDB_CHECK(t->sizes[1] <= 1 || t->strides[1] == 1,
                    "dot_interaction: rows must be contiguous");
        const cpu::InteractionArgs a{B,
                                     F,
                                     D,
                                     static_cast<const float*>(x.data),
                                     x.strides[0],
                                     static_cast<const float*>(e.data),
                                     e.strides[0],
                                     static_cast<float*>(o.data),
                                     o.strides[0]};
        py::gil_scoped_release nogil;
        cpu::dot_interaction(a);
      },
      py::arg("x"), py::arg("emb"), py::arg("out"),
      "out = [x, strict lower triangle of T T^T], T = [x; emb rows] per sample");
}

}  // namespace pdb

// _C_cuda.embedding_bag(weight, indices, offsets, out, mode, per_sample_weights,
//                       include_last_offset, stream)
#include "bindings/tensor_arg.h"
#include "cuda/embedding_bag.h"

namespace py = pybind11;

namespace pdb {
namespace {

void check_contiguous_1d(const TensorArg& t, const char* name) {
  check_rank(t, 1, name);
  PDB_CHECK(t.sizes[0] <= 1 || t.strides[0] == 1, name, " must be contiguous, stride ",
            t.strides[0]);
}

}  // namespace

void bind_embedding_bag(py::module_& m) {
  m.def(
      "embedding_bag",
      [](py::tuple weight_, py::tuple indices_, py::tuple offsets_, py::tuple out_, int mode,
         py::object psw_, bool include_last_offset, uintptr_t stream) {
        const TensorArg w = tensor_arg(weight_, "weight"), idx = tensor_arg(indices_, "indices"),
                        off = tensor_arg(offsets_, "offsets"), out = tensor_arg(out_, "out");
        check_rank(w, 2, "weight");
        PDB_CHECK(w.dtype == DType::f32 || w.dtype == DType::bf16 || w.dtype == DType::f16 ||
                      w.dtype == DType::u8,
                  "embedding_bag: weight must be float32, bfloat16, float16 or uint8 (8-bit "
                  "rowwise), got ", dtype_name(w.dtype));
        // uint8 rows: D codes, then the fp32 scale and bias (cuda/embedding_bag.h).
        const bool q8 = w.dtype == DType::u8;
        PDB_CHECK(!q8 || w.sizes[1] > 8, "embedding_bag: a uint8 (8-bit rowwise) weight needs ",
                  "D + 8 columns (D codes, then the fp32 scale and bias), got ", w.sizes[1]);
        PDB_CHECK(w.sizes[1] <= 1 || w.strides[1] == 1, "embedding_bag: weight must be row-major");
        check_contiguous_1d(idx, "indices");
        check_contiguous_1d(off, "offsets");
        PDB_CHECK(idx.dtype == DType::i32 || idx.dtype == DType::i64,
                  "embedding_bag: indices must be int32 or int64, got ", dtype_name(idx.dtype));
        check_dtype(off, idx.dtype, "offsets");
        PDB_CHECK(mode >= 0 && mode <= 2, "embedding_bag: mode must be 0 (sum), 1 (mean) or 2 "
                  "(max), got ", mode);
        const int64_t n_off = off.sizes[0];
        PDB_CHECK(!include_last_offset || n_off >= 1,
                  "embedding_bag: include_last_offset needs at least one offset");
        const int64_t bags = include_last_offset ? n_off - 1 : n_off;
        const int64_t D = q8 ? w.sizes[1] - 8 : w.sizes[1];
        check_rank(out, 2, "out");
        check_dtype(out, DType::f32, "out");
        PDB_CHECK(out.sizes[0] == bags && out.sizes[1] == D, "embedding_bag: out must be ", bags,
                  "x", D, ", got ", out.sizes[0], "x", out.sizes[1]);
        PDB_CHECK((D <= 1 || out.strides[1] == 1) && (bags <= 1 || out.strides[0] >= D),
                  "embedding_bag: out must be row-major");
        cuda::EmbeddingBagArgs a{};
        a.weight = w.data;
        a.rows = w.sizes[0];
        a.D = D;
        a.ldw = w.strides[0];
        a.weight_dtype = w.dtype;
        a.indices = idx.data;
        a.n_indices = idx.sizes[0];
        a.offsets = off.data;
        a.n_offsets = n_off;
        a.index_dtype = idx.dtype;
        a.include_last_offset = include_last_offset;
        a.mode = static_cast<cuda::BagMode>(mode);
        a.per_sample_weights = nullptr;
        a.psw_dtype = DType::f32;
        if (!psw_.is_none()) {
          const TensorArg s = tensor_arg(psw_.cast<py::tuple>(), "per_sample_weights");
          check_contiguous_1d(s, "per_sample_weights");
          PDB_CHECK(mode == 0, "embedding_bag: per_sample_weights are only supported with mode "
                    "0 (sum)");
          PDB_CHECK(s.dtype == DType::f32 || (!q8 && s.dtype == w.dtype),
                    "embedding_bag: per_sample_weights must be float32",
                    q8 ? "" : " or ", q8 ? "" : dtype_name(w.dtype), ", got ", dtype_name(s.dtype));
          PDB_CHECK(s.sizes[0] == idx.sizes[0], "embedding_bag: per_sample_weights must have ",
                    idx.sizes[0], " elements (one per index), got ", s.sizes[0]);
          a.per_sample_weights = s.data;
          a.psw_dtype = s.dtype;
        }
        a.out = static_cast<float*>(out.data);
        a.ldo = out.strides[0];
        py::gil_scoped_release nogil;
        cuda::embedding_bag(a, reinterpret_cast<void*>(stream));
      },
      py::arg("weight"), py::arg("indices"), py::arg("offsets"), py::arg("out"), py::arg("mode"),
      py::arg("per_sample_weights"), py::arg("include_last_offset"), py::arg("stream"),
      "torch.nn.functional.embedding_bag forward into out (float32 [bags, D]) on CUDA stream "
      "`stream`. mode: 0 sum, 1 mean, 2 max. indices and offsets: contiguous, both int32 or "
      "both int64; indices must already be validated to lie in [0, weight rows). Empty bags "
      "give zeros.");
}

}  // namespace pdb

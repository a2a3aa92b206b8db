// Batched multi-table embedding bags: shapes, dtypes and every index are checked
// here (ValueError) before a kernel touches memory. See cpu/embedding_bag.h.
#include "bindings/tensor_arg.h"
#include "cpu/embedding_bag.h"

namespace py = pybind11;

namespace pdb {
namespace {

const char* const kModes[] = {"sum", "mean", "max"};

struct Bags {
  cpu::BagsLayout L;
  TensorArg table_offsets, indices, offsets;
};

void check_contiguous_1d(const TensorArg& t, const char* name) {
  check_rank(t, 1, name);
  PDB_CHECK(t.sizes[0] <= 1 || t.strides[0] == 1, name, " must be contiguous");
}

// A (rows, cols) matrix with unit column stride (row stride may exceed cols).
void check_rowmajor(const TensorArg& t, const char* name, int64_t rows, int64_t cols) {
  check_rank(t, 2, name);
  PDB_CHECK(t.sizes[0] == rows && t.sizes[1] == cols, name, " must be ", rows, "x", cols, ", got ",
            t.sizes[0], "x", t.sizes[1]);
  PDB_CHECK(cols <= 1 || t.strides[1] == 1, name, " must have unit column stride");
  PDB_CHECK(rows <= 1 || t.strides[0] >= cols, name, " rows must not overlap (row stride ",
            t.strides[0], " < ", cols, ")");
}

// Layout checks shared by all entry points. D and R_total come from the weight
// (or grad_weight / grad_out); the index values are checked too.
Bags parse_bags(const py::tuple& toff_, const py::tuple& idx_, const py::tuple& off_, int64_t D,
                int64_t R_total) {
  Bags s{{}, tensor_arg(toff_, "table_offsets"), tensor_arg(idx_, "indices"),
         tensor_arg(off_, "offsets")};
  check_contiguous_1d(s.table_offsets, "table_offsets");
  check_dtype(s.table_offsets, DType::i64, "table_offsets");
  check_contiguous_1d(s.indices, "indices");
  check_contiguous_1d(s.offsets, "offsets");
  PDB_CHECK(s.indices.dtype == DType::i32 || s.indices.dtype == DType::i64,
            "indices must be int32 or int64, got ", dtype_name(s.indices.dtype));
  PDB_CHECK(s.offsets.dtype == s.indices.dtype, "offsets must have the dtype of indices (",
            dtype_name(s.indices.dtype), "), got ", dtype_name(s.offsets.dtype));
  const int64_t T = s.table_offsets.sizes[0] - 1;
  PDB_CHECK(T >= 1, "table_offsets must have T+1 >= 2 entries (one table at least)");
  const int64_t nb = s.offsets.sizes[0] - 1;
  PDB_CHECK(nb >= 0, "offsets must have T*B+1 entries, got an empty tensor");
  PDB_CHECK(nb % T == 0, "offsets has ", nb + 1, " entries; with T = ", T,
            " tables it must have T*B+1");
  cpu::BagsLayout& L = s.L;
  L.table_offsets = static_cast<const int64_t*>(s.table_offsets.data);
  L.T = T;
  L.B = nb / T;
  L.N = s.indices.sizes[0];
  L.D = D;
  L.R_total = R_total;
  L.indices = s.indices.data;
  L.offsets = s.offsets.data;
  L.idx64 = s.indices.dtype == DType::i64;
  cpu::validate_bags(L);
  return s;
}

void check_mode(int mode, bool has_psw) {
  PDB_CHECK(mode >= 0 && mode <= 2, "mode must be 0 (sum), 1 (mean) or 2 (max), got ", mode);
  PDB_CHECK(!has_psw || mode == cpu::kEmbSum,
            "per_sample_weights are only supported with mode 0 (sum), got mode ", mode, " (",
            kModes[mode], ")");
}

const float* parse_psw(const py::object& psw_, const cpu::BagsLayout& L) {
  if (psw_.is_none()) return nullptr;
  const TensorArg p = tensor_arg(psw_.cast<py::tuple>(), "per_sample_weights");
  check_contiguous_1d(p, "per_sample_weights");
  check_dtype(p, DType::f32, "per_sample_weights");
  PDB_CHECK(p.sizes[0] == L.N, "per_sample_weights must have one weight per index (", L.N,
            "), got ", p.sizes[0]);
  return static_cast<const float*>(p.data);
}

TensorArg parse_grad_out(const py::tuple& go_, const cpu::BagsLayout& L) {
  const TensorArg go = tensor_arg(go_, "grad_out");
  check_dtype(go, DType::f32, "grad_out");
  check_rowmajor(go, "grad_out", L.B, L.T * L.D);
  return go;
}

// Bytes [lo, hi) spanned by `rows` rows of `cols` elements, `stride` elements apart
// (empty when there are none): what a sparse step reads or writes of a tensor.
struct Span {
  uintptr_t lo = 0, hi = 0;
  Span() = default;
  Span(const void* p, int64_t rows, int64_t cols, int64_t stride, int esize) {
    if (p && rows > 0 && cols > 0) {
      lo = reinterpret_cast<uintptr_t>(p);
      hi = lo + static_cast<uintptr_t>((rows - 1) * stride + cols) * esize;
    }
  }
  bool overlaps(const Span& o) const { return lo < o.hi && o.lo < hi; }
};

// The steps update weight (and momentum) row by row while still reading grad_out and
// per_sample_weights for later rows: shared memory would hand the kernel values it has
// already overwritten. Byte ranges catch views of one storage and separate storages over
// the same memory alike; disjoint strided views interleaved in one buffer count as shared.
void refuse_overlap(const char* name, const Span& read, const char* updated, const Span& w) {
  PDB_CHECK(!read.overlaps(w), name, " shares memory with ", updated,
            ", which the step updates in place (it would read values it has already "
            "overwritten); pass a separate tensor, e.g. ", name, ".clone()");
}

}  // namespace

void bind_embedding_bag(py::module_& m) {
  m.def(
      "embedding_bags_forward",
      [](py::tuple weight_, py::tuple toff_, py::tuple idx_, py::tuple off_, py::tuple out_,
         int mode, py::object psw_, py::object argmax_) {
        check_mode(mode, !psw_.is_none());
        const TensorArg w = tensor_arg(weight_, "weight");
        check_rank(w, 2, "weight");
        PDB_CHECK(w.dtype == DType::f32 || w.dtype == DType::bf16 || w.dtype == DType::f16 ||
                      w.dtype == DType::u8,
                  "weight must be float32, bfloat16, float16 or uint8 (8-bit rowwise), got ",
                  dtype_name(w.dtype));
        check_rowmajor(w, "weight", w.sizes[0], w.sizes[1]);
        // uint8 rows: D codes, then the fp32 scale and bias (cpu/embedding_bag.h).
        const bool q8 = w.dtype == DType::u8;
        PDB_CHECK(!q8 || w.sizes[1] > 8, "a uint8 (8-bit rowwise) weight needs D + 8 columns ",
                  "(D codes, then the fp32 scale and bias), got ", w.sizes[1]);
        const int64_t D = q8 ? w.sizes[1] - 8 : w.sizes[1];
        const Bags s = parse_bags(toff_, idx_, off_, D, w.sizes[0]);
        const cpu::BagsLayout& L = s.L;
        const TensorArg out = tensor_arg(out_, "out");
        check_dtype(out, DType::f32, "out");
        check_rowmajor(out, "out", L.B, L.T * L.D);
        const float* psw = parse_psw(psw_, L);
        int64_t* am = nullptr;
        int64_t am_stride = 0;
        if (!argmax_.is_none()) {
          PDB_CHECK(mode == cpu::kEmbMax, "argmax is only produced by mode 2 (max)");
          const TensorArg a = tensor_arg(argmax_.cast<py::tuple>(), "argmax");
          check_dtype(a, DType::i64, "argmax");
          check_rowmajor(a, "argmax", L.B, L.T * L.D);
          am = static_cast<int64_t*>(a.data);
          am_stride = a.strides[0];
          // The max kernel tracks a lookup's position in its bag in 32-bit lanes: a longer
          // bag's argmax would index wild memory (int32 offsets cannot describe one).
          if (L.idx64 && L.N > INT32_MAX) {
            const int64_t* off = static_cast<const int64_t*>(L.offsets);
            for (int64_t g = 0; g < L.T * L.B; ++g)
              PDB_CHECK(off[g + 1] - off[g] <= INT32_MAX,
                        "mode 'max' with gradients supports bags of fewer than 2^31 lookups; "
                        "bag ", g, " has ", off[g + 1] - off[g]);
          }
        }
        cpu::EmbFwdArgs args{L,   w.data, w.dtype, w.strides[0], static_cast<float*>(out.data),
                             out.strides[0], mode, psw, am, am_stride};
        py::gil_scoped_release nogil;
        cpu::embedding_bags_forward(args);
      },
      py::arg("weight"), py::arg("table_offsets"), py::arg("indices"), py::arg("offsets"),
      py::arg("out"), py::arg("mode"), py::arg("per_sample_weights") = py::none(),
      py::arg("argmax") = py::none(),
      "Pooled lookups of T packed tables into out (B, T*D) f32; mode 0 sum, 1 mean, 2 max. "
      "argmax (int64 (B, T*D), max mode only) receives the winning global rows, -1 for empty bags.");

  m.def(
      "embedding_bags_backward_dense",
      [](py::tuple go_, py::tuple toff_, py::tuple idx_, py::tuple off_, py::tuple gw_, int mode,
         py::object psw_, py::object argmax_) {
        check_mode(mode, !psw_.is_none());
        const TensorArg gw = tensor_arg(gw_, "grad_weight");
        check_rank(gw, 2, "grad_weight");
        check_dtype(gw, DType::f32, "grad_weight");
        check_rowmajor(gw, "grad_weight", gw.sizes[0], gw.sizes[1]);
        const Bags s = parse_bags(toff_, idx_, off_, gw.sizes[1], gw.sizes[0]);
        const cpu::BagsLayout& L = s.L;
        const TensorArg go = parse_grad_out(go_, L);
        const float* psw = parse_psw(psw_, L);
        const int64_t* am = nullptr;
        int64_t am_stride = 0;
        if (mode == cpu::kEmbMax) {
          PDB_CHECK(!argmax_.is_none(), "mode 2 (max) backward needs the argmax from the forward");
          const TensorArg a = tensor_arg(argmax_.cast<py::tuple>(), "argmax");
          check_dtype(a, DType::i64, "argmax");
          check_rowmajor(a, "argmax", L.B, L.T * L.D);
          am = static_cast<const int64_t*>(a.data);
          am_stride = a.strides[0];
          cpu::validate_argmax(L, am, am_stride);
        } else {
          PDB_CHECK(argmax_.is_none(), "argmax is only used by mode 2 (max)");
        }
        cpu::EmbBwdArgs args{L,      static_cast<const float*>(go.data), go.strides[0],
                             static_cast<float*>(gw.data), gw.strides[0], mode, psw, am,
                             am_stride};
        py::gil_scoped_release nogil;
        cpu::embedding_bags_backward_dense(args);
      },
      py::arg("grad_out"), py::arg("table_offsets"), py::arg("indices"), py::arg("offsets"),
      py::arg("grad_weight"), py::arg("mode"), py::arg("per_sample_weights") = py::none(),
      py::arg("argmax") = py::none(),
      "grad_weight (R_total, D) f32 += d(out)/d(weight) applied to grad_out (B, T*D).");

  auto sparse_step = [](py::tuple w_, py::object mom_, py::tuple toff_, py::tuple idx_,
                        py::tuple off_, py::tuple go_, double lr, double eps, int mode,
                        py::object psw_) {
    check_mode(mode, !psw_.is_none());
    PDB_CHECK(mode != cpu::kEmbMax, "sparse optimizer steps support mode 0 (sum) or 1 (mean), not 2 (max)");
    const TensorArg w = tensor_arg(w_, "weight");
    check_rank(w, 2, "weight");
    PDB_CHECK(w.dtype == DType::f32 || w.dtype == DType::bf16,
              "weight must be float32 or bfloat16 for the sparse step, got ", dtype_name(w.dtype));
    check_rowmajor(w, "weight", w.sizes[0], w.sizes[1]);
    float* mom = nullptr;
    Span mom_span;
    if (!mom_.is_none()) {
      const TensorArg m = tensor_arg(mom_.cast<py::tuple>(), "momentum");
      check_contiguous_1d(m, "momentum");
      check_dtype(m, DType::f32, "momentum");
      PDB_CHECK(m.sizes[0] == w.sizes[0], "momentum must have one entry per weight row (",
                w.sizes[0], "), got ", m.sizes[0]);
      mom = static_cast<float*>(m.data);
      mom_span = Span(mom, 1, m.sizes[0], 0, 4);
    }
    const Bags s = parse_bags(toff_, idx_, off_, w.sizes[1], w.sizes[0]);
    const cpu::BagsLayout& L = s.L;
    const TensorArg go = parse_grad_out(go_, L);
    const float* psw = parse_psw(psw_, L);
    const Span w_span(w.data, w.sizes[0], w.sizes[1], w.strides[0], dtype_size(w.dtype));
    const Span go_span(go.data, L.B, L.T * L.D, go.strides[0], 4), psw_span(psw, 1, L.N, 0, 4);
    refuse_overlap("grad_out", go_span, "weight", w_span);
    refuse_overlap("per_sample_weights", psw_span, "weight", w_span);
    refuse_overlap("momentum", mom_span, "weight", w_span);
    refuse_overlap("grad_out", go_span, "momentum", mom_span);
    refuse_overlap("per_sample_weights", psw_span, "momentum", mom_span);
    PDB_CHECK(L.R_total <= (int64_t{1} << 32) && L.N < (int64_t{1} << 32) &&
                  L.T * L.B < (int64_t{1} << 32),
              "sparse steps support fewer than 2^32 rows, indices and bags");
    cpu::EmbSparseStepArgs args{L,   w.data, w.dtype, w.strides[0], mom,
                                static_cast<const float*>(go.data), go.strides[0],
                                static_cast<float>(lr), static_cast<float>(eps), mode, psw};
    py::gil_scoped_release nogil;
    cpu::embedding_bags_sparse_step(args);
  };

  m.def(
      "embedding_bags_sgd_step",
      [sparse_step](py::tuple w_, py::tuple toff_, py::tuple idx_, py::tuple off_, py::tuple go_,
                    double lr, int mode, py::object psw_) {
        sparse_step(w_, py::none(), toff_, idx_, off_, go_, lr, 0.0, mode, psw_);
      },
      py::arg("weight"), py::arg("table_offsets"), py::arg("indices"), py::arg("offsets"),
      py::arg("grad_out"), py::arg("lr"), py::arg("mode"), py::arg("per_sample_weights") = py::none(),
      "Fused sparse SGD: each touched row r: weight[r] -= lr * (aggregated gradient of r). "
      "Deterministic; rows that do not occur are not touched.");

  m.def(
      "embedding_bags_adagrad_step",
      [sparse_step](py::tuple w_, py::tuple mom_, py::tuple toff_, py::tuple idx_, py::tuple off_,
                    py::tuple go_, double lr, double eps, int mode, py::object psw_) {
        sparse_step(w_, mom_, toff_, idx_, off_, go_, lr, eps, mode, psw_);
      },
      py::arg("weight"), py::arg("momentum"), py::arg("table_offsets"), py::arg("indices"),
      py::arg("offsets"), py::arg("grad_out"), py::arg("lr"), py::arg("eps"), py::arg("mode"),
      py::arg("per_sample_weights") = py::none(),
      "Fused row-wise Adagrad (FBGEMM TBE): g = aggregated gradient of row r; "
      "momentum[r] += mean(g^2); weight[r] -= lr * g / (sqrt(momentum[r]) + eps).");
}

}  // namespace pdb

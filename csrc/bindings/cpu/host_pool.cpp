// HostBlock: a pooled host block exposed through the buffer protocol, so that
// torch.frombuffer can wrap it; the tensor's storage holds the block and releases it
// to the pool when the last view dies.
#include <pybind11/pybind11.h>

#include <new>

#include "common/check.h"
#include "cpu/host_pool.h"

namespace py = pybind11;

namespace pdb {
namespace {
class HostBlock {
 public:
  explicit HostBlock(size_t bytes) : bytes_(bytes) {
    PDB_CHECK(bytes > 0, "host_block: size must be positive");
    p_ = cpu::host_acquire(bytes, &cap_);
    if (!p_) throw std::bad_alloc();
  }
  HostBlock(const HostBlock&) = delete;
  HostBlock& operator=(const HostBlock&) = delete;
  ~HostBlock() { cpu::host_release(p_, cap_); }
  py::buffer_info info() {
    return py::buffer_info(p_, 1, py::format_descriptor<uint8_t>::format(), 1,
                           {static_cast<py::ssize_t>(bytes_)}, {1}, /*readonly=*/false);
  }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(p_); }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0, cap_ = 0;
};
}  // namespace

void bind_host_pool(py::module_& m) {
  py::class_<HostBlock>(m, "HostBlock", py::buffer_protocol())
      .def(py::init<size_t>(), py::arg("bytes"))
      .def_buffer(&HostBlock::info)
      .def_property_readonly("address", &HostBlock::address);
  m.def(
      "host_pool_set_limit", [](size_t bytes) { cpu::host_pool_set_limit(bytes); },
      py::arg("bytes"), "Most bytes of freed blocks the pool keeps (0: none)");
  m.def(
      "host_pool_release_cached", [] { cpu::host_pool_release_cached(); },
      "Unmap every freed block the pool holds for reuse");
  m.def("host_pool_stats", [] {
    const cpu::HostPoolStats s = cpu::host_pool_stats();
    py::dict d;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    d["cached_bytes"] = s.cached_bytes;
    d["live_bytes"] = s.live_bytes;
    d["limit_bytes"] = s.limit_bytes;
    return d;
  });
}

}  // namespace pdb

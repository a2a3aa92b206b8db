// Argument checks that surface in Python as ValueError (pybind11 maps
// std::invalid_argument) with a message a user can act on.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace pdb {
template <typename... Args>
[[noreturn]] inline void fail(const char* file, int line, Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  os << " [" << file << ":" << line << "]";
  throw std::invalid_argument(os.str());
}
}  // namespace pdb

#define PDB_CHECK(cond, ...)                                     \
  do {                                                           \
    if (!(cond)) ::pdb::fail(__FILE__, __LINE__, __VA_ARGS__);   \
  } while (0)

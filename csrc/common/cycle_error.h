#pragma once

// The error every walk over all positions raises for a module cycle, where
// PyTorch would recurse until the interpreter's limit.

#include <pybind11/pybind11.h>

#include <string>

namespace torchwalk {

// Raises RecursionError naming the module and its path (the last 200
// characters: a cycle found deep down has a long path); `walk` says what
// never ends, e.g. "its state_dict".
[[noreturn]] inline void raise_cycle(PyObject* module, const std::string& path, const char* walk) {
  constexpr size_t kShownPathLength = 200;
  std::string shown =
      path.size() <= kShownPathLength ? path : "..." + path.substr(path.size() - kShownPathLength);
  PyErr_Format(PyExc_RecursionError,
               "module graph has a cycle: the %s at '%s' contains itself, so %s never ends",
               Py_TYPE(module)->tp_name, shown.c_str(), walk);
  throw pybind11::error_already_set();
}

}  // namespace torchwalk

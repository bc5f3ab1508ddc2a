#pragma once

// Raising Python exceptions from C++: every error path sets the exception
// and throws pybind11's error_already_set, which the bindings turn back into
// the Python exception.

#include <pybind11/pybind11.h>

#include <string>

namespace torchwalk {

// Throws the Python exception that is already set.
[[noreturn]] inline void raise_python_error() { throw pybind11::error_already_set(); }

// `result`, or a throw of the exception set by the call that returned null.
inline PyObject* checked(PyObject* result) {
  if (result == nullptr) {
    raise_python_error();
  }
  return result;
}

[[noreturn]] inline void raise_error(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  raise_python_error();
}

// The error every walk over all positions raises for a module cycle, where
// PyTorch would recurse until the interpreter's limit: RecursionError naming
// the module and its path (the last 200 characters: a cycle found deep down
// has a long path); `walk` says what never ends, e.g. "its state_dict".
[[noreturn]] inline void raise_cycle(PyObject* module, const std::string& path, const char* walk) {
  constexpr size_t kShownPathLength = 200;
  std::string shown =
      path.size() <= kShownPathLength ? path : "..." + path.substr(path.size() - kShownPathLength);
  PyErr_Format(PyExc_RecursionError,
               "module graph has a cycle: the %s at '%s' contains itself, so %s never ends",
               Py_TYPE(module)->tp_name, shown.c_str(), walk);
  raise_python_error();
}

}  // namespace torchwalk

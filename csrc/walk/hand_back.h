#pragma once

// Shared by the walkers: how they give a question back to PyTorch, and how
// they read a module's instance dict the way attribute access would.

#include <pybind11/pybind11.h>

#include "walk/class_check.h"

namespace torchwalk {

namespace py = pybind11;

// Thrown where the fast path cannot promise PyTorch's answer (an overriding
// class, a non-str name, a dict subclass, ...). The entry points catch it and
// return std::nullopt so that Python calls PyTorch itself, which then gives
// its own result or its own error.
struct HandBack {};

[[noreturn]] inline void hand_back() { throw HandBack{}; }

// The object's instance dict (created if CPython stored the attributes
// inline), or a hand-back when it has none.
inline py::object instance_dict(PyObject* object) {
  PyObject* dict = PyObject_GenericGetDict(object, nullptr);
  if (dict == nullptr) {
    PyErr_Clear();
    hand_back();
  }
  return py::reinterpret_steal<py::object>(dict);
}

// `instance_dict[name]` when it is an exact dict (what `module._modules`
// returns for a class that keeps kReadsDicts); a hand-back otherwise. Owned:
// a later lookup in the same instance dict can run a key's __eq__.
inline py::object exact_dict_item(PyObject* dict, ModuleAttribute attribute) {
  PyObject* item = PyDict_GetItemWithError(dict, attribute_name(attribute));
  if (item == nullptr || !PyDict_CheckExact(item)) {
    PyErr_Clear();
    hand_back();
  }
  return py::reinterpret_borrow<py::object>(item);
}

// The module's class and instance keep `mask`; the instance dict is returned.
inline py::object checked_instance_dict(PyObject* module, AttributeMask mask) {
  ClassFacts facts = facts_of(Py_TYPE(module));
  if (!facts.is_module || !facts.keeps(mask)) {
    hand_back();
  }
  py::object dict = instance_dict(module);
  if (!instance_keeps(dict.ptr(), mask)) {
    hand_back();
  }
  return dict;
}

}  // namespace torchwalk

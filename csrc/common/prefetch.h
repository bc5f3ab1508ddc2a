#pragma once

// Prefetching for walks over large module trees (see walk_size.h).

#include <Python.h>

#include <cstddef>

namespace torchwalk {

// Asks for the cache lines of every child's object header (and the words
// before it, where CPython keeps the managed dict pointer).
inline void prefetch_children(PyObject* children) {
  Py_ssize_t cursor = 0;
  PyObject* name = nullptr;
  PyObject* child = nullptr;
  while (PyDict_Next(children, &cursor, &name, &child)) {
    __builtin_prefetch(child);
    __builtin_prefetch(reinterpret_cast<char*>(child) - 32);
  }
}

// The instance dict of `object`, if it has one already; never creates it.
inline PyObject* existing_instance_dict(PyObject* object) {
  if (Py_TYPE(object)->tp_dictoffset == 0) {
    return nullptr;
  }
  PyObject** dict = _PyObject_GetDictPtr(object);
  return dict == nullptr ? nullptr : *dict;
}

// A software pipeline over the siblings after `cursor`, whose headers
// prefetch_children asked for: the next sibling's dict object was asked for
// one step ago, so its values (where `_modules` and `_parameters` live) can
// be asked for now; the sibling after it gets its dict object asked for.
inline void prefetch_next_siblings(PyObject* children, Py_ssize_t cursor) {
  PyObject* name = nullptr;
  PyObject* next = nullptr;
  if (!PyDict_Next(children, &cursor, &name, &next)) {
    return;
  }
  if (PyObject* dict = existing_instance_dict(next)) {
    if (PyDict_Check(dict)) {
      auto* values = reinterpret_cast<char*>(reinterpret_cast<PyDictObject*>(dict)->ma_values);
      if (values != nullptr) {
        __builtin_prefetch(values);
        __builtin_prefetch(values + 64);
        __builtin_prefetch(values + 128);
      }
    }
  }
  if (PyDict_Next(children, &cursor, &name, &next)) {
    if (PyObject* dict = existing_instance_dict(next)) {
      __builtin_prefetch(dict);
    }
  }
}

}  // namespace torchwalk

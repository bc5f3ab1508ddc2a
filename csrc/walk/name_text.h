#pragma once

// Names as UTF-8 text, for walkers that build dotted names in C++ and make a
// str only for a name they hand out.

#include <pybind11/pybind11.h>

#include <cstring>

#include "walk/hand_back.h"

namespace torchwalk {

// The UTF-8 text of an exact str (a str subclass could override `+`, so it is
// handed back, as are lone surrogates, which have no UTF-8 form).
inline const char* utf8_of(PyObject* name, Py_ssize_t* size) {
  if (!PyUnicode_CheckExact(name)) {
    hand_back();
  }
  if (PyUnicode_IS_COMPACT_ASCII(name)) {  // most names: no call needed
    *size = PyUnicode_GET_LENGTH(name);
    return reinterpret_cast<const char*>(PyUnicode_1BYTE_DATA(name));
  }
  const char* text = PyUnicode_AsUTF8AndSize(name, size);
  if (text == nullptr) {
    PyErr_Clear();
    hand_back();
  }
  return text;
}

// A new str holding `size` bytes of UTF-8 text (`ascii` when every byte is).
inline PyObject* new_str(const char* text, size_t size, bool ascii) {
  PyObject* str = nullptr;
  if (ascii) {
    str = PyUnicode_New(static_cast<Py_ssize_t>(size), 127);
    if (str != nullptr) {
      std::memcpy(PyUnicode_1BYTE_DATA(str), text, size);
    }
  } else {
    str = PyUnicode_DecodeUTF8(text, static_cast<Py_ssize_t>(size), "strict");
  }
  if (str == nullptr) {
    throw pybind11::error_already_set();
  }
  return str;
}

}  // namespace torchwalk

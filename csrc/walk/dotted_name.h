#pragma once

// The one builder of dotted names, for every walk that names what it finds.
//
// The name of the module being visited is kept as UTF-8 text, grown and cut
// as a walk goes down and up, so that a str is only made for a name handed
// out (a 100,000-deep chain then costs memory for its frames, not for
// 100,000 names of growing length). PyTorch joins names in two ways, and
// each walk says which it follows:
//
// - Style::path, the traversal generators': a module is named
//   `prefix + ("." if prefix else "") + name`, and so is each tensor in it;
// - Style::key_prefix, state_dict's: a module's key prefix is
//   `prefix + name + "."`, and each tensor's key `prefix + name`.

#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "common/python_error.h"
#include "walk/hand_back.h"

namespace torchwalk {

namespace py = pybind11;

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
  if (!ascii) {
    return checked(PyUnicode_DecodeUTF8(text, static_cast<Py_ssize_t>(size), "strict"));
  }
  PyObject* str = checked(PyUnicode_New(static_cast<Py_ssize_t>(size), 127));
  std::memcpy(PyUnicode_1BYTE_DATA(str), text, size);
  return str;
}

class DottedName {
 public:
  enum class Style { path, key_prefix };

  // Starts at the root's prefix (an exact str, else a hand-back).
  DottedName(PyObject* prefix, Style style) : style_(style) { append_text(prefix); }

  size_t length() const { return text_.size(); }

  const std::string& text() const { return text_; }

  // Back up to an earlier length (a module's, when the walk returns to it).
  void truncate(size_t length) {
    text_.resize(length);
    if (first_non_ascii_ >= length) {
      first_non_ascii_ = std::string::npos;
    }
    if (length != length_of_whole_name_) {
      whole_name_ = py::object();
    }
  }

  // One level down, into the child called `name`.
  void descend(PyObject* name) {
    if (style_ == Style::key_prefix) {
      append_text(name);
      text_.push_back('.');
      return;
    }
    if (text_.empty()) {
      append_text(name);
      whole_name_ = py::reinterpret_borrow<py::object>(name);
      length_of_whole_name_ = text_.size();
      return;
    }
    whole_name_ = py::object();
    text_.push_back('.');
    append_text(name);
  }

  // A new str holding the whole text: for a path that is one name appended
  // to an empty prefix, the name itself ("" + "" + name is name in CPython).
  PyObject* to_str() const {
    if (whole_name_) {
      return Py_NewRef(whole_name_.ptr());
    }
    return new_str(text_.data(), text_.size(), is_ascii());
  }

  // A new str: a key prefix without its final ".", `prefix[:-1]`.
  PyObject* without_trailing_dot() const {
    return new_str(text_.data(), text_.empty() ? 0 : text_.size() - 1, is_ascii());
  }

  // A new str: the name of the member called `name` at this level.
  PyObject* joined_with(PyObject* name) {
    if (text_.empty()) {
      if (!PyUnicode_CheckExact(name)) {
        hand_back();  // "" + name raises, or calls a str subclass's __radd__
      }
      return Py_NewRef(name);  // "" + name is name itself in CPython
    }
    bool dot = style_ == Style::path;
    Py_ssize_t size = 0;
    const char* text = utf8_of(name, &size);
    if (is_ascii() && PyUnicode_IS_ASCII(name)) {
      // The common case, written straight into the new str.
      size_t length = text_.size() + dot + static_cast<size_t>(size);
      PyObject* joined = checked(PyUnicode_New(static_cast<Py_ssize_t>(length), 127));
      Py_UCS1* out = PyUnicode_1BYTE_DATA(joined);
      std::memcpy(out, text_.data(), text_.size());
      if (dot) {
        out[text_.size()] = '.';
      }
      std::memcpy(out + text_.size() + dot, text, static_cast<size_t>(size));
      return joined;
    }
    size_t length = text_.size();
    if (dot) {
      text_.push_back('.');
    }
    return str_then_cut(length, [&] { append_text(name); });
  }

  // A new str: the member name `prefix + suffix`, for an ASCII suffix.
  PyObject* joined_with(const char* ascii_suffix) {
    size_t length = text_.size();
    if (style_ == Style::path && !text_.empty()) {
      text_.push_back('.');
    }
    return str_then_cut(length, [&] { text_.append(ascii_suffix); });
  }

  // Hands back unless `joined_with(name)` would succeed (PyTorch builds the
  // name even where it does not yield it: a bad name fails the same way).
  static void check_joinable(PyObject* name) {
    Py_ssize_t size = 0;
    utf8_of(name, &size);
  }

 private:
  bool is_ascii() const { return first_non_ascii_ == std::string::npos; }

  void append_text(PyObject* name) {
    Py_ssize_t size = 0;
    const char* text = utf8_of(name, &size);
    if (!PyUnicode_IS_ASCII(name) && is_ascii()) {
      first_non_ascii_ = text_.size();
    }
    text_.append(text, static_cast<size_t>(size));
  }

  // Runs `append`, makes the str of the text, and cuts the text back to
  // `length`, also when either throws.
  template <typename Append>
  PyObject* str_then_cut(size_t length, Append append) {
    PyObject* joined = nullptr;
    try {
      append();
      joined = new_str(text_.data(), text_.size(), is_ascii());
    } catch (...) {
      truncate(length);
      throw;
    }
    truncate(length);
    return joined;
  }

  Style style_;
  std::string text_;
  size_t first_non_ascii_ = std::string::npos;
  py::object whole_name_;  // set while a path is exactly this one name
  size_t length_of_whole_name_ = 0;
};

}  // namespace torchwalk

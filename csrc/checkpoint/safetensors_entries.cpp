#include "checkpoint/safetensors_entries.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "common/gc_pause.h"
#include "common/python_error.h"

namespace torchwalk {
namespace {

// The text of a str (for messages and sorting).
std::string text_of(PyObject* str) {
  Py_ssize_t size = 0;
  const char* text = PyUnicode_AsUTF8AndSize(str, &size);
  if (text == nullptr) {
    raise_python_error();
  }
  return std::string(text, static_cast<size_t>(size));
}

std::string repr_of(PyObject* object) {
  auto repr = py::reinterpret_steal<py::object>(checked(PyObject_Repr(object)));
  return text_of(repr.ptr());
}

[[noreturn]] void fault(PyObject* name, const std::string& problem) {
  raise_error(PyExc_ValueError, "tensor " + repr_of(name) + ": " + problem);
}

// A JSON integer >= 0 (a bool is no integer here, as in the format).
bool count_of(PyObject* value, int64_t& count) {
  if (!PyLong_CheckExact(value)) {
    return false;
  }
  int overflow = 0;
  count = PyLong_AsLongLongAndOverflow(value, &overflow);
  if (count == -1 && PyErr_Occurred()) {
    raise_python_error();
  }
  return overflow == 0 && count >= 0;
}

PyObject* item(PyObject* info, const char* key) {
  PyObject* found = PyDict_GetItemString(info, key);  // borrowed; the dict is not changed
  return found;
}

struct Span {
  int64_t begin;
  int64_t end;
  PyObject* name;  // borrowed from the header, alive for the call
};

}  // namespace

py::list safetensors_entries(py::handle header, const SafetensorsFile& file) {
  if (!PyDict_Check(header.ptr())) {
    raise_error(PyExc_TypeError, "the header must be a dict");
  }
  GarbageCollectorPause pause;  // tens of thousands of new tuples
  std::vector<std::tuple<std::string, py::object, py::object>> entries;  // sort key, name, entry
  std::vector<Span> spans;
  entries.reserve(static_cast<size_t>(PyDict_GET_SIZE(header.ptr())));
  spans.reserve(entries.capacity());
  Py_ssize_t cursor = 0;
  PyObject* name = nullptr;
  PyObject* info = nullptr;
  while (PyDict_Next(header.ptr(), &cursor, &name, &info)) {
    if (!PyDict_Check(info)) {
      fault(name, "expected an object, got " + repr_of(info));
    }
    PyObject* dtype_name = item(info, "dtype");
    PyObject* shape = item(info, "shape");
    PyObject* offsets = item(info, "data_offsets");
    PyObject* dtype =
        dtype_name == nullptr ? nullptr : PyDict_GetItem(file.dtypes.ptr(), dtype_name);
    if (dtype == nullptr) {
      fault(name, "unknown dtype " + (dtype_name ? repr_of(dtype_name) : std::string("None")));
    }
    if (shape == nullptr || !PyList_Check(shape)) {
      fault(name, "bad shape " + (shape ? repr_of(shape) : std::string("None")));
    }
    Py_ssize_t dims = PyList_GET_SIZE(shape);
    auto shape_tuple = py::reinterpret_steal<py::object>(checked(PyTuple_New(dims)));
    int64_t numel = 1;
    bool overflow = false;
    for (Py_ssize_t dim = 0; dim < dims; ++dim) {
      PyObject* size_object = PyList_GET_ITEM(shape, dim);
      int64_t size = 0;
      if (!count_of(size_object, size)) {
        fault(name, "bad shape " + repr_of(shape));
      }
      overflow = overflow || __builtin_mul_overflow(numel, size, &numel);
      PyTuple_SET_ITEM(shape_tuple.ptr(), dim, Py_NewRef(size_object));
    }
    int64_t begin = 0;
    int64_t end = 0;
    if (offsets == nullptr || !PyList_Check(offsets) || PyList_GET_SIZE(offsets) != 2 ||
        !count_of(PyList_GET_ITEM(offsets, 0), begin) ||
        !count_of(PyList_GET_ITEM(offsets, 1), end) || begin > end) {
      fault(name, "bad data_offsets " + (offsets ? repr_of(offsets) : std::string("None")));
    }
    int64_t bits_per_element = PyLong_AsLongLong(PyTuple_GET_ITEM(dtype, 0));
    int64_t bits = 0;
    overflow = overflow || __builtin_mul_overflow(numel, bits_per_element, &bits);
    if (overflow || bits % 8 != 0 || end - begin != bits / 8) {
      fault(name, repr_of(shape) + " of " + text_of(dtype_name) + " does not take the " +
                      std::to_string(end - begin) + " bytes its offsets [" + std::to_string(begin) +
                      ", " + std::to_string(end) + "] hold");
    }
    auto nbytes = py::reinterpret_steal<py::object>(checked(PyLong_FromLongLong(end - begin)));
    auto offset =
        py::reinterpret_steal<py::object>(checked(PyLong_FromLongLong(file.data_start + begin)));
    // tuple.__new__(entry_type, fields): what a NamedTuple's __new__ does,
    // without its Python frame.
    auto fields = py::reinterpret_steal<py::object>(
        checked(PyTuple_Pack(5, PyTuple_GET_ITEM(dtype, 1), shape_tuple.ptr(), nbytes.ptr(),
                             file.path.ptr(), offset.ptr())));
    auto arguments = py::reinterpret_steal<py::object>(checked(PyTuple_Pack(1, fields.ptr())));
    auto entry = py::reinterpret_steal<py::object>(checked(PyTuple_Type.tp_new(
        reinterpret_cast<PyTypeObject*>(file.entry_type.ptr()), arguments.ptr(), nullptr)));
    entries.emplace_back(text_of(name), py::reinterpret_borrow<py::object>(name), std::move(entry));
    spans.push_back(Span{begin, end, name});
  }
  // The data must be covered exactly: each tensor starts where the one
  // before it ends, and the last ends where the file does.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  int64_t reached = 0;
  PyObject* previous = nullptr;
  for (const Span& span : spans) {
    if (span.begin != reached) {
      std::string before = previous ? "tensor " + repr_of(previous) : "the start of the data";
      fault(span.name, "at byte " + std::to_string(span.begin) +
                           (span.begin < reached ? " overlaps " : " leaves a gap after ") + before);
    }
    reached = span.end;
    previous = span.name;
  }
  if (reached > file.data_size) {
    raise_error(PyExc_ValueError, "truncated: its tensors need " + std::to_string(reached) +
                                      " bytes of data, the file has " +
                                      std::to_string(file.data_size));
  }
  if (reached < file.data_size) {
    raise_error(PyExc_ValueError, std::to_string(file.data_size - reached) +
                                      " bytes after the last tensor, which safetensors refuses");
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  py::list found(entries.size());
  for (size_t index = 0; index < entries.size(); ++index) {
    auto& [key, entry_name, entry] = entries[index];
    PyList_SET_ITEM(found.ptr(), static_cast<Py_ssize_t>(index),
                    checked(PyTuple_Pack(2, entry_name.ptr(), entry.ptr())));
  }
  return found;
}

}  // namespace torchwalk

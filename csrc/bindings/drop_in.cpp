#include "bindings/drop_in.h"

#include <structmember.h>

#include <cstddef>
#include <stdexcept>

namespace torchwalk {
namespace {

// Enough for every drop-in (named_modules has four parameters).
constexpr Py_ssize_t kMaxParameters = 8;

using Walker = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t);

struct DropIn {
  PyObject_HEAD vectorcallfunc vectorcall;
  Walker walker;
  PyObject* walker_object;  // the _C function whose C function `walker` is
  PyObject* function;       // answers when the walker does not
  Py_ssize_t positional;    // parameters that can be given by position
  Py_ssize_t count;         // all parameters: the positional ones, then keyword-only ones
  PyObject* names[kMaxParameters];
  PyObject* defaults[kMaxParameters];  // null: required
  PyObject* dict;                      // __name__, __doc__, __wrapped__, ...
};

DropIn* as_drop_in(PyObject* object) { return reinterpret_cast<DropIn*>(object); }

// The position of keyword `name`, or -1. Keywords in calls are interned
// strs, so comparing pointers first finds them without comparing text.
Py_ssize_t parameter_index(const DropIn* self, PyObject* name) {
  for (Py_ssize_t i = 0; i < self->count; ++i) {
    if (self->names[i] == name) {
      return i;
    }
  }
  if (PyUnicode_Check(name)) {
    for (Py_ssize_t i = 0; i < self->count; ++i) {
      if (PyUnicode_Compare(self->names[i], name) == 0) {
        return i;
      }
    }
  }
  return -1;
}

// Fills `bound` with every parameter's value (borrowed), as Python would bind
// the call; false when the call is not that plain.
bool bind(const DropIn* self, PyObject* const* args, Py_ssize_t given, PyObject* kwnames,
          PyObject** bound) {
  if (given > self->positional) {
    return false;
  }
  for (Py_ssize_t i = 0; i < self->count; ++i) {
    bound[i] = i < given ? args[i] : nullptr;
  }
  Py_ssize_t keywords = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t k = 0; k < keywords; ++k) {
    Py_ssize_t index = parameter_index(self, PyTuple_GET_ITEM(kwnames, k));
    if (index < 0 || bound[index] != nullptr) {
      return false;
    }
    bound[index] = args[given + k];
  }
  for (Py_ssize_t i = 0; i < self->count; ++i) {
    if (bound[i] == nullptr) {
      if (self->defaults[i] == nullptr) {
        return false;
      }
      bound[i] = self->defaults[i];
    }
  }
  return true;
}

PyObject* call(PyObject* object, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  DropIn* self = as_drop_in(object);
  PyObject* bound[kMaxParameters];
  if (bind(self, args, PyVectorcall_NARGS(nargsf), kwnames, bound)) {
    PyObject* answer = self->walker(nullptr, bound, self->count);
    if (answer != Py_None) {
      return answer;  // the result, or null with the walker's exception set
    }
    Py_DECREF(answer);
  }
  return PyObject_Vectorcall(self->function, args, nargsf, kwnames);
}

// `getattr(object, name)` as a new reference, or null with an exception set.
PyObject* attribute(PyObject* object, const char* name) {
  return PyObject_GetAttrString(object, name);
}

Py_ssize_t size_attribute(PyObject* object, const char* name) {
  PyObject* value = attribute(object, name);
  if (value == nullptr) {
    return -1;
  }
  Py_ssize_t size = PyLong_AsSsize_t(value);
  Py_DECREF(value);
  return size;
}

// Reads the parameters of `function` (a Python function) into `self`.
bool read_parameters(DropIn* self, PyObject* function) {
  PyObject* code = attribute(function, "__code__");
  if (code == nullptr) {
    return false;
  }
  Py_ssize_t positional = size_attribute(code, "co_argcount");
  Py_ssize_t keyword_only = size_attribute(code, "co_kwonlyargcount");
  Py_ssize_t flags = size_attribute(code, "co_flags");
  PyObject* names = attribute(code, "co_varnames");
  Py_DECREF(code);
  if (positional < 0 || keyword_only < 0 || flags < 0 || names == nullptr) {
    Py_XDECREF(names);
    return false;
  }
  bool has_varargs = (flags & CO_VARARGS) != 0;
  if (positional + keyword_only > kMaxParameters || (flags & CO_VARKEYWORDS) != 0 ||
      !PyTuple_Check(names)) {
    Py_DECREF(names);
    PyErr_SetString(PyExc_TypeError,
                    "DropIn supports functions of at most 8 parameters and no **kwargs");
    return false;
  }
  self->positional = positional;
  self->count = positional + keyword_only;
  for (Py_ssize_t i = 0; i < self->count; ++i) {
    // co_varnames: positional parameters, then *args, then keyword-only ones.
    Py_ssize_t slot = i < positional || !has_varargs ? i : i + 1;
    self->names[i] = Py_NewRef(PyTuple_GET_ITEM(names, slot));
  }
  Py_DECREF(names);

  PyObject* positional_defaults = attribute(function, "__defaults__");
  PyObject* keyword_defaults = attribute(function, "__kwdefaults__");
  bool read = positional_defaults != nullptr && keyword_defaults != nullptr;
  if (read && positional_defaults != Py_None) {
    Py_ssize_t first = positional - PyTuple_GET_SIZE(positional_defaults);
    for (Py_ssize_t i = first; i < positional; ++i) {
      self->defaults[i] = Py_NewRef(PyTuple_GET_ITEM(positional_defaults, i - first));
    }
  }
  if (read && keyword_defaults != Py_None) {
    for (Py_ssize_t i = positional; i < self->count; ++i) {
      PyObject* value = PyDict_GetItemWithError(keyword_defaults, self->names[i]);
      if (value == nullptr && PyErr_Occurred()) {
        read = false;
        break;
      }
      self->defaults[i] = Py_XNewRef(value);
    }
  }
  Py_XDECREF(positional_defaults);
  Py_XDECREF(keyword_defaults);
  return read;
}

int clear(PyObject* object) {
  DropIn* self = as_drop_in(object);
  Py_CLEAR(self->walker_object);
  Py_CLEAR(self->function);
  for (Py_ssize_t i = 0; i < kMaxParameters; ++i) {
    Py_CLEAR(self->names[i]);
    Py_CLEAR(self->defaults[i]);
  }
  Py_CLEAR(self->dict);
  return 0;
}

int traverse(PyObject* object, visitproc visit, void* arg) {
  DropIn* self = as_drop_in(object);
  Py_VISIT(Py_TYPE(object));  // instances of heap types hold their type
  Py_VISIT(self->walker_object);
  Py_VISIT(self->function);
  for (Py_ssize_t i = 0; i < kMaxParameters; ++i) {
    Py_VISIT(self->defaults[i]);
  }
  Py_VISIT(self->dict);
  return 0;
}

void dealloc(PyObject* object) {
  PyObject_GC_UnTrack(object);
  clear(object);
  PyTypeObject* type = Py_TYPE(object);
  type->tp_free(object);
  Py_DECREF(type);  // instances of heap types hold their type
}

PyObject* create(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  PyObject* walker = nullptr;
  PyObject* function = nullptr;
  static const char* keywords[] = {"walker", "function", nullptr};
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:DropIn", const_cast<char**>(keywords), &walker,
                                   &function)) {
    return nullptr;
  }
  if (!PyCFunction_Check(walker) || PyCFunction_GET_FLAGS(walker) != METH_FASTCALL) {
    PyErr_SetString(PyExc_TypeError, "DropIn: walker must be one of torchwalk._C's walkers");
    return nullptr;
  }
  PyObject* object = type->tp_alloc(type, 0);
  if (object == nullptr) {
    return nullptr;
  }
  DropIn* self = as_drop_in(object);
  self->vectorcall = call;
  self->walker =
      reinterpret_cast<Walker>(reinterpret_cast<void (*)()>(PyCFunction_GET_FUNCTION(walker)));
  self->walker_object = Py_NewRef(walker);
  self->function = Py_NewRef(function);
  if (!read_parameters(self, function)) {
    Py_DECREF(object);
    return nullptr;
  }
  return object;
}

// Put on a class, a drop-in binds to the instance as a function does.
PyObject* bind_to(PyObject* self, PyObject* instance, PyObject*) {
  if (instance == nullptr || instance == Py_None) {
    return Py_NewRef(self);
  }
  return PyMethod_New(self, instance);
}

PyObject* represent(PyObject* self) {
  return PyUnicode_FromFormat("<torchwalk drop-in %R>", as_drop_in(self)->function);
}

// Pickled by name, as functions are.
PyObject* reduce(PyObject* self, PyObject*) { return attribute(self, "__qualname__"); }

PyMethodDef methods[] = {
    {"__reduce__", reduce, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(DropIn, vectorcall), READONLY, nullptr},
    {"__dictoffset__", T_PYSSIZET, offsetof(DropIn, dict), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyGetSetDef getsets[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(create)},
    {Py_tp_dealloc, reinterpret_cast<void*>(dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(bind_to)},
    {Py_tp_repr, reinterpret_cast<void*>(represent)},
    {Py_tp_methods, methods},
    {Py_tp_members, members},
    {Py_tp_getset, getsets},
    {Py_tp_doc, const_cast<char*>("A Python function with a C++ walker in front of it.")},
    {0, nullptr},
};

PyType_Spec spec = {
    "torchwalk._C.DropIn",
    sizeof(DropIn),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    slots,
};

}  // namespace

void add_drop_in_type(PyObject* module) {
  PyObject* type = PyType_FromSpec(&spec);
  if (type == nullptr || PyModule_AddObject(module, "DropIn", type) != 0) {
    Py_XDECREF(type);
    throw std::runtime_error("could not create torchwalk._C.DropIn");
  }
}

}  // namespace torchwalk

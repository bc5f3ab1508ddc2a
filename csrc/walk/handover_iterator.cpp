#include "walk/handover_iterator.h"

#include <stdexcept>

namespace torchwalk {
namespace {

struct HandoverIterator {
  PyObject_VAR_HEAD Py_ssize_t next;  // the first item not yet handed over
  PyObject* items[1];                 // ob_size of them; null once handed over
};

HandoverIterator* as_iterator(PyObject* object) {
  return reinterpret_cast<HandoverIterator*>(object);
}

PyObject* next_item(PyObject* object) {
  HandoverIterator* self = as_iterator(object);
  if (self->next >= Py_SIZE(self)) {
    return nullptr;  // exhausted: StopIteration without an exception object
  }
  PyObject* item = self->items[self->next];
  self->items[self->next++] = nullptr;
  return item;
}

int traverse(PyObject* object, visitproc visit, void* arg) {
  HandoverIterator* self = as_iterator(object);
  Py_VISIT(Py_TYPE(object));  // instances of heap types hold their type
  for (Py_ssize_t i = self->next; i < Py_SIZE(self); ++i) {
    Py_VISIT(self->items[i]);
  }
  return 0;
}

int clear(PyObject* object) {
  HandoverIterator* self = as_iterator(object);
  for (Py_ssize_t i = self->next; i < Py_SIZE(self); ++i) {
    Py_CLEAR(self->items[i]);
  }
  self->next = Py_SIZE(self);
  return 0;
}

void dealloc(PyObject* object) {
  PyObject_GC_UnTrack(object);
  clear(object);
  PyTypeObject* type = Py_TYPE(object);
  PyObject_GC_Del(object);
  Py_DECREF(type);
}

// What list() and friends ask to size their result in one allocation.
PyObject* length_hint(PyObject* object, PyObject*) {
  HandoverIterator* self = as_iterator(object);
  return PyLong_FromSsize_t(Py_SIZE(self) - self->next);
}

PyMethodDef methods[] = {
    {"__length_hint__", length_hint, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot slots[] = {
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(next_item)},
    {Py_tp_traverse, reinterpret_cast<void*>(traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(clear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(dealloc)},
    {Py_tp_methods, methods},
    {Py_tp_doc, const_cast<char*>("An iterator over the results of a torchwalk walk.")},
    {0, nullptr},
};

PyType_Spec spec = {
    "torchwalk._C.HandoverIterator",
    offsetof(HandoverIterator, items),
    sizeof(PyObject*),
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    slots,
};

// Made on first use (with the GIL held) and kept for the extension's lifetime.
PyTypeObject* iterator_type() {
  static PyTypeObject* type = [] {
    PyObject* made = PyType_FromSpec(&spec);
    if (made == nullptr) {
      throw std::runtime_error("could not create torchwalk._C.HandoverIterator");
    }
    return reinterpret_cast<PyTypeObject*>(made);
  }();
  return type;
}

}  // namespace

PyObject* new_handover_iterator(Py_ssize_t size) {
  auto* self = PyObject_GC_NewVar(HandoverIterator, iterator_type(), size);
  if (self == nullptr) {
    return nullptr;
  }
  self->next = 0;
  for (Py_ssize_t i = 0; i < size; ++i) {
    self->items[i] = nullptr;
  }
  PyObject_GC_Track(self);
  return reinterpret_cast<PyObject*>(self);
}

void set_handover_item(PyObject* iterator, Py_ssize_t index, PyObject* item) {
  as_iterator(iterator)->items[index] = item;
}

Py_ssize_t handover_size(PyObject* iterator) { return Py_SIZE(iterator); }

PyObject* handover_item(PyObject* iterator, Py_ssize_t index) {
  return as_iterator(iterator)->items[index];
}

}  // namespace torchwalk

#include "storage/leaf_record.h"

#include <string>

#include "bridge/python_tensors.h"
#include "common/python_error.h"

namespace torchwalk {
namespace {

bool is_instance(PyObject* object, py::handle cls) {
  if (cls.is_none()) {
    return false;
  }
  int found = PyObject_IsInstance(object, cls.ptr());
  if (found < 0) {
    raise_python_error();
  }
  return found != 0;
}

Py_hash_t checked_hash(PyObject* object) {
  Py_hash_t hash = PyObject_Hash(object);
  if (hash == -1) {
    raise_python_error();
  }
  return hash;
}

}  // namespace

void LeafRecord::describe(PyObject* described, const TensorClasses& classes) {
  tensor = py::reinterpret_borrow<py::object>(described);
  local = tensor;
  if (!is_tensor(described)) {
    describe_entry(described);
    return;
  }
  is_lazy = is_instance(described, classes.lazy);
  facts = tensor_facts(described);
  dtype = py::reinterpret_steal<py::object>(checked(dtype_name(facts.dtype_code, described)));
  local_numel = facts.numel;
  local_nbytes = facts.nbytes;
  if (is_instance(described, classes.sharded)) {
    // Ties are about memory, which a DTensor keeps in its local shard.
    local = py::reinterpret_steal<py::object>(
        checked(PyObject_GetAttrString(described, "_local_tensor")));
    if (!is_tensor(local.ptr())) {
      raise_error(PyExc_TypeError, "a DTensor's _local_tensor is not a tensor");
    }
    TensorFacts local_facts = tensor_facts(local.ptr());
    facts.storage_key = local_facts.storage_key;
    facts.span_begin = local_facts.span_begin;
    facts.span_end = local_facts.span_end;
    facts.view_hash = local_facts.view_hash;
    local_numel = local_facts.numel;
    local_nbytes = local_facts.nbytes;
  }
}

void LeafRecord::describe_entry(PyObject* entry) {
  auto fail = [&] {
    raise_error(PyExc_TypeError,
                std::string("a checkpoint entry is a tuple (dtype: str, shape: tuple, nbytes: int, "
                            "...), got ") +
                    Py_TYPE(entry)->tp_name);
  };
  if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 3) {
    fail();
  }
  PyObject* entry_dtype = PyTuple_GET_ITEM(entry, 0);
  PyObject* shape = PyTuple_GET_ITEM(entry, 1);
  PyObject* nbytes = PyTuple_GET_ITEM(entry, 2);
  if (!PyUnicode_Check(entry_dtype) || !PyTuple_Check(shape) || !PyLong_Check(nbytes)) {
    fail();
  }
  dtype = py::reinterpret_borrow<py::object>(entry_dtype);
  uint64_t shape_hash = hash_combine(static_cast<uint64_t>(PyTuple_GET_SIZE(shape)),
                                     static_cast<uint64_t>(checked_hash(entry_dtype)));
  int64_t numel = 1;
  for (Py_ssize_t dim = 0; dim < PyTuple_GET_SIZE(shape); ++dim) {
    int64_t size = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, dim));
    if (size == -1 && PyErr_Occurred()) {
      raise_python_error();
    }
    numel *= size;
    shape_hash = hash_combine(shape_hash, static_cast<uint64_t>(size));
  }
  facts.numel = numel;
  facts.nbytes = PyLong_AsLongLong(nbytes);
  if (facts.nbytes == -1 && PyErr_Occurred()) {
    raise_python_error();
  }
  facts.itemsize = numel > 0 && facts.nbytes % numel == 0 ? facts.nbytes / numel : 0;
  facts.shape_hash = shape_hash;
  facts.view_hash = shape_hash;
  facts.device_code = -1;  // no storage (key 0): an entry ties with nothing
  local_numel = numel;
  local_nbytes = facts.nbytes;
}

}  // namespace torchwalk

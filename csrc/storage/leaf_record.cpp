#include "storage/leaf_record.h"

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

}  // namespace

void LeafRecord::describe(PyObject* described, const TensorClasses& classes) {
  tensor = py::reinterpret_borrow<py::object>(described);
  is_lazy = is_instance(described, classes.lazy);
  facts = tensor_facts(described);
  local = tensor;
  local_numel = facts.numel;
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
  }
}

}  // namespace torchwalk

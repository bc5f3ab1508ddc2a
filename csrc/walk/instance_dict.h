#pragma once

// Reading a module's instance dict the way attribute access would: whether an
// instance attribute shadows one of nn.Module's methods, and the entries the
// walkers need (`_parameters`, `_modules`, the state-dict hooks, ...).
//
// Every walk asks the same few questions of every module's dict, each a hash
// lookup, and on a small model they are a large share of a call. So the
// answers are remembered per dict
// while the dict's version tag is unchanged: CPython (PEP 509, up to 3.13)
// gives a dict a new tag, never given to any other dict, on every change, so
// an unchanged tag means the very same entries. A model walked again is then
// read from the memo; a changed module is read afresh. A large walk reads
// without it (`remember` false, see walk_size.h): its dicts would not fit.

#include <pybind11/pybind11.h>

#include "walk/class_check.h"
#include "walk/hand_back.h"

namespace torchwalk {

namespace py = pybind11;

// The instance-dict entries the walkers read.
enum class InstanceEntry : unsigned {
  parameters,  // `_parameters`
  buffers,     // `_buffers`
  modules,     // `_modules`
  state_dict_pre_hooks,
  state_dict_hooks,
  version,                 // `_version`
  non_persistent_buffers,  // `_non_persistent_buffers_set`
  count,
};

// The object's instance dict (created if CPython stored the attributes
// inline), or a hand-back when it has none.
py::object instance_dict(PyObject* object);

// True when the instance dict holds none of `mask`'s method names (an
// instance attribute shadows the class's method); false also when a lookup
// raised (PyTorch then meets the error itself).
bool instance_keeps(PyObject* dict, AttributeMask mask, bool remember = true);

// `dict[name]`, owned (a later lookup can run a key's __eq__, which can change
// the dict), or null when absent; a hand-back when a lookup raised.
py::object instance_entry(PyObject* dict, InstanceEntry entry, bool remember = true);

// The entry when it is an exact dict (what `module._modules` returns for a
// class that keeps kReadsDicts); a hand-back otherwise.
py::object exact_dict_entry(PyObject* dict, InstanceEntry entry, bool remember = true);

// The module's class and instance keep `mask`; the instance dict is returned.
py::object checked_instance_dict(PyObject* module, AttributeMask mask, bool remember = true);

}  // namespace torchwalk

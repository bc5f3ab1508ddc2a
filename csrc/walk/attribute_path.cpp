#include "walk/attribute_path.h"

#include "walk/hand_back.h"
#include "walk/instance_dict.h"

namespace torchwalk {
namespace {

constexpr AttributeMask kResolvesLikeModule = kReadsDicts | mask_of(kGetattr);

// `getattr(module, name)` for a class that keeps nn.Module's attribute
// lookup: an instance attribute first, then Module.__getattr__'s search of
// `_parameters`, `_buffers` and `_modules`, in that order.
py::object resolve_attribute(PyObject* module, PyObject* name) {
  ClassFacts facts = facts_of(Py_TYPE(module));
  if (!facts.is_module || !facts.keeps(kResolvesLikeModule)) {
    hand_back();
  }
  // A class attribute (a property, a method, a parametrization) could win.
  if (_PyType_Lookup(Py_TYPE(module), name) != nullptr) {
    hand_back();
  }
  py::object dict = instance_dict(module);
  if (PyObject* attribute = PyDict_GetItemWithError(dict.ptr(), name)) {
    return py::reinterpret_borrow<py::object>(attribute);
  }
  for (ModuleAttribute members : {kParametersDict, kBuffersDict, kModulesDict}) {
    PyObject* found = PyDict_GetItemWithError(dict.ptr(), attribute_name(members));
    if (found == nullptr) {
      continue;
    }
    // Owned: the lookup below can run a key's __eq__, which could drop it.
    auto dict_of_members = py::reinterpret_borrow<py::object>(found);
    if (!PyDict_CheckExact(found)) {
      hand_back();
    }
    if (PyObject* member = PyDict_GetItemWithError(dict_of_members.ptr(), name)) {
      return py::reinterpret_borrow<py::object>(member);
    }
  }
  PyErr_Clear();
  hand_back();  // PyTorch raises AttributeError, in its own words
}

// get_submodule's walk down `target`, from a root already checked.
py::object walk_down(py::handle root, PyObject* target) {
  if (!PyUnicode_CheckExact(target)) {
    hand_back();
  }
  if (PyUnicode_GET_LENGTH(target) == 0) {
    return py::reinterpret_borrow<py::object>(root);
  }
  py::object dot = py::str(".");
  auto atoms = py::reinterpret_steal<py::list>(PyUnicode_Split(target, dot.ptr(), -1));
  if (!atoms) {
    throw py::error_already_set();
  }
  py::object module = py::reinterpret_borrow<py::object>(root);
  for (py::handle atom : atoms) {
    module = resolve_attribute(module.ptr(), atom.ptr());
    if (!facts_of(Py_TYPE(module.ptr())).is_module) {
      hand_back();
    }
  }
  return module;
}

// `target.rpartition(".")`: the module path and the attribute name.
std::pair<py::object, py::object> split_last(PyObject* target) {
  if (!PyUnicode_CheckExact(target)) {
    hand_back();
  }
  py::object dot = py::str(".");
  auto parts = py::reinterpret_steal<py::tuple>(PyUnicode_RPartition(target, dot.ptr()));
  if (!parts) {
    throw py::error_already_set();
  }
  return {parts[0], parts[2]};
}

}  // namespace

std::optional<py::object> find_submodule(py::handle root, py::handle target,
                                         AttributeMask root_keeps) {
  try {
    checked_instance_dict(root.ptr(), root_keeps);
    return walk_down(root, target.ptr());
  } catch (const HandBack&) {
    return std::nullopt;
  }
}

std::optional<py::object> find_parameter(py::handle root, py::handle target,
                                         AttributeMask root_keeps) {
  try {
    checked_instance_dict(root.ptr(), root_keeps | mask_of(kGetSubmodule));
    auto [module_path, parameter_name] = split_last(target.ptr());
    py::object module = walk_down(root, module_path.ptr());
    py::object parameter = resolve_attribute(module.ptr(), parameter_name.ptr());
    int is_parameter = PyObject_IsInstance(parameter.ptr(), parameter_class());
    if (is_parameter < 0) {
      throw py::error_already_set();
    }
    if (is_parameter == 0) {
      hand_back();
    }
    return parameter;
  } catch (const HandBack&) {
    return std::nullopt;
  }
}

std::optional<py::object> find_buffer(py::handle root, py::handle target,
                                      AttributeMask root_keeps) {
  try {
    checked_instance_dict(root.ptr(), root_keeps | mask_of(kGetSubmodule));
    auto [module_path, buffer_name] = split_last(target.ptr());
    py::object module = walk_down(root, module_path.ptr());
    py::object buffer = resolve_attribute(module.ptr(), buffer_name.ptr());
    // PyTorch then asks `buffer_name in module._buffers`.
    py::object dict = instance_dict(module.ptr());
    py::object buffers = exact_dict_entry(dict.ptr(), InstanceEntry::buffers);
    if (PyDict_GetItemWithError(buffers.ptr(), buffer_name.ptr()) == nullptr) {
      PyErr_Clear();
      hand_back();
    }
    return buffer;
  } catch (const HandBack&) {
    return std::nullopt;
  }
}

}  // namespace torchwalk

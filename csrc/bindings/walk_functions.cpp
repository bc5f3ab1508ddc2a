// The drop-ins' walkers, as torchwalk._C functions.
//
// Each returns an iterator over a list, or None when PyTorch itself must
// answer (the drop-in, a DropIn of python/torchwalk/dropin.py, then runs its
// Python body, which calls the module's own method). Each one names the
// root's methods that the PyTorch call it replaces goes through.
//
// They run at every optimizer step and gradient clip, often on small models,
// where a pybind11 dispatch would cost more than the walk itself: so they are
// plain METH_FASTCALL functions.

#include <pybind11/pybind11.h>

#include <exception>
#include <optional>

#include "bindings/bindings.h"
#include "walk/attribute_path.h"
#include "walk/class_check.h"
#include "walk/module_walk.h"
#include "walk/state_dict.h"

namespace torchwalk {

namespace py = pybind11;

namespace {

PyObject* empty_str() {
  static PyObject* empty = PyUnicode_InternFromString("");
  return empty;
}

// Python truthiness, as PyTorch's `if recurse:` reads it.
bool truth(py::handle flag) {
  int value = PyObject_IsTrue(flag.ptr());
  if (value < 0) {
    throw py::error_already_set();
  }
  return value != 0;
}

std::optional<py::object> members(py::handle module, Leaves leaves, py::handle prefix,
                                  py::handle recurse, py::handle remove_duplicate, bool with_names,
                                  AttributeMask root_keeps) {
  return walk_members(module, MemberQuery{leaves, prefix, truth(recurse), truth(remove_duplicate),
                                          with_names, root_keeps | mask_of(kNamedMembers)});
}

using Arguments = PyObject* const*;

// Runs `walk` on the positional arguments and turns its answer into a Python
// object: the result, None for a hand-back, or nullptr with the exception set.
template <Py_ssize_t Arity, typename Walk>
PyObject* fast_call(const char* function, Arguments args, Py_ssize_t nargs, Walk walk) {
  if (nargs != Arity) {
    PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments but %zd were given",
                 function, Arity, nargs);
    return nullptr;
  }
  // A first argument that is no module: Python answers, as `module.method()`
  // would (an AttributeError, for most objects).
  if (!facts_of(Py_TYPE(args[0])).is_module) {
    Py_RETURN_NONE;
  }
  try {
    auto found = walk(args);
    if (!found) {
      Py_RETURN_NONE;
    }
    return found->release().ptr();
  } catch (py::error_already_set& error) {
    error.restore();
  } catch (py::builtin_exception& error) {
    error.set_error();
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_RuntimeError, error.what());
  }
  return nullptr;
}

PyObject* named_parameters(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("named_parameters", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::parameters, a[1], a[2], a[3], true, mask_of(kNamedParameters));
  });
}

PyObject* parameters(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("parameters", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::parameters, empty_str(), a[1], Py_True, false,
                   mask_of(kParameters, kNamedParameters));
  });
}

PyObject* named_buffers(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("named_buffers", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::buffers, a[1], a[2], a[3], true, mask_of(kNamedBuffers));
  });
}

PyObject* buffers(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("buffers", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::buffers, empty_str(), a[1], Py_True, false,
                   mask_of(kBuffers, kNamedBuffers));
  });
}

PyObject* named_modules(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("named_modules", args, nargs, [](Arguments a) {
    return walk_modules(a[0], ModuleQuery{a[1], a[2], truth(a[3]), true, mask_of(kNamedModules)});
  });
}

PyObject* modules(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("modules", args, nargs, [](Arguments a) {
    return walk_modules(a[0], ModuleQuery{Py_None, empty_str(), truth(a[1]), false,
                                          mask_of(kModules, kNamedModules)});
  });
}

PyObject* named_children(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<1>("named_children", args, nargs, [](Arguments a) {
    return walk_children(a[0], true, mask_of(kNamedChildren));
  });
}

PyObject* children(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<1>("children", args, nargs, [](Arguments a) {
    return walk_children(a[0], false, mask_of(kChildren, kNamedChildren));
  });
}

PyObject* get_submodule(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("get_submodule", args, nargs, [](Arguments a) {
    return find_submodule(a[0], a[1], mask_of(kGetSubmodule));
  });
}

PyObject* get_parameter(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("get_parameter", args, nargs, [](Arguments a) {
    return find_parameter(a[0], a[1], mask_of(kGetParameter));
  });
}

PyObject* get_buffer(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("get_buffer", args, nargs,
                      [](Arguments a) { return find_buffer(a[0], a[1], mask_of(kGetBuffer)); });
}

PyObject* state_dict(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("state_dict", args, nargs, [](Arguments a) {
    return walk_state_dict(a[0], StateDictQuery{a[1], a[2], a[3], mask_of(kStateDict)});
  });
}

#define TORCHWALK_FAST_FUNCTION(name, doc) \
  {#name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(name)), METH_FASTCALL, doc}

PyMethodDef fast_functions[] = {
    TORCHWALK_FAST_FUNCTION(named_parameters,
                            "(module, prefix, recurse, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(parameters, "(module, recurse) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(named_buffers,
                            "(module, prefix, recurse, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(buffers, "(module, recurse) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(named_modules,
                            "(module, memo, prefix, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(modules, "(module, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(named_children, "(module) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(children, "(module) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(get_submodule, "(module, target) -> Module | None"),
    TORCHWALK_FAST_FUNCTION(get_parameter, "(module, target) -> Parameter | None"),
    TORCHWALK_FAST_FUNCTION(get_buffer, "(module, target) -> Tensor | None"),
    TORCHWALK_FAST_FUNCTION(state_dict,
                            "(module, destination, prefix, keep_vars) -> destination | None"),
    {nullptr, nullptr, 0, nullptr},
};

#undef TORCHWALK_FAST_FUNCTION

}  // namespace

void add_walk_functions(py::module_& m) {
  if (PyModule_AddFunctions(m.ptr(), fast_functions) != 0) {
    throw py::error_already_set();
  }
}

}  // namespace torchwalk

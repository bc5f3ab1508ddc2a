// The Python module torchwalk._C: every binding in one place.
//
// The drop-in walkers return a list, or None when PyTorch itself must answer
// (python/torchwalk/dropin.py then calls the module's own method). Each one
// names the root's methods that the PyTorch call it replaces goes through.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "walk/attribute_path.h"
#include "walk/class_check.h"
#include "walk/module_walk.h"

namespace py = pybind11;
using namespace torchwalk;

namespace {

void require_module(py::handle object, const char* function) {
  if (!facts_of(Py_TYPE(object.ptr())).is_module) {
    throw py::type_error(std::string("torchwalk.") + function +
                         "() expects an nn.Module as its first argument, got " +
                         Py_TYPE(object.ptr())->tp_name);
  }
}

// Python truthiness, as PyTorch's `if recurse:` reads it.
bool truth(py::handle flag) {
  int value = PyObject_IsTrue(flag.ptr());
  if (value < 0) {
    throw py::error_already_set();
  }
  return value != 0;
}

std::optional<py::list> members(const char* function, py::handle module, Leaves leaves,
                                py::handle prefix, py::handle recurse, py::handle remove_duplicate,
                                bool with_names, AttributeMask root_keeps) {
  require_module(module, function);
  return walk_members(module, MemberQuery{leaves, prefix, truth(recurse), truth(remove_duplicate),
                                          with_names, root_keeps | mask_of(kNamedMembers)});
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchwalk's C++ core: module-tree walks, storage keys and statistics";
  m.attr("TORCH_VERSION") = TORCHWALK_TORCH_VERSION;

  m.def(
      "configure",
      [](py::handle module_class, py::handle parameter_class, py::handle tensor_hash,
         py::handle identity_torch_functions) {
        configure_classes(module_class.ptr(), parameter_class.ptr(), tensor_hash.ptr(),
                          identity_torch_functions.ptr());
      },
      "Tells the walker nn.Module, nn.Parameter and how tensors hash (called once, at import).");

  m.def("named_parameters", [](py::handle module, py::handle prefix, py::handle recurse,
                               py::handle remove_duplicate) {
    return members("named_parameters", module, Leaves::parameters, prefix, recurse,
                   remove_duplicate, true, mask_of(kNamedParameters));
  });
  m.def("parameters", [](py::handle module, py::handle recurse) {
    return members("parameters", module, Leaves::parameters, py::str(""), recurse, py::bool_(true),
                   false, mask_of(kParameters, kNamedParameters));
  });
  m.def("named_buffers", [](py::handle module, py::handle prefix, py::handle recurse,
                            py::handle remove_duplicate) {
    return members("named_buffers", module, Leaves::buffers, prefix, recurse, remove_duplicate,
                   true, mask_of(kNamedBuffers));
  });
  m.def("buffers", [](py::handle module, py::handle recurse) {
    return members("buffers", module, Leaves::buffers, py::str(""), recurse, py::bool_(true), false,
                   mask_of(kBuffers, kNamedBuffers));
  });

  m.def("named_modules", [](py::handle module, py::handle memo, py::handle prefix,
                            py::handle remove_duplicate) {
    require_module(module, "named_modules");
    return walk_modules(module, ModuleQuery{memo, prefix, truth(remove_duplicate), true,
                                            mask_of(kNamedModules)});
  });
  m.def("modules", [](py::handle module, py::handle remove_duplicate) {
    require_module(module, "modules");
    return walk_modules(module, ModuleQuery{py::none(), py::str(""), truth(remove_duplicate), false,
                                            mask_of(kModules, kNamedModules)});
  });

  m.def("named_children", [](py::handle module) {
    require_module(module, "named_children");
    return walk_children(module, true, mask_of(kNamedChildren));
  });
  m.def("children", [](py::handle module) {
    require_module(module, "children");
    return walk_children(module, false, mask_of(kChildren, kNamedChildren));
  });

  m.def("get_submodule", [](py::handle module, py::handle target) {
    require_module(module, "get_submodule");
    return find_submodule(module, target, mask_of(kGetSubmodule));
  });
  m.def("get_parameter", [](py::handle module, py::handle target) {
    require_module(module, "get_parameter");
    return find_parameter(module, target, mask_of(kGetParameter));
  });
  m.def("get_buffer", [](py::handle module, py::handle target) {
    require_module(module, "get_buffer");
    return find_buffer(module, target, mask_of(kGetBuffer));
  });
}

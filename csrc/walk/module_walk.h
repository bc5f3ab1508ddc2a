#pragma once

// The C++ versions of nn.Module's traversal generators.
//
// Each function returns, as an iterator (handover_iterator.h), exactly what
// the PyTorch generator of the same name yields (`(name, object)` tuples, or
// the bare objects when `with_names` is false), or std::nullopt when some
// class on the way overrides part of PyTorch's traversal (see
// class_check.h): the caller then lets PyTorch answer.

#include <pybind11/pybind11.h>

#include <optional>

#include "walk/class_check.h"

namespace torchwalk {

namespace py = pybind11;

enum class Leaves { parameters, buffers };

struct MemberQuery {
  Leaves leaves;
  py::handle prefix;
  bool recurse;
  bool remove_duplicate;
  bool with_names;
  AttributeMask root_keeps;  // the root's methods that PyTorch's call goes through
};

struct ModuleQuery {
  py::handle memo;  // None, or the set PyTorch's named_modules reads and fills
  py::handle prefix;
  bool remove_duplicate;
  bool with_names;
  AttributeMask root_keeps;
};

// `named_parameters` / `parameters` / `named_buffers` / `buffers`.
std::optional<py::object> walk_members(py::handle root, const MemberQuery& query);

// `named_modules` / `modules`. Raises RecursionError for a module cycle
// walked with remove_duplicate=False (PyTorch recurses until the stack ends).
std::optional<py::object> walk_modules(py::handle root, const ModuleQuery& query);

// `named_children` / `children`.
std::optional<py::object> walk_children(py::handle root, bool with_names, AttributeMask root_keeps);

}  // namespace torchwalk

#pragma once

// The C++ version of nn.Module.state_dict.
//
// PyTorch's state_dict is a recursion of method calls: each module records its
// version in `destination._metadata`, runs its pre-hooks, saves its own
// parameters, persistent buffers and extra state (`_save_to_state_dict`),
// calls `state_dict` on each child, then runs its post-hooks. This walk does
// the same in one explicit-stack pass for every module that keeps PyTorch's
// methods and has no hooks; any other module gets its own `state_dict` method
// called at its place in the walk, so that it and everything below it behave
// exactly as in PyTorch.

#include <pybind11/pybind11.h>

#include <optional>

#include "walk/class_check.h"

namespace torchwalk {

namespace py = pybind11;

struct StateDictQuery {
  py::handle destination;  // None: a new OrderedDict with an OrderedDict `_metadata`
  py::handle prefix;
  py::handle keep_vars;
  AttributeMask root_keeps;  // the root's methods that the replaced call goes through
};

// The destination, filled as `root.state_dict(...)` fills it, or std::nullopt
// when the root itself must be handed to PyTorch (nothing has been written
// then). Raises RecursionError for a module cycle (PyTorch recurses until the
// stack ends).
std::optional<py::object> walk_state_dict(py::handle root, const StateDictQuery& query);

}  // namespace torchwalk

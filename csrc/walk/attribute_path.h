#pragma once

// The C++ versions of nn.Module.get_submodule / get_parameter / get_buffer.
// Each returns what PyTorch returns, or std::nullopt when PyTorch must answer:
// an overriding class, an attribute that a class attribute or property could
// shadow, and every error (so that the exception and its message are
// PyTorch's own).

#include <pybind11/pybind11.h>

#include <optional>

#include "walk/class_check.h"

namespace torchwalk {

namespace py = pybind11;

std::optional<py::object> find_submodule(py::handle root, py::handle target,
                                         AttributeMask root_keeps);
std::optional<py::object> find_parameter(py::handle root, py::handle target,
                                         AttributeMask root_keeps);
std::optional<py::object> find_buffer(py::handle root, py::handle target, AttributeMask root_keeps);

}  // namespace torchwalk

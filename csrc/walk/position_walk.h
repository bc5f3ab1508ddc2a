#pragma once

// The one walk over module positions that every C++ walk is built on: the
// traversal drop-ins (module_walk.cpp), state_dict (state_dict.cpp) and the
// snapshot's records (tree/tree_records.cpp).
//
// It visits modules in the order of PyTorch's recursion (a module, then each
// child in `_modules` order, depth first) with an explicit stack, so a
// 100,000-deep chain cannot overflow the C stack. It owns what every walk
// needs: the frames, the `None` children PyTorch skips, the dotted name
// (dotted_name.h), the "dictionary changed size during iteration" error
// PyTorch's loop raises, the cycle guard, and prefetching on large trees.
// What happens at each module is the visitor's: its checks, what it
// collects, and whether to walk the module's children at all.

#include <pybind11/pybind11.h>

#include <memory_resource>
#include <optional>
#include <utility>
#include <vector>

#include "common/pointer_set.h"
#include "common/prefetch.h"
#include "common/python_error.h"
#include "walk/dotted_name.h"
#include "walk/walk_size.h"

namespace torchwalk {

namespace py = pybind11;

// Where the walk is when it calls the visitor.
struct Position {
  PyObject* key;  // the module's key in its parent's `_modules`; null at the root
  size_t depth;   // the root's is 0
  bool remember;  // the walk is still small: instance dicts are read through the memo
};

struct WalkOptions {
  // The dotted name to keep, or null for a walk that names nothing.
  DottedName* name = nullptr;
  // Set when every position is walked (no memo stops the walk at a module
  // seen before): meeting a module on its own path is then a cycle, which
  // raises RecursionError saying that this never ends.
  const char* cycle_walk = nullptr;
  // Where the frames live.
  std::pmr::memory_resource* memory = std::pmr::get_default_resource();
};

// Walks from `root`, calling `visitor.enter(module, position)` at each module
// position with the dotted name at that module. `enter` returns the module's
// `_modules` (an exact dict) to walk its children next, or an empty object
// to walk none. A visitor may throw to end the walk (a HandBack, or a
// Python error).
template <typename Visitor>
void walk_positions(PyObject* root, const WalkOptions& options, Visitor& visitor) {
  struct Frame {
    py::object module;
    py::object children;  // its `_modules` dict
    Py_ssize_t cursor;    // PyDict_Next position in `children`
    Py_ssize_t size;      // the dict's size when the frame began
    size_t name_length;   // the dotted name's length at this module
  };
  std::pmr::vector<Frame> stack(options.memory);
  stack.reserve(16);
  std::optional<PointerSet> ancestors;  // the modules on the current path
  if (options.cycle_walk != nullptr) {
    ancestors.emplace();
  }
  DottedName* name = options.name;
  size_t modules_entered = 0;  // modules whose children were walked

  // `module` is owned by the caller until this returns.
  auto enter = [&](PyObject* module, PyObject* key) {
    py::object children =
        visitor.enter(module, Position{key, stack.size(), modules_entered <= kLargeWalkModules});
    if (!children) {
      return;
    }
    Py_ssize_t size = PyDict_GET_SIZE(children.ptr());
    if (size == 0) {
      return;  // a leaf (most modules are): no frame needed
    }
    if (ancestors && !ancestors->insert(module)) {
      raise_cycle(module, name != nullptr ? name->text() : std::string(), options.cycle_walk);
    }
    if (++modules_entered > kLargeWalkModules) {
      prefetch_children(children.ptr());
    }
    stack.push_back(Frame{py::reinterpret_borrow<py::object>(module), std::move(children), 0, size,
                          name != nullptr ? name->length() : 0});
  };

  enter(root, nullptr);
  while (!stack.empty()) {
    Frame& top = stack.back();
    if (PyDict_GET_SIZE(top.children.ptr()) != top.size) {
      raise_error(PyExc_RuntimeError, "dictionary changed size during iteration");
    }
    PyObject* key = nullptr;
    PyObject* child = nullptr;
    if (!PyDict_Next(top.children.ptr(), &top.cursor, &key, &child)) {
      if (ancestors) {
        ancestors->erase(top.module.ptr());
      }
      stack.pop_back();
      continue;
    }
    if (child == Py_None) {
      continue;
    }
    // Owned: the visitor can run Python code (a key's __eq__ in an instance
    // dict lookup, the garbage collector) that edits the dict.
    auto owned_key = py::reinterpret_borrow<py::object>(key);
    auto owned_child = py::reinterpret_borrow<py::object>(child);
    if (modules_entered > kLargeWalkModules) {
      prefetch_next_siblings(top.children.ptr(), top.cursor);
    }
    if (name != nullptr) {
      name->truncate(top.name_length);
      name->descend(key);
    }
    enter(child, key);  // may grow the stack: `top` is not used after this
  }
}

}  // namespace torchwalk

#pragma once

// PyTorch's traversal one module at a time, with the checks that say whether
// doing it in C++ gives PyTorch's answer: what `named_modules` does at each
// module it reaches, and what `_named_members` does with that module's
// `_parameters` or `_buffers`. Every walk that stands for these methods (the
// drop-ins and the snapshot's records) takes its steps from here, so all of
// them hand back (HandBack) in exactly the same cases: an overriding class or
// instance, a dict subclass, a tensor that does not hash by identity, a name
// that is not an exact str.

#include <pybind11/pybind11.h>

#include "common/pointer_set.h"
#include "walk/class_check.h"
#include "walk/dotted_name.h"
#include "walk/hand_back.h"
#include "walk/instance_dict.h"
#include "walk/position_walk.h"

namespace torchwalk {

namespace py = pybind11;

// What every module's class keeps on the way: PyTorch calls
// `module.named_modules(memo, ...)` on it, asks `module not in memo` (a hash)
// and reads `module._modules`.
constexpr AttributeMask kEveryModuleKeeps =
    kReadsDicts | mask_of(kNamedModules) | kHashesByIdentity;

// named_modules' `memo`: the modules it never enters again.
struct ModuleMemo {
  PointerSet* seen = nullptr;     // null: no memo, every position is walked
  bool remove_duplicate = false;  // fill the memo as modules are entered (else only read it)

  // `if module not in memo: (memo.add(module) if remove_duplicate)`.
  bool admits(PyObject* module) const {
    if (seen == nullptr) {
      return true;
    }
    return remove_duplicate ? seen->insert(module) : !seen->contains(module);
  }
};

// One module as named_modules reaches it.
struct ReachedModule {
  py::object instance_dict;
  py::object children;  // `_modules`, an exact dict
};

// named_modules at one position: the class check (with `root_keeps`, the
// root's own methods that the replaced call goes through), the memo, then
// `_modules`. False when the memo skips the module.
inline bool reach_module(PyObject* module, const Position& at, AttributeMask root_keeps,
                         const ModuleMemo& memo, ReachedModule& reached) {
  AttributeMask keeps = kEveryModuleKeeps | (at.depth == 0 ? root_keeps : 0);
  reached.instance_dict = checked_instance_dict(module, keeps, at.remember);
  if (!memo.admits(module)) {
    return false;
  }
  reached.children =
      exact_dict_entry(reached.instance_dict.ptr(), InstanceEntry::modules, at.remember);
  return true;
}

// `_named_members` over one module's `_parameters` or `_buffers` (`entry`):
// calls `take(key, member)` for each member that is not None and not in
// `memo` (added there; null: no memo), both borrowed, in dict order.
template <typename Take>
void for_each_member(PyObject* instance_dict, InstanceEntry entry, bool remember, PointerSet* memo,
                     Take&& take) {
  py::object members = exact_dict_entry(instance_dict, entry, remember);
  Py_ssize_t cursor = 0;
  PyObject* key = nullptr;
  PyObject* member = nullptr;
  while (PyDict_Next(members.ptr(), &cursor, &key, &member)) {
    if (member == Py_None) {
      continue;
    }
    // `member in memo` hashes it, memo or not: only id-hashing tensors behave
    // like an address set.
    if (!facts_of(Py_TYPE(member)).keeps(kHashesByIdentity)) {
      hand_back();
    }
    if (memo != nullptr && !memo->insert(member)) {
      continue;
    }
    take(key, member);
  }
}

}  // namespace torchwalk

#pragma once

#include <Python.h>

#include <cstddef>

#include "common/address_slot.h"

namespace torchwalk {

// Walks of small and of large models are bound by different costs. A small
// model sits in the CPU caches, and the fixed work per module (instance-dict
// lookups) dominates; a large one is bound by cache misses chasing module ->
// instance dict -> `_modules` -> child pointers. So a walk counts as large
// once it has entered this many modules with children: from there on it
// prefetches (prefetch.h, which only costs on small trees) and stops reading
// through the instance-dict memo (instance_dict.h, which it could only
// overwrite).
inline constexpr size_t kLargeWalkModules = 512;

// How large a walk was: the modules it entered and the items it yielded.
struct WalkSize {
  size_t modules = 0;
  size_t items = 0;
};

// A walk that sizes its identity sets and its result list for what it will
// find never grows them: growing a set of 60,000 modules by doubling inserts
// every entry about twice more. So each walk remembers its size by root, and
// the next walk from that root starts at that size. Only a hint: a model
// created where an earlier one was costs some capacity, nothing else.
class WalkSizeHints {
 public:
  WalkSize last(PyObject* root) const {
    const Entry& entry = entries_[slot(root)];
    return entry.root == root ? entry.size : WalkSize{};
  }

  void remember(PyObject* root, WalkSize size) { entries_[slot(root)] = Entry{root, size}; }

 private:
  struct Entry {
    PyObject* root = nullptr;  // an identity, never dereferenced
    WalkSize size;
  };
  static constexpr unsigned kBits = 4;

  static size_t slot(PyObject* root) { return address_slot(root, kBits); }

  Entry entries_[size_t{1} << kBits];
};

}  // namespace torchwalk

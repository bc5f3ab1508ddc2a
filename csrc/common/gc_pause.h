#pragma once

#include <Python.h>

namespace torchwalk {

// Pauses Python's cyclic garbage collector for its lifetime. Nothing else can
// run meanwhile (the GIL is held), and collection timing is not semantics.
class GarbageCollectorPause {
 public:
  GarbageCollectorPause() : was_enabled_(PyGC_Disable() != 0) {}
  ~GarbageCollectorPause() {
    if (was_enabled_) {
      PyGC_Enable();
    }
  }
  GarbageCollectorPause(const GarbageCollectorPause&) = delete;
  GarbageCollectorPause& operator=(const GarbageCollectorPause&) = delete;

 private:
  bool was_enabled_;
};

}  // namespace torchwalk

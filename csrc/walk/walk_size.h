#pragma once

#include <cstddef>

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

}  // namespace torchwalk

#pragma once

// What the snapshot keeps of each tensor, read once during the walk by
// tensor_facts() (bridge/python_tensors.h).

#include <cstdint>

namespace torchwalk {

struct TensorFacts {
  // The storage implementation's address: two tensors share memory exactly
  // when they have the same key (data pointers cannot tell: every meta
  // tensor's is null). 0 for a tensor without storage.
  uintptr_t storage_key = 0;
  // The bytes of the storage the view can touch, [span_begin, span_end):
  // from its lowest to its highest addressable byte; empty for no elements.
  int64_t span_begin = 0;
  int64_t span_end = 0;
  int64_t numel = 0;
  int64_t itemsize = 0;  // bytes per element; 0 for dtypes of fewer than 8 bits
  int64_t nbytes = 0;
  // Hashes of (sizes, dtype) and of (storage offset, sizes, strides, dtype).
  uint64_t shape_hash = 0;
  uint64_t view_hash = 0;
  int8_t dtype_code = 0;    // the c10::ScalarType
  int16_t device_code = 0;  // device type and index, see device_name; -1: in a file
  bool requires_grad = false;
};

// Folds `value` into `hash`: boost::hash_combine's recipe, widened to 64
// bits (the shape hashes here and the records' structural hashes use it).
inline uint64_t hash_combine(uint64_t hash, uint64_t value) {
  return hash ^ (value + 0x9E3779B97F4A7C15ull + (hash << 6) + (hash >> 2));
}

}  // namespace torchwalk

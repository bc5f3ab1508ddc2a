#pragma once

// What the snapshot keeps of each tensor, read once during the walk. A plain
// header: only csrc/bindings/tensor_unpack.cpp includes torch's (slow to
// parse) tensor headers to fill it in.

#include <Python.h>

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
  int64_t itemsize = 0;
  // Hashes of (sizes, dtype) and of (storage offset, sizes, strides, dtype).
  uint64_t shape_hash = 0;
  uint64_t view_hash = 0;
  int8_t dtype_code = 0;    // the c10::ScalarType
  int16_t device_code = 0;  // device type and index, see device_name
  bool requires_grad = false;

  int64_t nbytes() const { return numel * itemsize; }
};

// Folds `value` into `hash`: boost::hash_combine's recipe, widened to 64
// bits (the shape hashes here and the records' structural hashes use it).
inline uint64_t hash_combine(uint64_t hash, uint64_t value) {
  return hash ^ (value + 0x9E3779B97F4A7C15ull + (hash << 6) + (hash >> 2));
}

// True for torch.Tensor and its subclasses.
bool is_tensor(PyObject* object);

// The facts of a tensor (`is_tensor(tensor)` must hold).
TensorFacts tensor_facts(PyObject* tensor);

// True when two tensors are the same view: storage, offset, sizes, strides
// and dtype all equal.
bool same_view(PyObject* tensor, PyObject* other);

// str(tensor.dtype) for a dtype_code seen in `tensor`, e.g. "torch.float32".
PyObject* dtype_name(int8_t dtype_code, PyObject* tensor);

// str(tensor.device) for a device_code, e.g. "cpu", "cuda:1", "meta".
PyObject* device_name(int16_t device_code);

}  // namespace torchwalk

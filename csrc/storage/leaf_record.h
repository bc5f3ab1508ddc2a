#pragma once

// One tensor as a walk found it at one name: what the snapshot keeps of it,
// and what the ties and the totals read.

#include <pybind11/pybind11.h>

#include <cstdint>

#include "bridge/tensor_facts.h"

namespace torchwalk {

namespace py = pybind11;

// The classes of tensors the records treat apart.
struct TensorClasses {
  py::handle lazy;     // torch.nn.parameter.UninitializedTensorMixin
  py::handle sharded;  // torch.distributed.tensor.DTensor, or None when not imported
};

// A leaf is a tensor, or a tensor described by a checkpoint file's header:
// an entry, a tuple (dtype, shape, nbytes, ...) whose dtype is torch's name
// for it where torch has one ("torch.bfloat16"), else the file's ("F4").
struct LeafRecord {
  py::object name;    // its name in its module
  py::object tensor;  // the tensor, or the entry
  py::object dtype;   // str(tensor.dtype), or the entry's dtype
  // The memory this rank holds: a DTensor's local shard, else the tensor itself.
  py::object local;
  int64_t module = 0;  // the position of the module holding it
  int64_t first = 0;   // first leaf of the same kind holding the same tensor object
  bool is_buffer = false;
  bool is_lazy = false;
  // Of the global tensor, except storage_key, span and view_hash, which are
  // of `local` (where the bytes are).
  TensorFacts facts;
  int64_t local_numel = 0;
  int64_t local_nbytes = 0;

  // Fills everything but the position fields from a tensor or an entry;
  // raises TypeError, naming `name`, for anything else.
  void describe(PyObject* tensor, const TensorClasses& classes);

 private:
  void describe_entry(PyObject* entry);
};

}  // namespace torchwalk

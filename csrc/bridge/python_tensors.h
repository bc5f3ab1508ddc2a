#pragma once

// The one bridge from Python tensor objects to ATen. Only python_tensors.cpp
// includes torch's tensor headers (torch/csrc/autograd/python_variable.h
// alone takes about 9 s to parse); everything else sees plain C++ types
// through this header.

#include <Python.h>

#include <cstdint>
#include <vector>

#include "bridge/tensor_facts.h"
#include "compare/pair_stats.h"
#include "stats/tensor_stats.h"

namespace torchwalk {

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

// A new reference to what `tensor.detach()` returns, or nullptr with the
// Python exception set. A torch.Tensor or `parameter_class` (nn.Parameter)
// instance is detached in C++
// (the same dispatcher call the Python method makes); anything else (a
// subclass with __torch_function__, an active torch function mode, an
// instance attribute named `detach`) gets the Python method itself.
PyObject* detached(PyObject* tensor, PyObject* parameter_class);

// The tensors with values to read among `items` (a list of tensors and
// Nones), or with `grads` among their `.grad`s: a new reference to a tuple
// (list of those tensors, bytes with 1 for each item that gave one, else 0).
// None, a missing `.grad` and meta tensors give none. Exact torch.Tensor and
// `parameter_class` items are read in C++; any other class through Python's
// attribute access (a subclass may define `.grad` itself). Null with the
// Python exception set on failure.
PyObject* readable_tensors(PyObject* items, bool grads, PyObject* parameter_class);

// tensor_stats() of a Python list of tensors, read with the GIL released.
// Raises std::invalid_argument for tensors the statistics cannot read.
std::vector<TensorStats> stats_of_tensor_list(PyObject* tensors, StatsPath path,
                                              const MagnitudeRequest& request);

// pair_stats() of two Python lists of tensors, read with the GIL released.
// Raises std::invalid_argument for pairs that cannot be compared.
std::vector<PairMoments> pair_stats_of_tensor_lists(PyObject* a, PyObject* b, Tolerance tolerance,
                                                    StatsPath path);

}  // namespace torchwalk

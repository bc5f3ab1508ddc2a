#pragma once

// What csrc/bindings/tensor_unpack.cpp does with torch's tensors beyond their
// facts (storage/tensor_facts.h): hand lists of them to the C++ kernels.

#include <Python.h>

#include <vector>

#include "stats/tensor_stats.h"

namespace torchwalk {

// tensor_stats() of a Python list of tensors, read with the GIL released.
// Raises std::invalid_argument for tensors the statistics cannot read.
std::vector<TensorStats> stats_of_tensor_list(PyObject* tensors, StatsPath path);

}  // namespace torchwalk

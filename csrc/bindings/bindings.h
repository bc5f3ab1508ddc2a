#pragma once

// The parts of the Python module torchwalk._C, each bound by its own file;
// module.cpp puts them together.

#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>

#include "stats/tensor_stats.h"

namespace torchwalk {

// walk_functions.cpp: the drop-ins' walkers (named_parameters, state_dict, ...).
void add_walk_functions(pybind11::module_& m);

// records.cpp: TreeRecords and the calls that build them.
void bind_records(pybind11::module_& m);

// records.cpp: the class of lazy tensors (UninitializedTensorMixin), set at import.
void set_lazy_tensor_class(pybind11::handle lazy_class);

// stats.cpp: StatsTable and the statistics calls.
void bind_stats(pybind11::module_& m);

// stats.cpp: the path a `path` argument names ("kernels", "aten", ...);
// ValueError for a name this machine has no path for.
StatsPath stats_path(const std::string& name);

// stats.cpp: the row a Python int names in a table of `rows` rows (IndexError
// for one outside it), for StatsTable and PairTable.
size_t row_position(pybind11::handle index, size_t rows);

// compare.cpp: PairTable and pair_stats.
void bind_compare(pybind11::module_& m);

// checkpoints.cpp: reading checkpoint files' headers.
void bind_checkpoints(pybind11::module_& m);

}  // namespace torchwalk

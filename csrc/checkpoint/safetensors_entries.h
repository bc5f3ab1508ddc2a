#pragma once

// The tensors a .safetensors header describes, checked as strictly as the
// safetensors library checks them when it loads the file. The header's JSON
// is parsed by Python's json module; this does the per-tensor work, which in
// Python would cost several microseconds a tensor (a DeepSeek-V3 checkpoint
// has 45,000).

#include <pybind11/pybind11.h>

#include <cstdint>

namespace torchwalk {

namespace py = pybind11;

struct SafetensorsFile {
  py::handle path;        // str, put in each entry
  int64_t data_start;     // where the data begins in the file
  int64_t data_size;      // the bytes after the header
  py::handle dtypes;      // dict: the format's dtype name -> (bits per element, the name counted)
  py::handle entry_type;  // a tuple subclass (a NamedTuple): (dtype, shape, nbytes, path, offset)
};

// (name, entry) for each tensor of `header` (the parsed JSON object, without
// "__metadata__"), sorted by name. Raises ValueError saying what is wrong:
// an unknown dtype, a bad shape or offsets, a byte count the shape and dtype
// disagree with, a gap or an overlap between tensors, data past the end of
// the file (truncated) or after the last tensor.
py::list safetensors_entries(py::handle header, const SafetensorsFile& file);

}  // namespace torchwalk

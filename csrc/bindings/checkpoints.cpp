// Reading checkpoint files' headers, as torchwalk._C calls.

#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "checkpoint/safetensors_entries.h"

namespace torchwalk {

namespace py = pybind11;

void bind_checkpoints(py::module_& m) {
  m.def(
      "safetensors_entries",
      [](py::dict header, py::str path, int64_t data_start, int64_t data_size, py::dict dtypes,
         py::handle entry_type) {
        if (!PyType_Check(entry_type.ptr()) ||
            !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(entry_type.ptr()), &PyTuple_Type)) {
          throw py::type_error("entry_type must be a tuple subclass");
        }
        return safetensors_entries(
            header, SafetensorsFile{path, data_start, data_size, dtypes, entry_type});
      },
      py::arg("header"), py::arg("path"), py::arg("data_start"), py::arg("data_size"),
      py::arg("dtypes"), py::arg("entry_type"),
      "The (name, entry) pairs of a parsed .safetensors header (without __metadata__), sorted "
      "by name and checked; ValueError says what is wrong.");
}

}  // namespace torchwalk

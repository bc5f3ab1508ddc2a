// The Python module torchwalk._C: its parts (bindings.h, drop_in.h) put
// together, and the set-up Python calls once at import.

#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "bindings/drop_in.h"
#include "walk/class_check.h"

namespace py = pybind11;
using namespace torchwalk;

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchwalk's C++ core: module-tree walks, storage keys and statistics";
  m.attr("TORCH_VERSION") = TORCHWALK_TORCH_VERSION;

  m.def(
      "configure",
      [](py::handle module_class, py::handle parameter_class, py::handle tensor_hash,
         py::handle identity_torch_functions, py::handle lazy_class) {
        configure_classes(module_class.ptr(), parameter_class.ptr(), tensor_hash.ptr(),
                          identity_torch_functions.ptr());
        set_lazy_tensor_class(lazy_class);
      },
      "Tells the walkers nn.Module, nn.Parameter, how tensors hash and which tensors are lazy "
      "(called once, at import).");
  m.def(
      "set_replacements", [](py::dict replacements) { set_replacements(replacements.ptr()); },
      "Tells the walkers which functions torchwalk.install() put on nn.Module, by attribute "
      "name (an empty dict: none).");
  add_walk_functions(m);
  add_drop_in_type(m.ptr());
  bind_records(m);
  bind_stats(m);
  bind_compare(m);
  bind_checkpoints(m);
}

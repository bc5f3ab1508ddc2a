// TreeRecords, the walk-once snapshot's records, as a torchwalk._C class,
// and the calls that build them.

#include <pybind11/pybind11.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "bindings/bindings.h"
#include "storage/tie_groups.h"
#include "tree/tree_records.h"

namespace torchwalk {

namespace py = pybind11;

namespace {

// torch.nn.parameter.UninitializedTensorMixin: lazy tensors are its instances.
// Owned for the extension's lifetime (never released, as in class_check.cpp).
PyObject* lazy_tensor_class = nullptr;

const char* kind_name(TieKind kind) {
  switch (kind) {
    case TieKind::shared:
      return "shared";
    case TieKind::alias:
      return "alias";
    case TieKind::overlap:
      return "overlap";
    case TieKind::packed:
      return "packed";
  }
  return "packed";
}

}  // namespace

void set_lazy_tensor_class(py::handle lazy_class) {
  lazy_tensor_class = Py_NewRef(lazy_class.ptr());
}

void bind_records(py::module_& m) {
  using Records = TreeRecords;
  py::class_<Records>(m, "TreeRecords",
                      "Flat records of one walk: module positions and the tensors at each.")
      .def("module_count", &Records::module_count)
      .def("module_path", &Records::module_path)
      .def("module_name", [](const Records& r, int64_t p) { return r.module(p).name; })
      .def("module_type",
           [](const Records& r, int64_t p) -> std::string {
             const ModuleRecord& record = r.module(p);
             return record.module.is_none() ? "" : Py_TYPE(record.module.ptr())->tp_name;
           })
      .def("module_object", [](const Records& r, int64_t p) { return r.module(p).module; })
      .def("module_parent", [](const Records& r, int64_t p) { return r.module(p).parent; })
      .def("module_depth", [](const Records& r, int64_t p) { return r.module(p).depth; })
      .def("module_children",
           [](const Records& r, int64_t p) {
             py::list children;
             for (int64_t child : r.module_children(p)) {
               children.append(child);
             }
             return children;
           })
      .def("module_leaves",
           [](const Records& r, int64_t p) {
             const ModuleRecord& record = r.module(p);
             py::list leaves;
             for (int64_t leaf = record.first_leaf; leaf < record.first_leaf + record.leaf_count;
                  ++leaf) {
               leaves.append(leaf);
             }
             return leaves;
           })
      .def("module_first", [](const Records& r, int64_t p) { return r.module(p).first; })
      .def("module_shape_hash", [](const Records& r, int64_t p) { return r.module(p).shape_hash; })
      .def("module_totals",
           [](const Records& r, int64_t p) {
             const SubtreeFigures& f = r.module(p).figures;
             return py::make_tuple(f.params, f.trainable, f.frozen, f.bytes, f.buffers,
                                   f.buffer_bytes, f.uninitialized);
           })
      .def("leaf_count", &Records::leaf_count)
      .def("unique_leaf_count", &Records::unique_leaf_count)
      .def("leaf_path", &Records::leaf_path)
      .def("leaf_name", [](const Records& r, int64_t i) { return r.leaf(i).name; })
      .def("leaf_module", [](const Records& r, int64_t i) { return r.leaf(i).module; })
      .def("leaf_is_buffer", [](const Records& r, int64_t i) { return r.leaf(i).is_buffer; })
      .def("leaf_tensor", [](const Records& r, int64_t i) { return r.leaf(i).tensor; })
      .def("leaf_first", [](const Records& r, int64_t i) { return r.leaf(i).first; })
      .def("leaf_is_lazy", [](const Records& r, int64_t i) { return r.leaf(i).is_lazy; })
      .def("leaf_tied_to", &Records::leaf_tied_to)
      .def("named_parameters", &Records::named_parameters)
      .def("named_buffers", &Records::named_buffers)
      .def("named_modules", &Records::named_modules)
      .def("tie_groups",
           [](Records& r) {
             py::list groups;
             for (const TieGroup& group : r.tie_groups()) {
               py::list names;
               for (int64_t leaf : group.leaves) {
                 names.append(r.leaf_path(leaf));
               }
               groups.append(py::make_tuple(names, kind_name(group.kind), group.nbytes,
                                            group.overcount_nbytes));
             }
             return groups;
           })
      .def("totals", &Records::totals);

  m.def(
      "walk_module",
      [](py::handle module, bool buffers, py::handle sharded_class) -> py::object {
        TensorClasses classes{lazy_tensor_class, sharded_class};
        std::optional<Records> records = Records::from_module(module, buffers, classes);
        if (!records) {
          return py::none();
        }
        return py::cast(std::move(*records));
      },
      py::arg("module"), py::arg("buffers"), py::arg("sharded_class") = py::none(),
      "Walks an nn.Module once into TreeRecords, or None where PyTorch's own methods must "
      "answer.");
  m.def(
      "walk_named",
      [](py::list modules, py::list parameters, py::list buffers, py::handle sharded_class) {
        TensorClasses classes{lazy_tensor_class, sharded_class};
        return std::make_unique<Records>(
            Records::from_named(modules, parameters, buffers, classes));
      },
      py::arg("modules"), py::arg("parameters"), py::arg("buffers"),
      py::arg("sharded_class") = py::none(),
      "Builds TreeRecords from lists of (dotted name, module or tensor) pairs.");
}

}  // namespace torchwalk
